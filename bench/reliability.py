"""Enqueue latency with 1 and 8 concurrent producers while the four workers run, and the time from a
worker's death (kill -9) to its work resuming, with default settings.

Set-up: a fresh Redis server, the scripted LLM (``LLM_DELAY_S`` per call, hashing embeddings) and one
worker per role on the embedded default, as in ``bench.distributed``. LoCoMo sessions are enqueued one
call each; each producer owns whole users (their sessions in time order).

- **Producers** run as separate processes (applications are separate programs) and, for comparison, as
  threads of one process. Each call is timed, and so is a Redis ``PING`` from a thread of the same
  process at the same time: the floor that the machine's load puts under any Redis call.
- **Death to resume**: the extract worker (the LLM waits) and the store worker (the embedded Qdrant
  owner) are killed while they hold a task; a supervisor starts them again at once. Measured: from the
  kill until the message it held is back in its queue, and until every session is indexed.

``python -m bench.reliability [N_CONVERSATIONS]``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import data_dir, percentile
from bench.distributed import _interleaved, _memory_env
from producers.datasets import Conversation, load_locomo

LLM_DELAY_S = 0.5
ROLES = ("compress", "extract", "store", "update")


@contextmanager
def _cluster(workdir: Path, env: dict[str, str]) -> Iterator[tuple[Any, Any, dict[str, list[str]]]]:
    """Redis and one worker per role with default settings; yields (LocalCluster, producer, argv per role)."""
    from producers.sdk import MemoryProducer
    from workers.launch import LocalCluster, process_argv, wait_for_workers
    from workers.settings import DistributedSettings

    run_env = {**env, "LIGHTMEM_MEMORY__HISTORY_DB_PATH": str(workdir / "history.db"),
               "LIGHTMEM_MEMORY__EMBEDDING_RETRIEVER__CONFIGS__PATH": str(workdir / "qdrant"),
               "LIGHTMEM_KEY_PREFIX": "bench"}
    cluster = LocalCluster(workdir, run_env)
    saved = dict(os.environ)
    producer = None
    try:
        cluster.start_redis()
        os.environ.update(cluster.env)
        settings = DistributedSettings()
        argv = {role: process_argv(role, settings) for role in ROLES}
        for role in ROLES:
            cluster.start(role, argv[role])
        producer = MemoryProducer(settings)
        wait_for_workers(producer.app, list(ROLES), timeout_s=180)
        yield cluster, producer, argv
    finally:
        if producer is not None:
            producer.close()
        cluster.stop()
        os.environ.clear()
        os.environ.update(saved)


def _produce(env: dict[str, str], work: list[tuple[str, Any]], out: Any, warm_up: bool = True) -> None:
    """One producer: enqueue its sessions, timing each call; a thread PINGs Redis meanwhile."""
    os.environ.update(env)
    from producers.sdk import MemoryProducer
    from workers.settings import DistributedSettings

    producer = MemoryProducer(DistributedSettings(), warm_up=warm_up)
    pings: list[float] = []
    stop = threading.Event()

    def ping() -> None:
        client = producer.state.r
        while not stop.is_set():
            t0 = time.perf_counter()
            client.ping()
            pings.append(time.perf_counter() - t0)
            time.sleep(0.01)

    pinger = threading.Thread(target=ping, daemon=True)
    pinger.start()
    latencies, ids = [], []
    for user_id, session in work:
        t0 = time.perf_counter()
        ids.append(producer.enqueue_session(user_id, session, session.session_id))
        latencies.append(time.perf_counter() - t0)
    stop.set()
    pinger.join()
    producer.close()
    out.put({"latencies": latencies, "pings": pings, "ids": ids})


def _split(conversations: list[Conversation], producers: int) -> list[list[tuple[str, Any]]]:
    """Whole users per producer, sessions interleaved across a producer's users."""
    shares: list[list[Conversation]] = [conversations[i::producers] for i in range(producers)]
    return [_interleaved(share) for share in shares if share]


ROWS = (  # label, producers, threads (not processes), warm-up, workers' nice value
    ("1 producer", 1, False, True, 10),
    ("8 producer processes", 8, False, True, 10),
    ("8 producer processes, LIGHTMEM_TASK_SENT_EVENTS=false", 8, False, True, 10),
    ("8 producer processes, workers not niced", 8, False, True, 0),
    ("8 producer threads, one process", 8, True, True, 10),
    ("8 producer processes, no warm-up, workers not niced (before)", 8, False, False, 0),
)


def enqueue_latency(conversations: list[Conversation], env: dict[str, str], workdir: Path) -> dict[str, dict[str, float]]:
    """p50/p99 of ``enqueue_session`` with 1 and 8 producer processes and 8 producer threads, workers running."""
    rows: dict[str, dict[str, float]] = {}
    for nice in sorted({row[4] for row in ROWS}, reverse=True):
        with _cluster(workdir / f"nice{nice}", {**env, "LIGHTMEM_WORKER_NICE": str(nice)}) as (cluster, producer, _):
            for label, n, threads, warm, row_nice in ROWS:
                if row_nice == nice:
                    rows[label] = _latency_row(conversations, cluster, producer, label, n, threads, warm,
                                               f"u{len(rows)}-")
    return {label: rows[label] for label, *_ in ROWS}


