"""``LightMemory``'s background extraction: ``add_memory`` returns while the calls run in a bounded
pool, and everything that reads or finishes waits for them, in each user's batch order.

The reference is the same input through ``background_extractions: 0`` (every call made inside
``add_memory``, as before the pool): the entries and the order in which each user's entries were
stored must be identical.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lightmem_core import LightMemory
from lightmem_core.errors import LLMRequestError
from producers.scripted_llm import ScriptedLLMServer

MakeMemory = Callable[..., LightMemory]
MARKER = "zanzibarite"  # the scripted server fails every prompt that holds it
DELAY_S = 0.3


def _memory(make: MakeMemory, tmp_path: Path, name: str, background: int) -> LightMemory:
    """One memory per name (its own history and Qdrant folder); every session holds enough user tokens
    (threshold 20) to make one batch: one extraction call per ``add_memory``."""
    return make(history_db_path=str(tmp_path / f"{name}.db"), extract_threshold=0.5,
                embedding_retriever={"model_name": "qdrant", "configs": {"path": str(tmp_path / f"{name}-q")}},
                llm={"short_term_capacity_tokens": 40, "max_retries": 0, "background_extractions": background})


def _sessions(user: str, days: int, marked_day: int | None = None) -> list[tuple[str, list[dict[str, Any]]]]:
    out = []
    for day in range(1, days + 1):
        tail = f" {MARKER}" if day == marked_day else ""
        text = f"On day {day} {user} walked the dog along the river and then cooked a large pot of soup.{tail}"
        out.append((f"{user}-s{day}", [{"role": "user", "content": text, "time_stamp": f"2025-03-{day:02d}T10:00:00Z"},
                                       {"role": "assistant", "content": "Sounds lovely.",
                                        "time_stamp": f"2025-03-{day:02d}T10:00:30Z"}]))
    return out


def _feed(memory: LightMemory, users: list[str], days: int, marked: dict[str, int] | None = None) -> list[dict[str, Any]]:
    results = []
    for day in range(days):  # users interleaved, as an app serving several people sends them
        for user in users:
            session_id, messages = _sessions(user, days, (marked or {}).get(user))[day]
            results.append(memory.add_memory(messages, user_id=user, session_id=session_id))
    return results


def _stored(memory: LightMemory, user: str) -> dict[str, Any]:
    """Entries, and the entry ids in the order they were stored (the history's ADD records)."""
    entries = sorted((e.id, e.memory, e.topic_id, e.session_id, tuple(e.source_ids)) for e in memory.get_all(user))
    added = [c["entry_id"] for c in memory.history.user_history(user) if c["action"] == "ADD"]
    return {"entries": entries, "added_in_order": added}


def _peak_in_flight(history_db: Path) -> int:
    """The most extraction calls in flight at once, from the accounting (each call ends at ``created_at``)."""
    with sqlite3.connect(history_db) as conn:
        rows = conn.execute("SELECT created_at - latency_s, created_at FROM llm_calls").fetchall()
    events = sorted([(start, 1) for start, _ in rows] + [(end, -1) for _, end in rows])
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def test_calls_overlap_and_store_what_synchronous_extraction_stores(make_llm_memory: MakeMemory, tmp_path: Path,
                                                                    llm_server: ScriptedLLMServer) -> None:
    users, days = ["ann", "bob"], 4
    llm_server.delay_s = DELAY_S
    reference = _memory(make_llm_memory, tmp_path, "sync", background=0)
    _feed(reference, users, days)
    assert _peak_in_flight(tmp_path / "sync.db") == 1
    memory = _memory(make_llm_memory, tmp_path, "pool", background=4)
    started = time.perf_counter()
    results = _feed(memory, users, days)
    handed_on = time.perf_counter() - started
    assert sum(r["batches_pending"] for r in results) > 0  # returned while calls were in flight
    assert sum(r["entries_stored"] for r in results) + memory.wait() == len(users) * days  # one fact a batch
    assert _peak_in_flight(tmp_path / "pool.db") >= 3
    assert handed_on < len(users) * days * DELAY_S / 2  # 8 calls of 0.3 s; add_memory waited for few of them
    for user in users:
        assert _stored(memory, user) == _stored(reference, user)
    assert memory.get_token_statistics()["llm_calls"] == reference.get_token_statistics()["llm_calls"] == 8


def test_reads_flush_and_close_wait_for_pending_batches(make_llm_memory: MakeMemory, tmp_path: Path,
                                                        llm_server: ScriptedLLMServer) -> None:
    llm_server.delay_s = DELAY_S
    memory = _memory(make_llm_memory, tmp_path, "pool", background=4)
    [(sid, first), (sid2, second), (sid3, third)] = _sessions("ann", 3)
    assert memory.add_memory(first, user_id="ann", session_id=sid)["batches_pending"] == 1
    hits = memory.retrieve("Where did Ann walk the dog?", limit=3, user_id="ann")  # waits for the call
    assert [h.entry.session_id for h in hits] == [sid]
    assert memory.add_memory(second, user_id="ann", session_id=sid2)["batches_pending"] == 1
    assert memory.flush("ann") == 1 and memory.state.in_flight("ann") == []
    assert memory.add_memory(third, user_id="ann", session_id=sid3)["batches_pending"] == 1
    memory.close()  # waits: nothing is left in flight for the next run
    again = _memory(make_llm_memory, tmp_path, "pool", background=4)  # the same folders, reopened
    assert again.state.in_flight("ann") == [] and len(again.get_all("ann")) == 3
    assert len(llm_server.requests) == 3


def test_batches_back_together_share_one_embedding_call(make_llm_memory: MakeMemory, tmp_path: Path,
                                                       llm_server: ScriptedLLMServer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's batches whose calls are all back when they are stored are embedded in one call (on a CPU
    cheaper than one call a batch), and store the same entries, vectors and order as one by one."""
    reference = _memory(make_llm_memory, tmp_path, "sync", background=0)
    _feed(reference, ["ann"], 4)
    llm_server.delay_s = 0.6  # under the client's 1 s timeout
    memory = _memory(make_llm_memory, tmp_path, "pool", background=4)
    embedder = memory.components.embedder
    assert embedder is not None
    embed, sizes = embedder.embed, []

    def counted(texts: list[str]) -> list[list[float]]:
        sizes.append(len(texts))
        return embed(texts)

    monkeypatch.setattr(embedder, "embed", counted)
    results = _feed(memory, ["ann"], 4)  # four calls in flight, none back before the last add_memory
    assert [r["batches_pending"] for r in results] == [1, 2, 3, 4]
    time.sleep(1.5)  # all four back
    assert memory.wait("ann") == 4
    assert sizes == [4]  # one fact a batch: four batches, one embedding call
    assert _stored(memory, "ann") == _stored(reference, "ann")
    ids = [e.id for e in reference.get_all("ann")]
    assert memory.store.dense_vectors(ids) == reference.store.dense_vectors(ids)


def test_failures_in_the_pool_are_kept_as_before(make_llm_memory: MakeMemory, tmp_path: Path,
                                                 llm_server: ScriptedLLMServer) -> None:
    """Invalid JSON twice: the batch is failed and kept for ``retry_failed``; the user's later batches go
    on. An HTTP 500 (transient): the batch stays in flight and the user's later batches wait behind it,
    so that once it is stored the user's entries were stored in the same order as without a failure."""
    reference = _memory(make_llm_memory, tmp_path, "sync", background=0)
    _feed(reference, ["ann", "bob"], 3, marked={"ann": 1, "bob": 1})  # the same texts, the server healthy
    memory = _memory(make_llm_memory, tmp_path, "pool", background=4)
    llm_server.fail_marker = MARKER
    _feed(memory, ["ann"], 3, marked={"ann": 1})
    memory.wait("ann")
    [failed] = memory.state.failed("ann")
    assert [f["purpose"] for f in memory.history.failures("ann")] == ["extraction"]
    assert len(memory.get_all("ann")) == 2 and memory.state.in_flight("ann") == []
    llm_server.fail_marker = None
    assert memory.retry_failed("ann") == {"calls_retried": 0, "retried": 1, "still_failed": 0, "entries_stored": 1}
    assert _stored(memory, "ann")["entries"] == _stored(reference, "ann")["entries"]  # day 1 stored last

    llm_server.fail_marker, llm_server.fail_status = MARKER, 500
    _feed(memory, ["bob"], 3, marked={"bob": 1})
    assert memory.wait("bob") == 0 and memory.get_all("bob") == []  # days 2 and 3 wait behind day 1
    assert memory.state.in_flight("bob") and memory.state.failed("bob") == []
    llm_server.fail_marker = None
    assert memory.flush("bob") == 3
    assert _stored(memory, "bob") == _stored(reference, "bob")


def test_an_unexpected_error_in_the_pool_is_raised_at_the_next_wait(make_llm_memory: MakeMemory, tmp_path: Path,
                                                                    llm_server: ScriptedLLMServer) -> None:
    memory = _memory(make_llm_memory, tmp_path, "pool", background=4)
    llm_server.fail_marker, llm_server.fail_status = MARKER, 400  # refused for good: today add_memory raised it
    [(sid, messages)] = _sessions("ann", 1, marked_day=1)
    assert memory.add_memory(messages, user_id="ann", session_id=sid)["batches_pending"] == 1
    with pytest.raises(LLMRequestError):
        memory.wait("ann")
    assert len(memory.state.in_flight("ann")) == 1  # not lost: sent again by the next drain
    llm_server.fail_marker = None
    assert memory.flush("ann") == 1
