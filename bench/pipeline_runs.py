"""The runs behind ``bench.pipeline``: the recipe's configuration, one process, the queues, bare compute.

Each run returns wall and CPU seconds of the ingestion and the offline update; the caller reads the
LLM accounting from the run's history database.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import process_cpu_seconds
from producers.datasets import Conversation, add_conversation

EXTRACT_PROCESSES, EXTRACT_THREADS = 4, 8
UPDATE_TOP_K, UPDATE_KEEP_TOP_N, UPDATE_THRESHOLD = 20, 10, 0.9


def build_lingua_model(folder: Path) -> str:
    """The LLMLingua-2 stand-in: the bundled MiniLM-L6 with a fresh, seeded 2-label head."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from lightmem_core.embedders.huggingface import bundled_minilm_path

    torch.manual_seed(1234)
    model = AutoModelForTokenClassification.from_pretrained(bundled_minilm_path(), num_labels=2)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(bundled_minilm_path()).save_pretrained(folder)
    return str(folder)


def recipe(workdir: Path, lingua: str, base_url: str | None) -> dict[str, Any]:
    """LightMem's LoCoMo configuration, with this run's folders; ``base_url`` None: no LLM (verbatim)."""
    manager = ({"model_name": "openai", "configs": {"model": "gpt-4o-mini", "api_key": "bench", "base_url": base_url}}
               if base_url else {"model_name": "verbatim"})
    return {
        "pre_compress": True,
        "pre_compressor": {"model_name": "llmlingua-2", "configs": {
            "llmlingua_config": {"model_name": lingua, "device_map": "auto"}, "compress_config": {"rate": 0.6}}},
        "topic_segment": True,
        "precomp_topic_shared": True,
        "topic_segmenter": {"model_name": "llmlingua-2"},
        "messages_use": "user_only",
        "metadata_generate": True,
        "text_summary": True,
        "memory_manager": manager,
        "extract_threshold": 0.5,
        "index_strategy": "embedding",
        "retrieve_strategy": "embedding",
        "text_embedder": {"model_name": "huggingface", "configs": {"model_kwargs": {"device": "auto"}}},
        "embedding_retriever": {"model_name": "qdrant", "configs": {"collection_name": "bench",
                                                                     "path": str(workdir / "qdrant")}},
        "history_db_path": str(workdir / "history.db"),
        "update": "offline",
    }


def one_process(conversations: list[Conversation], workdir: Path, lingua: str,
                base_url: str) -> tuple[dict[str, Any], list[str]]:
    """``LightMemory`` in this process; returns the figures and the stored entries' texts."""
    from lightmem_core import LightMemory

    memory = LightMemory.from_config(recipe(workdir, lingua, base_url))
    try:
        warm_up(memory.components, conversations)  # as the bare compute: a process's first passes are slower
        wall, cpu = time.perf_counter(), time.process_time()
        for conversation in conversations:
            # Each conversation is flushed at its end without waiting, as an application feeding many users
            # would: one user's last passes and calls overlap the next user's first ones.
            add_conversation(memory, conversation, force_segment=True, wait=False)
        memory.wait()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        texts = [e.memory for c in conversations for e in memory.get_all(c.user_id)]
        update = time.perf_counter()
        memory.construct_update_queue_all_entries(UPDATE_TOP_K, UPDATE_KEEP_TOP_N)
        memory.offline_update_all_entries(UPDATE_THRESHOLD)
        update = time.perf_counter() - update
    finally:
        memory.close()
    return {"wall_s": wall, "cpu_s": cpu, "entries": len(texts), "update_wall_s": update}, texts


def _cpu(cluster: Any) -> dict[str, float]:
    out = {"producer": time.process_time()}
    for name, proc in cluster.procs.items():
        kind = "extract" if name.startswith("extract") else name
        out[kind] = out.get(kind, 0.0) + process_cpu_seconds(proc.pid)
    return out


def _idle(producer: Any, settings: Any) -> bool:
    """Nothing queued and nothing held by a worker (kombu's unacked hash)."""
    import json

    r = producer.state.r
    queues = [settings.queue(role) for role in ("compress", "extract", "store", "update")]
    held = [json.loads(raw)[2] for raw in r.hvals("unacked")]
    return not any(r.llen(q) for q in queues) and not any(q in queues for q in held)


