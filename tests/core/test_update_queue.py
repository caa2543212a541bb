"""The offline update queue built with one matrix product per user equals the queue built the old way:
two store searches per new entry (strictly newer, strictly older), merged into the older entries' lists.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lightmem_core import LightMemory
from lightmem_core.models import MemoryEntry
from lightmem_core.stores.base import MemoryStore
from producers.datasets import load_locomo

Queue = dict[str, list[dict[str, Any]]]
TOP_K, KEEP = 20, 10


def reference_build(store: MemoryStore, user_id: str, fresh: list[MemoryEntry], queue: Queue, top_k: int = TOP_K,
                    keep: int = KEEP) -> None:
    """The queue as the per-entry searches built it (the implementation this replaced), in place."""

    def merge(existing: list[dict[str, Any]], found: list[tuple[str, float]]) -> list[dict[str, Any]]:
        best = {str(c["id"]): float(c["score"]) for c in existing}
        for entry_id, score in found:
            best[entry_id] = max(score, best.get(entry_id, score))
        return [{"id": i, "score": s} for i, s in sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:keep]]

    vectors = store.dense_vectors([e.id for e in fresh])
    for entry in fresh:
        ts = entry.time_stamp.timestamp()
        newer = store.search(user_id, "embedding", vectors[entry.id], None, top_k, {"time_stamp": {"gt": ts}})
        queue[entry.id] = merge(queue.get(entry.id, []), [(e.id, s) for e, s in newer])
        for older, score in store.search(user_id, "embedding", vectors[entry.id], None, top_k, {"time_stamp": {"lt": ts}}):
            queue[older.id] = merge(queue.get(older.id, []), [(entry.id, score)])


def assert_same_queue(built: Queue, expected: Queue) -> None:
    assert set(built) == set(expected)
    for entry_id, cands in expected.items():
        assert [c["id"] for c in built[entry_id]] == [c["id"] for c in cands], entry_id
        assert all(math.isclose(a["score"], b["score"], abs_tol=1e-5) for a, b in zip(built[entry_id], cands, strict=True))


def uid(n: int) -> str:
    return str(uuid.UUID(int=n + 1))  # the store takes UUIDs; these sort as their numbers do


def test_hand_made_set_equal_stamps_ties_and_a_second_run(make_memory: Callable[..., LightMemory]) -> None:
    memory = make_memory()
    day = datetime(2025, 3, 1, tzinfo=UTC)
    vecs = [[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.7, 0.7, 0.1], [0.2, 0.1, 0.9]]
    stamps = [0, 1, 1, 2, 3, 3]  # equal stamps never see each other; entries 1 and 2 tie exactly

    def entries(start: int, created: datetime, days: list[int]) -> list[MemoryEntry]:
        return [MemoryEntry(id=uid(start + i), user_id="ann", memory=f"fact {start + i}", time_stamp=day + timedelta(days=d),
                            created_at=created) for i, d in enumerate(days)]

    def vectors(rows: list[list[float]]) -> list[list[float]]:
        return [[*row, *([0.0] * 381)] for row in rows]  # the collection's 384 dims

    first = entries(0, day, stamps[:4])
    memory.store.upsert(first, vectors(vecs[:4]), None)
    memory.store.upsert([MemoryEntry(id=uid(99), user_id="bob", memory="x", time_stamp=day + timedelta(days=9), created_at=day)],
                        vectors([[1.0, 0.0, 0.0]]), None)  # another user's entry is never a candidate
    expected: Queue = {}
    reference_build(memory.store, "ann", first, expected, top_k=2, keep=2)
    assert memory.construct_update_queue_all_entries(top_k=2, keep_top_n=2, user_id="ann") == 4
    assert_same_queue(dict(memory.history.update_queue("ann")), expected)
    assert [c["id"] for c in expected[uid(0)]] == [uid(1), uid(2)]  # the tie, ordered by id

    second = entries(4, day + timedelta(hours=1), stamps[4:])
    memory.store.upsert(second, vectors(vecs[4:]), None)
    reference_build(memory.store, "ann", second, expected, top_k=2, keep=2)
    assert memory.construct_update_queue_all_entries(top_k=2, keep_top_n=2, user_id="ann") == 2  # only the new ones
    assert_same_queue(dict(memory.history.update_queue("ann")), expected)
    assert uid(4) in {c["id"] for c in expected[uid(1)]} and not expected[uid(5)]  # merged into an older list; newest: none


def test_locomo_conversation_in_two_runs(make_memory: Callable[..., LightMemory], data_dir: Path) -> None:
    """A LoCoMo conversation's first sessions, MiniLM vectors, verbatim entries: the queue after a first
    run and after a second run over the sessions added since."""
    conv = load_locomo(data_dir / "locomo10.json")[0]
    memory = make_memory()
    expected: Queue = {}
    for sessions in (conv.sessions[:4], conv.sessions[4:8]):
        known = {e.id for e in memory.get_all(conv.user_id)}
        for session in sessions:
            memory.add_memory(session.messages, user_id=conv.user_id, session_id=session.session_id)
        memory.flush(conv.user_id)
        fresh = [e for e in memory.store.list_entries(conv.user_id) if e.id not in known]
        reference_build(memory.store, conv.user_id, fresh, expected)
        assert memory.construct_update_queue_all_entries(user_id=conv.user_id) == len(fresh) > 50
        assert_same_queue(dict(memory.history.update_queue(conv.user_id)), expected)


def test_a_users_update_calls_are_cut_before_the_next_users_groups_are_read() -> None:
    """The offline update reads the queued groups user by user; a user's calls can be sent as soon as the
    next user's first group shows that user's groups complete, not after every user is read."""
    from lightmem_core.update.decision import Group
    from lightmem_core.update.llm import batches

    def group(user: str, k: int) -> Group:
        entry = MemoryEntry(id=f"{user}-{k}", user_id=user, memory=f"fact {k}", time_stamp="2025-01-02T00:00:00Z")
        return Group(entry, [entry.model_copy(update={"id": f"{user}-{k}-newer"})])

    pulled: list[str] = []

    def read() -> Iterator[Group]:
        for g in [group("a", 0), group("a", 1), group("a", 2), group("b", 0), group("b", 1)]:
            pulled.append(g.entry.id)
            yield g

    calls = batches(read(), batch_size=2)
    assert [g.entry.id for g in next(calls)] == ["a-0", "a-1"]  # a's 3 groups in 2 calls of about equal size
    assert pulled == ["a-0", "a-1", "a-2", "b-0"]  # b's second group not read yet
    assert [[g.entry.id for g in c] for c in calls] == [["a-2"], ["b-0", "b-1"]]
