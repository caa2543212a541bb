"""LightMem README's full configuration through ``LightMemory.from_config``, with local models on cpu."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lightmem_core import LightMemory
from lightmem_core.sensory.buffer import SENSORY
from lightmem_core.sensory.compressors.llmlingua2 import LLMLingua2Compressor
from lightmem_core.sensory.segmenters.llmlingua2 import LLMLingua2Segmenter
from producers.scripted_llm import ScriptedLLMServer
from tests.sensory.conftest import conversation


@pytest.fixture
def llm() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer() as server:
        yield server


def readme_config(tmp_path: Path, lingua_path: str, minilm_path: str, base_url: str) -> dict[str, Any]:
    """LightMem README's ``config_dict``, field for field: local paths, device cpu, the scripted LLM."""
    return {
        "pre_compress": True,
        "pre_compressor": {
            "model_name": "llmlingua-2",
            "configs": {"llmlingua_config": {"model_name": lingua_path, "device_map": "cpu", "use_llmlingua2": True}},
        },
        "topic_segment": True,
        "precomp_topic_shared": True,
        "topic_segmenter": {"model_name": "llmlingua-2"},
        "messages_use": "user_only",
        "metadata_generate": True,
        "text_summary": True,
        "memory_manager": {"model_name": "openai", "configs": {
            "model": "gpt-4o-mini", "api_key": "sk-test", "max_tokens": 16000, "openai_base_url": base_url}},
        "extract_threshold": 0.1,
        "index_strategy": "embedding",
        "text_embedder": {"model_name": "huggingface", "configs": {
            "model": minilm_path, "embedding_dims": 384, "model_kwargs": {"device": "cpu"}}},
        "retrieve_strategy": "embedding",
        "embedding_retriever": {"model_name": "qdrant", "configs": {
            "collection_name": "my_long_term_chat", "embedding_model_dims": 384, "path": str(tmp_path / "my_long_term_chat")}},
        "update": "offline",
        "logging": {"level": "DEBUG", "file_enabled": True, "log_dir": str(tmp_path / "logs")},
        "history_db_path": str(tmp_path / "history.db"),
    }


def test_readme_configuration_runs_end_to_end(tmp_path: Path, lingua_path: str, minilm_path: str,
                                              llm: ScriptedLLMServer) -> None:
    memory = LightMemory.from_config(readme_config(tmp_path, lingua_path, minilm_path, llm.base_url))
    try:
        compressor, segmenter = memory.components.compressor, memory.components.segmenter
        assert isinstance(compressor, LLMLingua2Compressor) and isinstance(segmenter, LLMLingua2Segmenter)
        assert segmenter.scorer is compressor.scorer  # one model for both
        session: dict[str, Any] = {"timestamp": "2025-01-10", "turns": [[
            {"role": "user", "content": "My favorite ice cream flavor is pistachio, and my dog's name is Rex."},
            {"role": "assistant", "content": "Got it. Pistachio is a great choice."}]]}
        for turn in session["turns"]:
            for msg in turn:
                msg["time_stamp"] = session["timestamp"]
            memory.add_memory(messages=turn, force_segment=True, force_extract=True)
        # A whole two-topic session in one call: compressed and segmented in one shared forward pass.
        batch = [{"role": role, "content": text, "time_stamp": "2025-01-11T09:00:00Z"}
                 for user, assistant in conversation() for role, text in (("user", user), ("assistant", assistant))]
        result = memory.add_memory(batch, force_segment=True, force_extract=True, session_id="cars-and-cooking")
        assert result["added_messages"] == 40 and result["entries_stored"] > 0
        assert segmenter.model_passes == 0  # the segmenter read the compressor's attention
        assert memory.history.buffer_items("default", SENSORY) == []
        stats = memory.get_token_statistics()
        assert 0 < stats["tokens_after_compression"] < stats["tokens_original"]
        stored = memory.history.messages("default")
        assert any(m["compressed"] and m["compressed"] != m["content"] for m in stored)  # original kept beside it
        hits = memory.retrieve("What is the name of my dog?", limit=5)
        assert hits and llm.requests
    finally:
        memory.close()


@pytest.mark.parametrize("which", ["pre_compress", "topic_segment"])
def test_each_stage_works_alone(tmp_path: Path, minilm_path: str, which: str, memory_config: Any) -> None:
    config = memory_config(
        text_embedder={"model_name": "huggingface", "configs": {"model": minilm_path, "model_kwargs": {"device": "cpu"}}})
    if which == "pre_compress":
        config.update(pre_compress=True, pre_compressor={"model_name": "entropy_compress", "configs": {
            "entropy_config": {"model_name": "wordfreq"}, "compress_config": {"rate": 0.5}}})
    else:
        config.update(topic_segment=True, topic_segmenter={"model_name": "embedding"})
    memory = LightMemory.from_config(config)
    try:
        turns = conversation()[:4]
        batch = [{"role": r, "content": t, "time_stamp": "2025-01-10T10:00:00Z"} for u, a in turns for r, t in (("user", u), ("assistant", a))]
        memory.add_memory(batch, force_segment=True, force_extract=True)
        entries = memory.get_all("default")
        assert len(entries) == 4  # one per user message (verbatim extraction)
        stats = memory.get_token_statistics()
        if which == "pre_compress":
            assert stats["tokens_after_compression"] < stats["tokens_original"]
            assert sum(len(e.memory) for e in entries) < sum(len(u) for u, _ in turns)  # entries hold compressed text
        else:
            assert stats["tokens_after_compression"] == stats["tokens_original"]
    finally:
        memory.close()


def test_messages_use_decides_what_is_compressed(make_memory: Any) -> None:
    memory = make_memory(messages_use="assistant_only", pre_compress=True, pre_compressor={
        "model_name": "entropy_compress", "configs": {"compress_config": {"rate": 0.5}}})
    user, assistant = conversation()[0]
    memory.add_memory([{"role": "user", "content": user, "time_stamp": "2025-01-10T10:00:00Z"},
                       {"role": "assistant", "content": assistant, "time_stamp": "2025-01-10T10:00:00Z"}])
    stored = {m["role"]: m for m in memory.history.messages("default")}
    assert stored["user"]["compressed"] is None
    assert stored["assistant"]["compressed"] and len(stored["assistant"]["compressed"]) < len(assistant)
