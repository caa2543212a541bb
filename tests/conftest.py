"""Fixtures shared by every test folder: the real MiniLM embedder (loaded once) and config builders."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.postgres import PostgresServer

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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster for the session (``tests.support.postgres``)."""
    reason = PostgresServer.unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    server = PostgresServer.start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty PostgreSQL database."""
    return postgres_server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def history_backend(request: pytest.FixtureRequest) -> str | None:
    """Run a test once per history backend: ``None`` for SQLite at ``history_db_path``, else the URL of a
    new PostgreSQL database. ``memory_config`` (and so ``make_memory``) puts it in ``history_db_url``
    for every test that uses this fixture."""
    return None if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def history_store(history_backend: str | None, tmp_path: Path) -> Iterator[Any]:
    """A ``HistoryStore`` on each backend in turn, closed after the test."""
    from lightmem_core.config import BaseMemoryConfigs
    from lightmem_core.factory import build_history

    history = build_history(BaseMemoryConfigs(history_db_path=str(tmp_path / "history.db"), history_db_url=history_backend))
    yield history
    history.close()


@pytest.fixture
def memory_config(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., dict[str, Any]]:
    """LightMem README's configuration dictionary with local paths, verbatim extraction, cpu; the history on
    PostgreSQL when the test uses ``history_backend`` and runs for that backend."""
    history_url = request.getfixturevalue("history_backend") if "history_backend" in request.fixturenames else None

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
        if history_url is not None:
            config["history_db_url"] = history_url
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