def _latency_row(conversations: list[Conversation], cluster: Any, producer: Any, label: str, n: int, threads: bool,
                 warm: bool, prefix: str) -> dict[str, float]:
    """One row: the conversations under fresh user ids, shared among ``n`` producers; waits until indexed."""
    renamed = [Conversation(user_id=prefix + c.user_id, sessions=c.sessions) for c in conversations]
    shares = _split(renamed, n)
    env = dict(cluster.env)
    if "SENT_EVENTS=false" in label:
        env["LIGHTMEM_TASK_SENT_EVENTS"] = "false"
    results = _run_producers(env, shares, threads, warm)
    latencies = [x for r in results for x in r["latencies"]]
    pings = [x for r in results for x in r["pings"]]
    ids = [x for r in results for x in r["ids"]]
    for c in renamed:
        producer.flush(c.user_id)
    producer.wait_indexed(ids, timeout_s=1800, poll_s=0.2)  # the workers did the work meanwhile
    firsts = [r["latencies"][0] for r in results]
    return {"calls": len(latencies), "p50_ms": percentile(latencies, 50) * 1000,
            "first_ms": percentile(firsts, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000, "max_ms": max(latencies) * 1000,
            "ping_p50_ms": percentile(pings, 50) * 1000, "ping_p99_ms": percentile(pings, 99) * 1000}


def _run_producers(env: dict[str, str], shares: list[list[tuple[str, Any]]], threads: bool,
                   warm_up: bool) -> list[dict[str, Any]]:
    if threads:
        import queue

        out: Any = queue.Queue()
        workers: list[Any] = [threading.Thread(target=_produce, args=(env, share, out, warm_up)) for share in shares]
    else:
        context = multiprocessing.get_context("spawn")
        out = context.Queue()
        workers = [context.Process(target=_produce, args=(env, share, out, warm_up)) for share in shares]
    for w in workers:
        w.start()
    results = [out.get(timeout=1800) for _ in workers]
    for w in workers:
        w.join(60)
    return results


def _held(r: Any, queue: str) -> list[str]:
    return [tag.decode() for tag, raw in r.hgetall("unacked").items() if json.loads(raw)[2] == queue]


def death_to_resume(conversations: list[Conversation], env: dict[str, str], workdir: Path, role: str) -> dict[str, float]:
    """Kill -9 ``role``'s worker while it holds a task, start it again at once; seconds until its message
    is back in the queue and until every session is indexed (and how long that takes with no kill)."""
    with _cluster(workdir, env) as (cluster, producer, argv):
        queue, r = producer.settings.queue(role), producer.state.r
        ids = [producer.enqueue_session(u, s, s.session_id) for u, s in _interleaved(conversations)]
        for c in conversations:
            producer.flush(c.user_id)
        deadline = time.monotonic() + 300
        while not (held := _held(r, queue)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {role} worker never held a task")
            time.sleep(0.002)
        proc = cluster.procs[role]
        killed = time.perf_counter()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        cluster.procs.pop(role)
        cluster.start(role, argv[role])  # the supervisor's restart
        while any(r.hexists("unacked", tag) for tag in held):
            time.sleep(0.05)
        back = time.perf_counter() - killed
        states = producer.wait_indexed(ids, timeout_s=1800, poll_s=0.2)
        done = time.perf_counter() - killed
        failed = sum(1 for s in states.values() if s != "indexed")
    return {"back_in_queue_s": back, "all_indexed_s": done, "not_indexed": failed, "visibility_timeout_s":
            float(producer.settings.visibility_timeout_s)}


def run(data_path: Path, conversations_n: int | None = None) -> str:
    conversations = load_locomo(data_path)[:conversations_n]
    llm = subprocess.Popen([sys.executable, "-m", "producers.scripted_llm", "--delay-s", str(LLM_DELAY_S)],
                           stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert llm.stdout is not None
    env = _memory_env(llm.stdout.readline().strip())
    try:
        with tempfile.TemporaryDirectory() as tmp:
            latency = enqueue_latency(conversations, env, Path(tmp) / "enqueue")
            deaths = {role: death_to_resume(conversations[:2], env, Path(tmp) / f"death-{role}", role)
                      for role in ("extract", "store")}
    finally:
        llm.terminate()
        llm.wait(10)
    return _table(conversations, latency, deaths)


def _table(conversations: list[Conversation], latency: dict[str, dict[str, float]],
           deaths: dict[str, dict[str, float]]) -> str:
    sessions = sum(len(c.sessions) for c in conversations)
    lines = [
        "### Enqueue latency and recovery",
        "",
        f"{len(conversations)} LoCoMo conversations ({sessions} sessions, one `enqueue_session` call each) per row, "
        f"enqueued while the four workers process them (scripted LLM at {LLM_DELAY_S:g} s per call). Redis PING "
        "is timed from a thread of each producer at the same time: the floor the machine's load puts under any call.",
        "",
        "| producers | calls | enqueue p50 / p99 / max (ms) | first call of a producer, median (ms) "
        "| Redis PING p50 / p99 (ms) | goal p99 ≤ 10 ms |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in latency.items():
        lines.append(f"| {label} | {r['calls']:.0f} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} / {r['max_ms']:.1f} | "
                     f"{r['first_ms']:.1f} | "
                     f"{r['ping_p50_ms']:.2f} / {r['ping_p99_ms']:.2f} | {'met' if r['p99_ms'] <= 10 else 'NOT met'} |")
    lines += ["", "Death to resume (kill -9 while the worker holds a task, restarted at once, default settings: "
                  "visibility timeout 60 s, live workers refresh what they hold; 2 conversations):", "",
              "| worker killed | message back in its queue (s) | every session indexed (s after the kill) "
              "| not indexed | goal ≤ 120 s |", "|---|---|---|---|---|"]
    for role, d in deaths.items():
        lines.append(f"| {role} | {d['back_in_queue_s']:.1f} | {d['all_indexed_s']:.1f} | {d['not_indexed']:.0f} | "
                     f"{'met' if d['back_in_queue_s'] <= 120 else 'NOT met'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else None
    print(run(data_dir() / "locomo10.json", n))
