"""HTTP API figures: enqueue p50/p99 through ``POST /v1/sessions``, and search p50/p95 through
``POST /v1/search`` at 10k entries with 8 concurrent clients (the query embedding included).

The embedded default on one machine: a Redis server, the four worker processes, and ``lightmem api`` as
its own process with one API key (every request goes through the key check). The store folder is filled
first with 10k entries of 50 users (LoCoMo turns, MiniLM and BM25 vectors, as ``bench.core`` builds
them), before the store worker opens it. Enqueue: LoCoMo sessions one after another from one client while
the workers process what came before. Search: once everything enqueued is indexed, 8 threads with a
client each ask LoCoMo questions of random users; in embedded mode the store worker's desk answers.

Run: ``make bench`` (all sections) or ``python -m bench.api``.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import data_dir, locomo_questions, locomo_texts, percentile

SIZE, USERS = 10_000, 50
CLIENTS, SEARCHES_PER_CLIENT = 8, 50
ENQUEUES = 300
GOAL_ENQUEUE_P99_MS, GOAL_SEARCH_P95_MS = 20.0, 50.0
KEY = "bench-api-key-0123456789"


def _prefill(size: int) -> None:
    """``size`` entries of ``USERS`` users in the configured (embedded) store, vectors included."""
    from bench.core import _corpus
    from lightmem_core import factory
    from workers.settings import DistributedSettings

    config = DistributedSettings().memory_cfg
    embedder, bm25 = factory.build_embedder(config), factory.build_bm25(config)
    assert embedder is not None
    texts = locomo_texts()
    vectors = np.asarray(embedder.embed(texts), dtype=np.float32)
    entries, dense = _corpus(texts, vectors, size)
    store = factory.build_store(config, embedder.dims)
    try:
        for s in range(0, size, 256):
            chunk = entries[s : s + 256]
            sparse = [bm25.encode_document(e.memory) for e in chunk] if bm25 is not None else None
            store.upsert(chunk, dense[s : s + 256].tolist(), sparse)
    finally:
        store.close()


def _turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        turn = {"role": m["role"], "content": m["content"], "speaker": m.get("speaker_name") or m.get("speaker"),
                "time_stamp": m.get("time_stamp") or m.get("timestamp")}
        out.append({k: str(v) for k, v in turn.items() if v is not None})
    return out


def _enqueue(base: str, sessions: list[tuple[str, Any]]) -> tuple[list[float], list[str], list[float]]:
    """Each session enqueued, then a ``GET /healthz`` timed on the same connection: the floor of any HTTP
    request through this API process at that moment (no Redis, no validation, no user data)."""
    latencies, ids, floor = [], [], []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
        for user_id, session in sessions:
            body = {"session_id": session.session_id, "time_stamp": session.time_stamp.isoformat(),
                    "turns": _turns(session.messages)}
            started = time.perf_counter()
            reply = client.post("/v1/sessions", params={"user_id": user_id}, json=body)
            latencies.append(time.perf_counter() - started)
            reply.raise_for_status()
            ids.append(reply.json()["tracking_id"])
            started = time.perf_counter()
            client.get("/healthz").raise_for_status()
            floor.append(time.perf_counter() - started)
        for user_id in {u for u, _ in sessions}:
            client.post("/v1/flush", params={"user_id": user_id}).raise_for_status()
    return latencies, ids, floor


def _search(base: str, clients: int = CLIENTS) -> tuple[list[float], int]:
    questions = locomo_questions(200)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client_loop(n: int) -> None:
        rng = random.Random(n)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
            for _ in range(SEARCHES_PER_CLIENT):
                body = {"query": rng.choice(questions), "limit": 10}
                started = time.perf_counter()
                reply = client.post("/v1/search", params={"user_id": f"user-{rng.randrange(USERS)}"}, json=body)
                took = time.perf_counter() - started
                with lock:
                    if reply.status_code == 200:
                        latencies.append(took)
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0]


def _cpu_seconds(procs: dict[str, Any]) -> dict[str, float]:
    """CPU seconds (user + system) so far of each named process with its children, and of this one
    (the benchmark's client threads)."""
    import psutil

    def total(pid: int) -> float:
        try:
            proc = psutil.Process(pid)
            family = [proc, *proc.children(recursive=True)]
            return sum(p.cpu_times().user + p.cpu_times().system for p in family)
        except psutil.NoSuchProcess:
            return 0.0

    seconds = {name: total(proc.pid) for name, proc in procs.items()}
    own = psutil.Process().cpu_times()  # without its children: those are the processes above
    seconds["clients (the benchmark process)"] = own.user + own.system
    return seconds


def _wait_ready(base: str, proc: Any, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("lightmem api did not become ready")
        time.sleep(0.5)


def measure(workdir: Path, size: int = SIZE) -> dict[str, float]:
    from producers.datasets import load_locomo
    from producers.sdk import MemoryProducer
    from workers.launch import LocalCluster, free_port, process_argv, wait_for_workers
    from workers.settings import DistributedSettings

    env = {"LIGHTMEM_MEMORY__HISTORY_DB_PATH": str(workdir / "history.db"),
           "LIGHTMEM_MEMORY__EMBEDDING_RETRIEVER__CONFIGS__PATH": str(workdir / "qdrant"),
           "LIGHTMEM_MEMORY__TEXT_EMBEDDER__CONFIGS__MODEL_KWARGS__DEVICE": "cpu",
           "LIGHTMEM_KEY_PREFIX": "benchapi", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "LIGHTMEM_API_KEYS": json.dumps([{"key": KEY, "name": "bench", "user_prefix": ""}])}
    conversations = load_locomo(data_dir() / "locomo10.json")
    sessions = [(f"api-{c.user_id}", s) for c in conversations for s in c.sessions][:ENQUEUES]
    cluster = LocalCluster(workdir, env)
    saved = dict(os.environ)
    try:
        cluster.start_redis()
        os.environ.update(cluster.env)
        _prefill(size)  # before the store worker opens the folder: only one process may
        settings = DistributedSettings()
        for role in ("compress", "extract", "store", "update"):
            cluster.start(role, process_argv(role, settings))
        producer = MemoryProducer(settings)
        wait_for_workers(producer.app, ["compress", "extract", "store", "update"], timeout_s=180)
        port = free_port()
        api = cluster.start("api", [sys.executable, "-m", "producers.cli", "api", "--port", str(port)])
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, api)
        enqueue, ids, healthz = _enqueue(base, sessions)
        producer.wait_indexed(ids, timeout_s=1800)  # searches run on a quiet store
        before = _cpu_seconds(cluster.procs)
        search, errors = _search(base)
        after = _cpu_seconds(cluster.procs)
        alone, _ = _search(base, clients=1)  # the same without queueing: what one search costs here
        producer.close()
    finally:
        cluster.stop()
        os.environ.clear()
        os.environ.update(saved)
    return {"enqueues": len(enqueue), "enqueue_p50_ms": percentile(enqueue, 50) * 1000,
            "enqueue_p99_ms": percentile(enqueue, 99) * 1000, "healthz_p50_ms": percentile(healthz, 50) * 1000,
            "healthz_p99_ms": percentile(healthz, 99) * 1000, "searches": len(search), "search_errors": errors,
            "search_p50_ms": percentile(search, 50) * 1000, "search_p95_ms": percentile(search, 95) * 1000,
            "alone_p50_ms": percentile(alone, 50) * 1000, "alone_p95_ms": percentile(alone, 95) * 1000,
            "per_s": len(search) / max(1e-9, sum(search) / CLIENTS),
            **{f"cpu_ms_per_search:{name}": (after[name] - before.get(name, 0.0)) * 1000 / max(1, len(search))
               for name in after}}


def run() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        m = measure(Path(tmp))
    met = {True: "met", False: "not met"}
    return "\n".join([
        f"### HTTP API (`lightmem api`, embedded default, {SIZE:,} entries of {USERS} users, 2 desk threads)", "",
        "| figure | value | goal |", "|---|---|---|",
        f"| enqueue p50 / p99 through HTTP ({m['enqueues']:.0f} LoCoMo sessions, workers running) | "
        f"{m['enqueue_p50_ms']:.1f} / {m['enqueue_p99_ms']:.1f} ms | p99 ≤ {GOAL_ENQUEUE_P99_MS:g} ms: "
        f"{met[m['enqueue_p99_ms'] <= GOAL_ENQUEUE_P99_MS]} |",
        f"| `GET /healthz` p50 / p99, timed after each enqueue on the same connection (the HTTP floor) | "
        f"{m['healthz_p50_ms']:.1f} / {m['healthz_p99_ms']:.1f} ms | – |",
        f"| search p50 / p95, {CLIENTS} concurrent clients, hybrid, query embedding included "
        f"({m['searches']:.0f} searches, {m['search_errors']:.0f} errors) | "
        f"{m['search_p50_ms']:.1f} / {m['search_p95_ms']:.1f} ms | p95 ≤ {GOAL_SEARCH_P95_MS:g} ms: "
        f"{met[m['search_p95_ms'] <= GOAL_SEARCH_P95_MS]} |",
        f"| search p50 / p95, one client alone ({SEARCHES_PER_CLIENT} searches) | {m['alone_p50_ms']:.1f} / "
        f"{m['alone_p95_ms']:.1f} ms | – |",
        "", f"Throughput with {CLIENTS} clients: about {m['per_s']:.0f} searches/s on this machine's 2 cores, shared by the "
        "clients, the API process, Redis and the store worker.",
        "", f"CPU per search while the {CLIENTS} clients ran, by process (ms of CPU per search, all cores): "
        + ", ".join(f"{k.split(':', 1)[1]} {v:.1f}" for k, v in m.items() if k.startswith("cpu_ms_per_search:")
                    and v >= 0.05) + ".",
    ])


if __name__ == "__main__":
    print(run())