def queues(conversations: list[Conversation], workdir: Path, lingua: str, base_url: str) -> dict[str, Any]:
    """Fresh Redis and workers (1 compress, 4 extract × 8 threads, 1 store, 1 update) on the recipe."""
    from producers.sdk import MemoryProducer
    from workers.launch import LocalCluster, process_argv, wait_for_workers
    from workers.settings import DistributedSettings

    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "recipe.yaml"
    config_file.write_text(yaml.safe_dump(recipe(workdir, lingua, base_url)), encoding="utf-8")
    env = {"LIGHTMEM_CONFIG_FILE": str(config_file), "LIGHTMEM_KEY_PREFIX": "bench",
           "LIGHTMEM_UPDATE_SCORE_THRESHOLD": str(UPDATE_THRESHOLD), "LIGHTMEM_UPDATE_TOP_K": str(UPDATE_TOP_K),
           "LIGHTMEM_UPDATE_KEEP_TOP_N": str(UPDATE_KEEP_TOP_N)}
    cluster = LocalCluster(workdir, env)
    saved = dict(os.environ)
    try:
        cluster.start_redis()
        os.environ.update(cluster.env)
        settings = DistributedSettings()
        for role in ("compress", "store", "update"):
            cluster.start(role, process_argv(role, settings))
        extractors = [f"extract{i}" for i in range(EXTRACT_PROCESSES)]
        for name in extractors:
            cluster.start(name, process_argv("extract", settings, name=name, concurrency=EXTRACT_THREADS))
        producer = MemoryProducer(settings)
        wait_for_workers(producer.app, ["compress", "store", "update", *extractors], timeout_s=300)
        before, wall = _cpu(cluster), time.perf_counter()
        interleaved = [(c.user_id, c.sessions[i], c.sessions[i].session_id)
                       for i in range(max(len(c.sessions) for c in conversations)) for c in conversations
                       if i < len(c.sessions)]
        size = settings.compress_batch_sessions  # sessions per compress task, as `lightmem enqueue` sends them
        tracking = [t for start in range(0, len(interleaved), size)
                    for t in producer.enqueue_sessions(interleaved[start:start + size])]
        for conversation in conversations:
            producer.flush(conversation.user_id)
        producer.wait_indexed(tracking, timeout_s=7200, poll_s=0.05)
        wall, after = time.perf_counter() - wall, _cpu(cluster)
        parts = {k: after[k] - before.get(k, 0.0) for k in after}
        while not _idle(producer, settings):
            time.sleep(0.05)
        ingested = producer.state.stats()  # the workers count LLM calls in Redis (RedisCallRecorder)
        runs_before, update = producer.state.update_runs(), time.perf_counter()
        users = producer.update_now()
        while not (all(producer.state.update_runs().get(u, 0) > runs_before.get(u, 0) for u in users)
                   and _idle(producer, settings)):
            time.sleep(0.05)
        update = time.perf_counter() - update
        updated = producer.state.stats()
        producer.close()
    finally:
        cluster.stop()
        os.environ.clear()
        os.environ.update(saved)
    calls = {"calls": int(ingested.get("llm_calls", 0)), "prompt_tokens": int(ingested.get("llm_prompt_tokens", 0)),
             "completion_tokens": int(ingested.get("llm_completion_tokens", 0)),
             "peak": round(ingested.get("llm_latency_s", 0.0) / wall)}  # the mean in flight: no call times here
    update_calls = int(updated.get("llm_calls", 0) - ingested.get("llm_calls", 0))
    update_mean = (updated.get("llm_latency_s", 0.0) - ingested.get("llm_latency_s", 0.0)) / max(update, 1e-9)
    return {"wall_s": wall, "cpu_s": sum(parts.values()), "entries": int(ingested.get("entries_stored", 0)),
            "update_wall_s": update, "llm": calls, "update_llm": {"calls": update_calls, "peak": round(update_mean)},
            "cpu_parts": {k: round(v, 1) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}}


def warm_up(components: Any, conversations: list[Conversation], n: int = 64) -> None:
    """One small compression pass and one embedding call on the first ``n`` turns, untimed, before a
    timed run: the first passes of a process are slower (kernels and buffers set up), and the runs
    compared should not differ by which of them came first. Each turn is its own group, so no
    neighbour's attention is remembered for the segmenter."""
    texts = [str(m["content"]) for c in conversations for s in c.sessions for m in s.messages][:n]
    if components.compressor is not None:
        components.compressor.compress(texts, [f"warm-up {i}" for i in range(len(texts))])
    if components.embedder is not None:
        components.embedder.embed(texts)


def bare_compute(conversations: list[Conversation], workdir: Path, lingua: str, entry_texts: list[str]) -> dict[str, float]:
    """One batched compression pass over every turn (grouped by session, attention kept for the
    segmenter), one batched embedding of the turns and one of the entries (the compressed turns
    stand in when no ingestion ran): the model work of the whole ingestion, and nothing else."""
    from lightmem_core import parse_config
    from lightmem_core.factory import build_components

    components = build_components(parse_config(recipe(workdir, lingua, None)))
    compressor, embedder = components.compressor, components.embedder
    assert compressor is not None and embedder is not None
    texts, groups = [], []
    for c in conversations:
        for s in c.sessions:
            texts += [str(m["content"]) for m in s.messages]
            groups += [f"{c.user_id}\x1f{s.session_id}"] * len(s.messages)
    warm_up(components, conversations)
    out: dict[str, float] = {"turns": len(texts)}

    def timed(name: str, work: Any) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        result = work()
        out[f"{name}_wall_s"], out[f"{name}_cpu_s"] = time.perf_counter() - wall, time.process_time() - cpu
        return result

    compressed = timed("compress", lambda: compressor.compress(texts, groups))
    timed("turn_embed", lambda: embedder.embed(texts))
    entries = entry_texts or [r.text for r in compressed]
    out["entries"] = len(entries)
    timed("entry_embed", lambda: embedder.embed(entries))
    out["wall_s"] = sum(v for k, v in out.items() if k.endswith("_wall_s"))
    out["cpu_s"] = sum(v for k, v in out.items() if k.endswith("_cpu_s"))
    components.store.close()
    components.history.close()
    return out
