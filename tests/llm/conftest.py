"""Fixtures for the LLM tests: a scripted OpenAI-compatible server and memories that talk to it."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lightmem_core import LightMemory, parse_config
from lightmem_core.embedders.hashing import HashingEmbedder
from lightmem_core.factory import build_components
from producers.scripted_llm import ScriptedLLMServer


@pytest.fixture
def llm_server() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer() as server:
        yield server


def llm_config(tmp_path: Path, base_url: str, **overrides: Any) -> dict[str, Any]:
    """LightMem's configuration dictionary with an OpenAI backend at ``base_url`` and small timeouts."""
    llm = {"model": "gpt-4o-mini", "api_key": "sk-test", "openai_base_url": base_url, "timeout_s": 1.0,
           "max_retries": 3, "short_term_capacity_tokens": 1024}
    llm.update(overrides.pop("llm", {}))
    config: dict[str, Any] = {
        "messages_use": "user_only",
        "metadata_generate": False,
        "text_summary": False,
        "memory_manager": {"model_name": "openai", "configs": llm},
        "extract_threshold": 0.5,
        "index_strategy": "embedding",
        "retrieve_strategy": "embedding",
        "embedding_retriever": {"model_name": "qdrant", "configs": {"collection_name": "llm_tests",
                                                                     "path": str(tmp_path / "qdrant")}},
        "history_db_path": str(tmp_path / "history.db"),
        "update": "offline",
    }
    config.update(overrides)
    return config


@pytest.fixture
def make_llm_memory(tmp_path: Path, llm_server: ScriptedLLMServer,
                    request: pytest.FixtureRequest) -> Iterator[Callable[..., LightMemory]]:
    """Build ``LightMemory`` objects wired to the scripted server (hashing embedder: fast, word overlap);
    the history on PostgreSQL when the test uses ``history_backend`` and runs for that backend."""
    made: list[LightMemory] = []
    url = request.getfixturevalue("history_backend") if "history_backend" in request.fixturenames else None

    def make(**overrides: Any) -> LightMemory:
        if url is not None:
            overrides.setdefault("history_db_url", url)
        cfg = parse_config(llm_config(tmp_path, llm_server.base_url, **overrides))
        memory = LightMemory(cfg, build_components(cfg, embedder=HashingEmbedder(64)))
        made.append(memory)
        return memory

    yield make
    for memory in made:
        memory.close()
    # close() leaves the OpenAI client's pooled connections (several, with calls in flight at once) to the
    # garbage collector, which may finalise a socket before its pool closes it: a ResourceWarning at some
    # later test. Collect them here, where that is known and harmless.
    made.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
