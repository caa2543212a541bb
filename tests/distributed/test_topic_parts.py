"""With a topic segmenter on, the compress stage cuts the same topic segments as ``LightMemory``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightmem_core import LightMemory, parse_config
from lightmem_core.factory import build_components
from lightmem_core.ingest import normalize_messages
from workers import flow
from workers.app import build_pipeline
from workers.settings import DistributedSettings

SEGMENTER = {"topic_segment": True, "topic_segmenter": {"model_name": "embedding",
                                                        "configs": {"sensory_buffer_tokens": 64}}}


def test_compress_stage_cuts_topics_like_lightmemory(memory_config: Callable[..., dict[str, Any]], tmp_path: Path,
                                                     minilm_embedder: Any, data_dir: Path) -> None:
    from producers.datasets import load_locomo

    conversation = load_locomo(data_dir / "locomo10.json")[0]
    sessions = conversation.sessions[:3]
    keep_all = {"model_name": "verbatim", "configs": {"short_term_capacity_tokens": 10**6}}  # never extract
    cfg = parse_config(memory_config(**SEGMENTER, memory_manager=keep_all))
    memory = LightMemory(cfg, build_components(cfg, embedder=minilm_embedder))
    pipe = build_pipeline(DistributedSettings())
    pipe.config = cfg
    pipe.segmenter = memory.components.segmenter  # the same model; the cutting is what is compared
    try:
        for session in sessions:
            memory.add_memory(session.messages, force_segment=True, user_id="u", session_id=session.session_id)
        expected = [[m.id for m in seg.messages] for _, seg in memory._buffered_segments("u")]
        got = []
        for session in sessions:
            batch = normalize_messages(session.messages, "u", session.session_id, lambda _sid: 0)
            got += [[m.id for m in part] for part in flow.topic_parts(pipe, batch.messages)]
        assert len(expected) > len(sessions)  # the segmenter and the capacity did cut inside sessions
        assert got == expected
    finally:
        memory.close()
