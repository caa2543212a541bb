"""LightMem README's full configuration through ``LightMemory.from_config``, with local models on cpu."""

from __future__ import annotations

import json
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


README_CONFIG = Path(__file__).with_name("lightmem_readme_config.json")


def readme_config(lingua_path: str, minilm_path: str, base_url: str) -> dict[str, Any]:
    """LightMem README's ``config_dict`` as the README writes it (``lightmem_readme_config.json``), with only
    the model paths, the device and the LLM endpoint changed: the README's ``'xxx'`` backend becomes
    ``openai`` at the scripted server. Its relative paths stay: the test runs in a temporary folder."""
    config: dict[str, Any] = json.loads(README_CONFIG.read_text(encoding="utf-8"))
    del config["_source"]
    lingua = config["pre_compressor"]["configs"]["llmlingua_config"]
    lingua.update(model_name=lingua_path, device_map="cpu")
    embedder = config["text_embedder"]["configs"]
    embedder["model"], embedder["model_kwargs"]["device"] = minilm_path, "cpu"
    manager = config["memory_manager"]
    manager["model_name"] = "openai"
    llm = manager["configs"]
    del llm["xxx_base_url"]
    llm.update(model="gpt-4o-mini", api_key="sk-test", openai_base_url=base_url)
    return config


def test_readme_configuration_runs_end_to_end(tmp_path: Path, lingua_path: str, minilm_path: str,
                                              llm: ScriptedLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the README's ./my_long_term_chat, ./my_chat_summaries, ./logs land here
    memory = LightMemory.from_config(readme_config(lingua_path, minilm_path, llm.base_url))
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
        # The README's next steps: the offline update, the summaries, retrieval.
        assert memory.construct_update_queue_all_entries() > 0
        memory.offline_update_all_entries(score_threshold=0.8)
        summaries = memory.summarize()
        topics = {e.topic_id for e in memory.get_all("default")}
        assert summaries["total_summaries"] == len(topics) >= 2  # one per topic, written by the extraction calls
        assert all(s["summary"].startswith("Talk about") for s in summaries["summaries"])
        assert (tmp_path / "my_long_term_chat").is_dir() and (tmp_path / "my_chat_summaries").is_dir()
        assert (tmp_path / "logs" / "run" / "lightmem.log").is_file()
        hits = memory.retrieve("What is the name of my dog?", limit=5)
        assert isinstance(hits, list) and hits
        assert any("Rex" in m.content for m in hits[0].sources)  # through the first topic's summary
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
    memory.wait()  # the ingest thread compresses in the background
    stored = {m["role"]: m for m in memory.history.messages("default")}
    assert stored["user"]["compressed"] is None
    assert stored["assistant"]["compressed"] and len(stored["assistant"]["compressed"]) < len(assistant)
