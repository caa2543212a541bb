"""The history store's contract, run on SQLite and on PostgreSQL (``history_store``), plus what only
PostgreSQL must show: writers in several processes at once, and errors that name the server."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from lightmem_core.config import BaseMemoryConfigs
from lightmem_core.errors import TransientError
from lightmem_core.factory import build_history
from lightmem_core.history import HistoryStore
from lightmem_core.history.postgres import PostgresDatabase
from lightmem_core.models import Message

OLD_MESSAGES = (  # the table as versions before per-user message ids wrote it
    "CREATE TABLE messages (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, session_id TEXT NOT NULL,"
    " turn_index INTEGER NOT NULL, role TEXT NOT NULL, speaker TEXT, content TEXT NOT NULL, compressed TEXT,"
    " time_stamp TEXT NOT NULL, tokens_original INTEGER NOT NULL DEFAULT 0, tokens_compressed INTEGER,"
    " state TEXT NOT NULL DEFAULT 'received', created_at REAL NOT NULL)",
    "INSERT INTO messages VALUES ('m1','ann','s1',0,'user',NULL,'bees',NULL,'2025-04-01T00:00:00+00:00',1,NULL,"
    "'extracted',0)",
)


def message(user_id: str, mid: str, turn: int, content: str = "hello", session_id: str = "s1", day: int = 1) -> Message:
    return Message(id=mid, user_id=user_id, session_id=session_id, turn_index=turn, role="user", content=content,
                   time_stamp=datetime(2025, 4, day, tzinfo=UTC))


def test_messages_are_kept_once_per_user_and_id(history_store: HistoryStore) -> None:
    h = history_store
    with h.transaction() as conn:
        h.save_messages(conn, [message("ann", "m1", 0, "bees"), message("ann", "m2", 1, "honey")])
        h.save_messages(conn, [message("ann", "m1", 0, "changed"), message("bob", "m1", 0, "radios", day=2)])
        h.set_message_state(conn, "ann", ["m2"], "extracted")
    assert [(m["id"], m["content"], m["state"]) for m in h.messages("ann")] == [
        ("m1", "bees", "received"), ("m2", "honey", "extracted")]
    assert [m["content"] for m in h.messages("bob", "s1")] == ["radios"]
    assert h.next_turn_index("ann", "s1") == 2 and h.next_turn_index("ann", "other") == 0
    assert [s["time_stamp"] for s in h.sessions("ann")] == ["2025-04-01T00:00:00+00:00"]
    assert isinstance(h.messages("ann")[0]["created_at"], float)


def test_text_orders_bytewise_on_both(history_store: HistoryStore) -> None:
    h = history_store
    users = ["b", "B", "a", "_x", "Zed", "ä"]
    with h.transaction() as conn:
        h.save_messages(conn, [message(u, "m", 0) for u in users])
    assert h.users() == sorted(users)


def test_buffers_keep_their_order_and_first_payload(history_store: HistoryStore) -> None:
    h = history_store
    with h.transaction() as conn:
        for key in ("k2", "k1", "k3"):
            h.buffer_put(conn, "ann", "short", key, {"key": key})
        h.buffer_put(conn, "ann", "short", "k2", {"key": "again"})  # already there: kept as it was
        h.buffer_put(conn, "ann", "other", "k9", {})
        h.buffer_replace(conn, "ann", "short", "k1", {"key": "k1", "new": True})
    assert h.buffer_items("ann", "short") == [("k2", {"key": "k2"}), ("k1", {"key": "k1", "new": True}),
                                              ("k3", {"key": "k3"})]
    assert h.buffer_has("ann", "short", "k3") and not h.buffer_has("bob", "short", "k3")
    with h.transaction() as conn:
        h.buffer_remove(conn, "ann", "short", ["k2", "missing"])
        h.buffer_put(conn, "ann", "short", "k4", {})
    assert [k for k, _ in h.buffer_items("ann", "short")] == ["k1", "k3", "k4"]


def test_seen_ids_per_user_in_chunks(history_store: HistoryStore) -> None:
    h = history_store
    ids = [f"m{i}" for i in range(1200)]
    with h.transaction() as conn:
        h.mark_seen(conn, "ann", ids[::2])
        h.mark_seen(conn, "ann", ids[:10])  # some again
    assert h.seen_ids("ann", ids) == set(ids[::2]) | set(ids[:10])
    assert h.seen_ids("bob", ids) == set()


def test_counters(history_store: HistoryStore) -> None:
    h = history_store
    stamp = time.time()
    with h.transaction() as conn:
        assert [h.next_counter(conn, "ann", "topic") for _ in range(3)] == [1, 2, 3]
        h.add_to_counter(conn, "ann", "tokens", 2.5)
        h.add_to_counter(conn, "ann", "tokens", 1)
        h.set_counter(conn, "ann", "watermark", stamp)
        h.set_counter(conn, "*", "topic", 7)
    assert h.counter("ann", "watermark") == stamp  # time stamps round-trip exactly (8-byte floats)
    assert h.counters("ann") == {"topic": 3.0, "tokens": 3.5, "watermark": stamp}
    assert h.counter("ann", "missing", default=-1.0) == -1.0 and h.counter("*", "topic") == 7.0


def test_llm_calls_and_failures(history_store: HistoryStore) -> None:
    h = history_store
    h.record_llm_call("ann", "s1", "extraction", "m", 10, 2, 0.5, "ok", cached_tokens=8)
    h.record_llm_call("ann", "s2", "extraction", "m", 5, 1, 0.25, "error", "HTTP 500")
    h.record_llm_call(None, None, "check", None, 1, 0, 0.0, "ok")
    h.record_llm_call("ann", "s1", "extraction", "m", 10, 2, 0.001, "cache_hit")  # replayed: no call
    assert h.llm_totals("ann") == {"calls": 2.0, "prompt_tokens": 15.0, "completion_tokens": 3.0, "latency_s": 0.75,
                                   "cached_tokens": 8.0, "cache_hits": 1.0, "cache_saved_tokens": 12.0}
    assert h.llm_totals("ann", "s2")["calls"] == 1 and h.llm_totals()["calls"] == 3
    assert h.llm_totals("nobody") == {"calls": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0, "latency_s": 0.0,
                                      "cached_tokens": 0.0, "cache_hits": 0.0, "cache_saved_tokens": 0.0}
    first = h.record_failure("ann", "extraction", {"batch_id": "b1"}, "{bad", "not JSON")
    second = h.record_failure("bob", "update", {}, None, "no")
    assert second > first
    with h.transaction() as conn:
        h.resolve_failure(conn, first)
    assert [f["id"] for f in h.failures()] == [second] and h.failures("ann") == []
    [resolved] = h.failures("ann", include_resolved=True)
    assert resolved["raw_reply"] == "{bad" and resolved["payload"] == '{"batch_id": "b1"}' and resolved["resolved_at"]


def test_entry_changes_and_the_update_queue(history_store: HistoryStore) -> None:
    h = history_store
    with h.transaction() as conn:
        h.record_change(conn, "e1", "ann", "ADD", None, "a", "extracted")
        h.record_change(conn, "e2", "ann", "ADD", None, "b", "extracted")
        h.record_change(conn, "e1", "ann", "UPDATE", "a", "a2", "newer")
        h.put_update_candidates(conn, "e2", "ann", [{"id": "e1", "score": 0.9}])
        h.put_update_candidates(conn, "e1", "ann", [])
        h.put_update_candidates(conn, "e2", "ann", [{"id": "e1", "score": 0.8}])  # rebuilt: replaced
    assert [c["action"] for c in h.entry_history("e1")] == ["ADD", "UPDATE"]
    assert [(c["entry_id"], c["action"]) for c in h.user_history("ann")] == [("e1", "ADD"), ("e2", "ADD"), ("e1", "UPDATE")]
    assert h.update_queue("ann") == [("e1", []), ("e2", [{"id": "e1", "score": 0.8}])]
    with h.transaction() as conn:
        h.drop_from_update_queue(conn, ["e1"])
    assert h.update_queue("ann") == [("e2", [{"id": "e1", "score": 0.8}])]


def test_delete_user_and_reset(history_store: HistoryStore) -> None:
    h = history_store
    with h.transaction() as conn:
        for user in ("ann", "bob"):
            h.save_messages(conn, [message(user, "m1", 0)])
            h.buffer_put(conn, user, "short", "k", {})
            h.mark_seen(conn, user, ["m1"])
            h.set_counter(conn, user, "flush", 1)
            h.put_update_candidates(conn, f"e-{user}", user, [])
    with h.transaction() as conn:
        h.delete_user(conn, "ann")
    assert h.users() == ["bob"] and h.sessions("ann") == [] and h.buffer_items("ann", "short") == []
    assert h.seen_ids("ann", ["m1"]) == set() and h.counters("ann") == {} and h.update_queue("ann") == []
    assert h.counters("bob") == {"flush": 1.0}
    h.reset()
    assert h.users() == [] and h.counters("bob") == {}


def test_a_transaction_keeps_all_or_nothing(history_store: HistoryStore) -> None:
    h = history_store
    with pytest.raises(RuntimeError), h.transaction() as conn:
        h.save_messages(conn, [message("ann", "m1", 0)])
        with h.transaction() as inner:  # joins the outer one
            h.mark_seen(inner, "ann", ["m1"])
            assert h.seen_ids("ann", ["m1"]) == {"m1"}  # the thread's reads see its writes
        h.record_failure("ann", "extraction", {}, None, "inside")  # part of the transaction too
        raise RuntimeError("rolled back")
    assert h.messages("ann") == [] and h.seen_ids("ann", ["m1"]) == set() and h.failures() == []
    with h.transaction() as conn:
        h.save_messages(conn, [message("ann", "m1", 0)])
    assert len(h.messages("ann")) == 1


def test_another_thread_sees_only_committed_writes(history_store: HistoryStore) -> None:
    h = history_store
    seen: list[list[str]] = []
    with h.transaction() as conn:
        h.buffer_put(conn, "ann", "short", "k", {})
        if "postgresql" in h.where:  # SQLite's one connection makes the reader wait for the commit instead
            reader = threading.Thread(target=lambda: seen.append([k for k, _ in h.buffer_items("ann", "short")]))
            reader.start()
            reader.join()
            assert seen == [[]]
    assert [k for k, _ in h.buffer_items("ann", "short")] == ["k"]


def _old_history(history_backend: str | None, tmp_path: Path,
                 written: tuple[str, ...] = OLD_MESSAGES) -> BaseMemoryConfigs:
    config = BaseMemoryConfigs(history_db_path=str(tmp_path / "old.db"), history_db_url=history_backend)
    if history_backend is None:
        with sqlite3.connect(config.history_db_path) as old:
            for statement in written:
                old.execute(statement.replace("{identity}", "INTEGER PRIMARY KEY AUTOINCREMENT"))
    else:
        with psycopg.connect(history_backend, autocommit=True) as old:
            for statement in written:
                old.execute(statement.replace("{identity}", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"))
    return config


def test_an_old_history_keyed_by_message_id_alone_is_rekeyed(history_backend: str | None, tmp_path: Path) -> None:
    config = _old_history(history_backend, tmp_path)
    history = build_history(config)
    try:
        assert [m["content"] for m in history.messages("ann")] == ["bees"]
        with history.transaction() as conn:
            assert history._db.primary_key(conn, "messages") == ["user_id", "id"]
            history.save_messages(conn, [message("bob", "m1", 0, "radios")])  # the same id, another user
        assert [m["content"] for m in history.messages("bob")] == ["radios"]
    finally:
        history.close()
    build_history(config).close()  # opening again changes nothing


OLD_LLM_CALLS = (  # the table as versions before provider-cached prompt tokens were recorded wrote it
    "CREATE TABLE llm_calls (id {identity}, user_id TEXT, session_id TEXT, purpose TEXT NOT NULL, model TEXT,"
    " prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, latency_s REAL NOT NULL,"
    " outcome TEXT NOT NULL, error TEXT, created_at REAL NOT NULL)",
    "INSERT INTO llm_calls (user_id,purpose,model,prompt_tokens,completion_tokens,latency_s,outcome,created_at)"
    " VALUES ('ann','extraction','m',10,2,0.5,'ok',0)",
)


def test_an_old_llm_calls_table_gains_cached_tokens(history_backend: str | None, tmp_path: Path) -> None:
    config = _old_history(history_backend, tmp_path, OLD_LLM_CALLS)
    history = build_history(config)
    try:
        history.record_llm_call("ann", None, "extraction", "m", 20, 1, 0.1, "ok", cached_tokens=16)
        totals = history.llm_totals("ann")
        assert totals["calls"] == 2 and totals["prompt_tokens"] == 30 and totals["cached_tokens"] == 16
    finally:
        history.close()
    build_history(config).close()  # opening again changes nothing


# --- PostgreSQL only ------------------------------------------------------------------------------

def _in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            results[n] = work(n)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return results


def test_two_stores_write_one_postgres_at_once(postgres_url: str) -> None:
    """Two stores (two pools, as two worker processes on two hosts have), several threads each, writing
    the same user's counters, seen ids and buffer at once: no counter step lost or given twice, no id
    seen twice, every buffer item in its own place."""
    stores = [HistoryStore(PostgresDatabase(postgres_url)) for _ in range(2)]  # the second opens a made schema
    rounds, threads = 25, 6

    def work(n: int) -> list[int]:
        h, got = stores[n % 2], []
        for i in range(rounds):
            with h.transaction() as conn:
                got.append(h.next_counter(conn, "ann", "topic_id"))
                h.add_to_counter(conn, "ann", "tokens", 1.5)
                h.mark_seen(conn, "ann", [f"m{i}", f"m{i + 1}", f"t{n}-{i}"])  # overlapping between threads
                h.buffer_put(conn, "ann", "short", f"t{n}-{i}", {"n": n, "i": i})
        return got

    try:
        values = sorted(v for got in _in_threads(threads, work) for v in got)
        h = stores[0]
        assert values == list(range(1, rounds * threads + 1))
        assert h.counter("ann", "topic_id") == rounds * threads and h.counter("ann", "tokens") == 1.5 * rounds * threads
        expected = {f"m{i}" for i in range(rounds + 1)} | {f"t{n}-{i}" for n in range(threads) for i in range(rounds)}
        assert h.seen_ids("ann", sorted(expected)) == expected
        with h.transaction() as conn:
            rows = conn.execute("SELECT COUNT(*) AS n, COUNT(DISTINCT message_id) AS d FROM seen_messages")
            seqs = [r["seq"] for r in conn.execute("SELECT seq FROM buffers WHERE user_id=? ORDER BY seq", ("ann",))]
        assert rows[0]["n"] == rows[0]["d"] == len(expected)
        assert seqs == list(range(rounds * threads))
        for n in range(threads):  # each writer's items stay in its order
            assert [p["i"] for _, p in h.buffer_items("ann", "short") if p["n"] == n] == list(range(rounds))
    finally:
        for h in stores:
            h.close()


def test_stores_opening_one_new_database_at_once(postgres_url: str) -> None:
    stores = _in_threads(4, lambda _: HistoryStore(PostgresDatabase(postgres_url)))
    for h in stores:
        h.close()


def test_an_unreachable_server_is_a_transient_error_naming_the_host() -> None:
    url = f"postgresql://lightmem:s3cret-pw@127.0.0.1:{_closed_port()}/lightmem?connect_timeout=2"
    with pytest.raises(TransientError) as caught:
        build_history(BaseMemoryConfigs(history_db_url=url))
    message = str(caught.value)
    assert "postgresql://lightmem@127.0.0.1:" in message and "refused" in message and "s3cret-pw" not in message


def test_a_lost_connection_is_a_transient_error(postgres_url: str) -> None:
    h = HistoryStore(PostgresDatabase(postgres_url))
    try:
        with pytest.raises(TransientError, match="history database postgresql://lightmem@127.0.0.1"):
            with h.transaction() as conn:
                conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        assert h.users() == []  # the pool replaces the dead connection
    finally:
        h.close()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
