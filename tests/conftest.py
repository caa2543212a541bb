"""Fixtures shared by every test folder: the real MiniLM embedder (loaded once) and config builders."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA_DIR = Path(os.environ.get("LIGHTMEM_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder of benchmark data written by others (LoCoMo, LongMemEval sample)."""
    if not (DATA_DIR / "locomo10.json").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"benchmark data missing at {DATA_DIR}")
        pytest.skip(f"benchmark data missing at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session")
def minilm_embedder() -> Any:
    """The bundled all-MiniLM-L6-v2 on CPU, shared by the whole session."""
    from lightmem_core.embedders.huggingface import HuggingFaceEmbedder

    return HuggingFaceEmbedder(device="cpu")


@pytest.fixture
def memory_config(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """LightMem README's configuration dictionary with local paths, verbatim extraction, cpu."""

    def make(**overrides: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "pre_compress": False,
            "topic_segment": False,
            "precomp_topic_shared": False,
            "messages_use": "user_only",
            "metadata_generate": False,
            "text_summary": False,
            "memory_manager": {"model_name": "verbatim"},
            "extract_threshold": 0.1,
            "index_strategy": "hybrid",
            "text_embedder": {
                "model_name": "huggingface",
                "configs": {"embedding_dims": 384, "model_kwargs": {"device": "cpu"}},
            },
            "retrieve_strategy": "embedding",
            "embedding_retriever": {
                "model_name": "qdrant",
                "configs": {"collection_name": "my_long_term_chat", "embedding_model_dims": 384, "path": str(tmp_path / "qdrant")},
            },
            "history_db_path": str(tmp_path / "history.db"),
            "update": "offline",
        }
        config.update(overrides)
        return config

    return make


@pytest.fixture
def make_memory(memory_config: Callable[..., dict[str, Any]], minilm_embedder: Any) -> Callable[..., Any]:
    """Build a ``LightMemory`` from a config dict, reusing the session's embedder."""
    from lightmem_core import LightMemory, parse_config
    from lightmem_core.factory import build_components

    made: list[Any] = []

    def make(**overrides: Any) -> Any:
        cfg = parse_config(memory_config(**overrides))
        components = build_components(cfg, embedder=minilm_embedder)
        memory = LightMemory(cfg, components)
        made.append(memory)
        return memory

    yield make
    for memory in made:
        memory.close()
