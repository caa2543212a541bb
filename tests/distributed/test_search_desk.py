"""Searches in embedded mode: answered by the store worker's desk beside its tasks, failing cleanly when
it is down, never run late."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lightmem_core.errors import InvalidInput, NotFound, SearchTimeout
from tests.distributed.conftest import Cluster, control_llm

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _index(cluster: Cluster, user: str, texts: list[str]) -> None:
    ids = [cluster.producer.enqueue_session(user, {"session_id": f"s{i}", "time_stamp": f"2025-03-{i + 1:02d}T09:00:00Z",
                                                   "turns": [{"role": "user", "content": text}]})
           for i, text in enumerate(texts)]
    cluster.producer.flush(user)
    assert set(cluster.producer.wait_indexed(ids, timeout_s=90).values()) == {"indexed"}


def _store_tasks_held(cluster: Cluster) -> int:
    queue = cluster.settings.queue("store")
    return sum(1 for raw in cluster.producer.state.r.hvals("unacked") if json.loads(raw)[2] == queue)


def _stats(cluster: Cluster) -> dict[str, int]:
    raw = cluster.producer.state.r.hgetall(cluster.producer.state.keys.stats)
    return {k.decode(): int(float(v)) for k, v in raw.items()}


def test_searches_are_answered_while_the_store_worker_runs_a_long_task(cluster: Cluster) -> None:
    """The offline update runs on the store worker (it owns the embedded folder) and waits on the LLM. Searches
    used to queue behind it; the desk answers them while the task is still running."""
    user = "desk-busy"
    # The same fact on three days: each older entry has a newer candidate, so the update asks the LLM.
    _index(cluster, user, ["My grey cat Miso likes tuna."] * 3)
    # Long enough that five searches fit inside one LLM call even on a loaded 2-core machine (at 4 s the
    # update once ended after the second search of a full suite run).
    control_llm(cluster, delay_s=12.0)
    try:
        before = cluster.producer.state.update_runs().get(user, 0)
        assert user in cluster.producer.update_now()
        deadline = time.monotonic() + 30
        while not _store_tasks_held(cluster):
            assert time.monotonic() < deadline, "the store worker never took the update"
            time.sleep(0.02)
        answered = []
        for _ in range(5):
            hits = cluster.producer.search(user, "what is the cat called", limit=2, timeout_s=3)
            answered.append(_store_tasks_held(cluster) > 0)
            assert any("Miso" in h["memory"] for h in hits)
        assert all(answered), "a search waited until the store worker's task ended"
        assert cluster.producer.state.update_runs().get(user, 0) == before  # the update was indeed still running
    finally:
        control_llm(cluster, delay_s=0.0)
    deadline = time.monotonic() + 120
    while cluster.producer.state.update_runs().get(user, 0) == before:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_the_desk_takes_every_strategy_and_filter_and_names_bad_ones(cluster: Cluster) -> None:
    user = "desk-filters"
    _index(cluster, user, ["We hiked the ridge trail in March.", "I bought new hiking boots.", "Dinner was ramen."])
    for strategy in ("embedding", "context", "hybrid"):
        hits = cluster.producer.search(user, "hiking boots", limit=3, strategy=strategy)
        assert hits and all(h["score"] > 0 for h in hits), strategy
    one_day = cluster.producer.search(user, "hiking", limit=5, filters={"time_stamp": {"gte": "2025-03-02", "lt": "2025-03-03"}})
    assert [h["time_stamp"][:10] for h in one_day] == ["2025-03-02"]
    # Each hit carries the original message it comes from, with its time and role.
    assert [(m["content"], m["role"], m["time_stamp"][:10]) for m in one_day[0]["sources"]] == [
        ("I bought new hiking boots.", "user", "2025-03-02")]
    with pytest.raises(InvalidInput, match="unknown operator"):
        cluster.producer.search(user, "hiking", filters={"time_stamp": {"after": "2025-03-01"}})
    with pytest.raises(InvalidInput, match="strategy"):
        cluster.producer.search(user, "hiking", strategy="telepathy")
    with pytest.raises(InvalidInput, match="limit"):
        cluster.producer.search(user, "hiking", limit=0)


def test_with_the_store_worker_down_a_search_fails_in_time_and_is_never_run_later(cluster: Cluster) -> None:
    user = "desk-down"
    _index(cluster, user, ["The spare key is under the blue flower pot."])
    proc = cluster.procs.procs[cluster.names["store"]]
    os.killpg(proc.pid, 9)
    proc.wait(10)
    try:
        answered = _stats(cluster).get("searches_answered", 0)
        started = time.monotonic()
        with pytest.raises(SearchTimeout, match="no store worker answered within 1 s"):
            cluster.producer.search(user, "where is the spare key", timeout_s=1)
        assert time.monotonic() - started < 3
        env = {**os.environ, **cluster.env, "LIGHTMEM_SEARCH_TIMEOUT_S": "1"}
        done = subprocess.run([sys.executable, "-m", "producers.cli", "search", user, "spare key"], env=env,
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert done.returncode != 0 and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "no store worker answered" in done.stderr
    finally:
        cluster.restart("store")
    # The restarted worker finds the two withdrawn searches' ids and runs neither.
    deadline = time.monotonic() + 30
    while cluster.producer.state.r.llen(cluster.producer.state.keys.desk):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert _stats(cluster).get("searches_answered", 0) == answered
    assert _stats(cluster)["searches_expired"] >= 2
    assert cluster.producer.search(user, "where is the spare key", limit=1)[0]["memory"]


def test_concurrent_searches_from_many_threads_all_get_their_own_answers(cluster: Cluster) -> None:
    users = [f"desk-many-{i}" for i in range(3)]
    for i, user in enumerate(users):
        _index(cluster, user, [f"My locker number is {100 + i}."])
    results: dict[tuple[str, int], list[str]] = {}

    def ask(user: str, n: int) -> None:
        results[(user, n)] = [h["memory"] for h in cluster.producer.search(user, "locker number", limit=1)]

    threads = [threading.Thread(target=ask, args=(u, n)) for u in users for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 15
    for (user, _), memories in results.items():
        assert memories and str(100 + users.index(user)) in memories[0]


def test_the_desk_reads_deletes_and_forgets_entries_of_the_user_who_asks_only(cluster: Cluster) -> None:
    producer = cluster.producer
    a, b, c = "desk-del-a", "desk-del-b", "desk-del-c"
    _index(cluster, a, ["Our wifi password is on the fridge.", "The plumber comes on Tuesday."])
    _index(cluster, b, ["My passport expires in June."])
    first = producer.entries(a)[0]
    assert producer.get_entry(a, first["id"]) == first
    for wrong in ((b, first["id"]), (a, "not-an-entry-id"), (a, "7f0d1c5e-0000-4000-8000-000000000000")):
        with pytest.raises(NotFound):
            producer.get_entry(*wrong)
    with pytest.raises(NotFound):  # another user's entry: nothing deleted, nothing recorded
        producer.delete_entry(b, first["id"])
    with pytest.raises(NotFound):
        producer.entry_history(b, first["id"])
    assert producer.delete_entry(a, first["id"])["memory"] == first["memory"]
    with pytest.raises(NotFound):
        producer.delete_entry(a, first["id"])
    changes = producer.entry_history(a, first["id"])
    assert [ch["action"] for ch in changes] == ["ADD", "DELETE"] and changes[1]["old_text"] == first["memory"]

    # A user is forgotten while the store worker indexes another user's sessions.
    ids = [producer.enqueue_session(c, {"session_id": f"s{i}", "time_stamp": f"2025-04-{i + 1:02d}T10:00:00Z",
                                        "turns": [{"role": "user", "content": f"Reminder number {i} is set."}]})
           for i in range(4)]
    producer.flush(c)
    forgotten = producer.delete_user(a)
    assert forgotten["entries_deleted"] == 1 and forgotten["redis_keys_deleted"] > 0
    assert producer.entries(a) == [] and not producer.knows_user(a)
    assert [e["memory"] for e in producer.entries(b)] and producer.knows_user(b)
    assert set(producer.wait_indexed(ids, timeout_s=90).values()) == {"indexed"}
    assert len(producer.entries(c)) == 4
    producer.ping_store(timeout_s=2)
    with pytest.raises(InvalidInput, match="entry_id"):
        producer.get_entry(a, "")


def test_the_desk_embedder_answers_a_batch_from_one_forward_pass() -> None:
    from lightmem_core.embedders import HashingEmbedder
    from workers.search_desk import _DeskEmbedder

    calls: list[list[str]] = []

    class Counting(HashingEmbedder):
        def embed(self, texts: list[str]) -> list[list[float]]:
            calls.append(list(texts))
            return super().embed(texts)

    inner = Counting(16)
    desk = _DeskEmbedder(inner)
    desk.prepare(["where is the key", "what is my dog called", "where is the key"])
    assert calls == [["where is the key", "what is my dog called"]]
    assert desk.embed(["what is my dog called"]) == HashingEmbedder(16).embed(["what is my dog called"])
    assert len(calls) == 1  # answered from the prepared batch
    assert desk.embed(["not prepared"]) == HashingEmbedder(16).embed(["not prepared"]) and len(calls) == 2
    desk.forget()
    desk.embed(["where is the key"])
    assert len(calls) == 3
