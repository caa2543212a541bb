"""The history store: SQLite at ``history_db_path`` (one host), or PostgreSQL at ``history_db_url``.

It keeps what LightMem throws away: every original message, the sessions, the processing state of
each message, persisted buffers (so a restart loses nothing), token and LLM-call accounting, failed
batches with the raw reply, and every change ever made to an entry. The methods are written once,
against ``base.Database``; ``sqlite`` and ``postgres`` hold what differs.
"""

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager
from typing import Any

from lightmem_core.history import schema
from lightmem_core.history.base import Connection, Database, Row
from lightmem_core.history.sqlite import SQLiteDatabase
from lightmem_core.llm.base import CACHE_HIT
from lightmem_core.models import Message

GLOBAL_SCOPE = "*"


class HistoryStore:
    """History, state and accounting over one database.

    Args:
        database: a ``SQLiteDatabase`` or ``PostgresDatabase``; a string is a SQLite path (or ``:memory:``).
    """

    def __init__(self, database: Database | str) -> None:
        self._db: Database = SQLiteDatabase(database) if isinstance(database, str) else database
        self.where = self._db.where
        try:
            schema.create(self._db)
        except BaseException:
            self._db.close()
            raise

    def transaction(self) -> AbstractContextManager[Connection]:
        """All statements inside commit together or not at all; a transaction opened inside another
        (by the same thread) joins it, and the thread's reads see its writes."""
        return self._db.transaction()

    def lock(self, conn: Connection, key: str) -> None:
        """Hold ``key`` until ``conn``'s transaction ends, against every process on this database."""
        self._db.lock(conn, key)

    def connection(self) -> AbstractContextManager[Connection]:
        """The thread's open transaction if there is one, else a connection in autocommit (for reads
        that must not take SQLite's write lock)."""
        return self._db.connection()

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Row]:
        """One statement in the thread's open transaction, else on its own (autocommit)."""
        with self._db.connection() as conn:
            return conn.execute(sql, args)

    # --- messages and sessions --------------------------------------------------------------------
    def next_turn_index(self, user_id: str, session_id: str) -> int:
        rows = self._query(
            "SELECT COALESCE(MAX(turn_index) + 1, 0) AS n FROM messages WHERE user_id=? AND session_id=?", (user_id, session_id)
        )
        return int(rows[0]["n"])

    def save_messages(self, conn: Connection, messages: list[Message]) -> None:
        """Insert messages (and their sessions); a message id already stored is left as it is."""
        now = time.time()
        for m in messages:
            conn.execute(
                "INSERT INTO sessions VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                (m.user_id, m.session_id, m.time_stamp.isoformat(), now),
            )
            conn.execute(
                "INSERT INTO messages (id,user_id,session_id,turn_index,role,speaker,content,compressed,"
                "time_stamp,tokens_original,tokens_compressed,state,created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT DO NOTHING",
                (m.id, m.user_id, m.session_id, m.turn_index, m.role, m.speaker, m.content, m.compressed,
                 m.time_stamp.isoformat(), m.tokens_original, m.tokens_compressed, "received", now),
            )

    def set_message_state(self, conn: Connection, user_id: str, ids: list[str], state: str) -> None:
        conn.executemany("UPDATE messages SET state=? WHERE user_id=? AND id=?", [(state, user_id, i) for i in ids])

    def messages(self, user_id: str, session_id: str | None = None) -> list[dict[str, Any]]:
        if session_id is None:
            return self._query("SELECT * FROM messages WHERE user_id=? ORDER BY time_stamp, turn_index", (user_id,))
        return self._query("SELECT * FROM messages WHERE user_id=? AND session_id=? ORDER BY turn_index", (user_id, session_id))

    def messages_by_id(self, user_id: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The stored messages of ``user_id`` among ``ids`` (the originals behind retrieved entries)."""
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._query(f"SELECT * FROM messages WHERE user_id=? AND id IN ({marks})", (user_id, *chunk))
            found.update((r["id"], dict(r)) for r in rows)
        return found

    def sessions(self, user_id: str) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM sessions WHERE user_id=? ORDER BY time_stamp", (user_id,))

    def users(self) -> list[str]:
        return [r["user_id"] for r in self._query("SELECT DISTINCT user_id FROM messages ORDER BY user_id")]

    # --- persisted buffers ------------------------------------------------------------------------
    def buffer_put(self, conn: Connection, user_id: str, kind: str, key: str, payload: dict[str, Any]) -> None:
        """Append an item to a buffer; a key already there keeps its payload and place."""
        self.lock(conn, f"buffer:{user_id}:{kind}")  # concurrent appends take distinct places
        conn.execute(
            "INSERT INTO buffers SELECT ?,?,?,?, COALESCE(MAX(seq)+1,0) FROM buffers WHERE user_id=? AND kind=?"
            " ON CONFLICT DO NOTHING",
            (user_id, kind, key, json.dumps(payload), user_id, kind),
        )

    def buffer_items(self, user_id: str, kind: str) -> list[tuple[str, dict[str, Any]]]:
        rows = self._query("SELECT item_key, payload FROM buffers WHERE user_id=? AND kind=? ORDER BY seq", (user_id, kind))
        return [(r["item_key"], json.loads(r["payload"])) for r in rows]

    def buffer_users(self, kind: str) -> list[str]:
        """The users with items in a buffer of ``kind``."""
        return [r["user_id"] for r in self._query("SELECT DISTINCT user_id FROM buffers WHERE kind=? ORDER BY user_id", (kind,))]

    def buffer_has(self, user_id: str, kind: str, key: str) -> bool:
        return bool(self._query("SELECT 1 AS found FROM buffers WHERE user_id=? AND kind=? AND item_key=?", (user_id, kind, key)))

    def buffer_replace(self, conn: Connection, user_id: str, kind: str, key: str, payload: dict[str, Any]) -> None:
        """Rewrite one item in place (it keeps its position)."""
        conn.execute("UPDATE buffers SET payload=? WHERE user_id=? AND kind=? AND item_key=?",
                     (json.dumps(payload), user_id, kind, key))

    def seen_ids(self, user_id: str, ids: list[str]) -> set[str]:
        """Those of ``ids`` that this user's buffers ever took (message ids are scoped per user)."""
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._query(f"SELECT message_id FROM seen_messages WHERE user_id=? AND message_id IN ({marks})",
                               (user_id, *chunk))
            found.update(r["message_id"] for r in rows)
        return found

    def mark_seen(self, conn: Connection, user_id: str, ids: list[str]) -> None:
        conn.executemany("INSERT INTO seen_messages VALUES (?,?) ON CONFLICT DO NOTHING", [(user_id, i) for i in ids])

    def buffer_remove(self, conn: Connection, user_id: str, kind: str, keys: list[str]) -> None:
        conn.executemany("DELETE FROM buffers WHERE user_id=? AND kind=? AND item_key=?", [(user_id, kind, k) for k in keys])

    # --- speaker names (speaker_match: lightmem_core/speakers.py) --------------------------------
    def add_speaker_names(self, conn: Connection, user_id: str, pairs: list[tuple[str, str]]) -> None:
        """Record ``(name, speaker)`` pairs: a name (lower-cased) that ``speaker`` goes by for ``user_id``."""
        conn.executemany("INSERT INTO speaker_names VALUES (?,?,?) ON CONFLICT DO NOTHING",
                         [(user_id, name, speaker) for name, speaker in pairs])

    def speaker_names(self, user_id: str) -> list[tuple[str, str]]:
        """Every ``(name, speaker)`` pair recorded for ``user_id``."""
        rows = self._query("SELECT name, speaker FROM speaker_names WHERE user_id=?", (user_id,))
        return [(r["name"], r["speaker"]) for r in rows]

    # --- counters ---------------------------------------------------------------------------------
    def next_counter(self, conn: Connection, scope: str, name: str) -> int:
        """Increment and return a per-scope counter (topic ids are unique per user, never global)."""
        rows = conn.execute(
            "INSERT INTO counters VALUES (?,?,1) ON CONFLICT(scope,name) DO UPDATE SET value=counters.value+1"
            " RETURNING value",
            (scope, name),
        )
        return int(rows[0]["value"])

    def add_to_counter(self, conn: Connection, scope: str, name: str, amount: float) -> None:
        conn.execute(
            "INSERT INTO counters VALUES (?,?,?) ON CONFLICT(scope,name) DO UPDATE SET value=counters.value+excluded.value",
            (scope, name, amount),
        )

    def set_counter(self, conn: Connection, scope: str, name: str, value: float) -> None:
        conn.execute(
            "INSERT INTO counters VALUES (?,?,?) ON CONFLICT(scope,name) DO UPDATE SET value=excluded.value",
            (scope, name, value),
        )

    def counter(self, scope: str, name: str, default: float = 0.0) -> float:
        rows = self._query("SELECT value FROM counters WHERE scope=? AND name=?", (scope, name))
        return float(rows[0]["value"]) if rows else default

    def counters(self, scope: str) -> dict[str, float]:
        return {r["name"]: float(r["value"]) for r in self._query("SELECT name, value FROM counters WHERE scope=?", (scope,))}

    # --- LLM accounting and failures --------------------------------------------------------------
    def record_llm_call(self, user_id: str | None, session_id: str | None, purpose: str, model: str | None,
                        prompt_tokens: int, completion_tokens: int, latency_s: float, outcome: str,
                        error: str | None = None, cached_tokens: int = 0) -> None:
        self._query(
            "INSERT INTO llm_calls (user_id,session_id,purpose,model,prompt_tokens,completion_tokens,latency_s,"
            "outcome,error,created_at,cached_tokens) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (user_id, session_id, purpose, model, prompt_tokens, completion_tokens, latency_s, outcome, error, time.time(),
             cached_tokens),
        )

    def llm_totals(self, user_id: str | None = None, session_id: str | None = None) -> dict[str, float]:
        """LLM calls with their prompt, completion and provider-cached prompt tokens and latency, and the
        replies replayed from the call cache (``cache_hits``, not calls) with the tokens they saved; for
        one user and/or session, or all."""
        clauses = [(c, v) for c, v in (("user_id=?", user_id), ("session_id=?", session_id)) if v is not None]
        where = f"WHERE {' AND '.join(c for c, _ in clauses)}" if clauses else ""
        args: tuple[Any, ...] = tuple(v for _, v in clauses)
        called = f"outcome <> '{CACHE_HIT}'"
        row = self._query(
            f"SELECT COALESCE(SUM(CASE WHEN {called} THEN 1 ELSE 0 END),0) AS calls, "
            f"COALESCE(SUM(CASE WHEN {called} THEN prompt_tokens ELSE 0 END),0) AS prompt_tokens, "
            f"COALESCE(SUM(CASE WHEN {called} THEN completion_tokens ELSE 0 END),0) AS completion_tokens, "
            f"COALESCE(SUM(CASE WHEN {called} THEN latency_s ELSE 0 END),0) AS latency_s, "
            f"COALESCE(SUM(CASE WHEN {called} THEN cached_tokens ELSE 0 END),0) AS cached_tokens, "
            f"COALESCE(SUM(CASE WHEN {called} THEN 0 ELSE 1 END),0) AS cache_hits, "
            f"COALESCE(SUM(CASE WHEN {called} THEN 0 ELSE prompt_tokens + completion_tokens END),0) AS cache_saved_tokens "
            f"FROM llm_calls {where}",
            args,
        )[0]
        return {k: float(v) for k, v in row.items()}

    def record_failure(self, user_id: str, purpose: str, payload: dict[str, Any], raw_reply: str | None, reason: str) -> int:
        rows = self._query(
            "INSERT INTO failed_batches (user_id,purpose,payload,raw_reply,reason,created_at) VALUES (?,?,?,?,?,?)"
            " RETURNING id",
            (user_id, purpose, json.dumps(payload), raw_reply, reason, time.time()),
        )
        return int(rows[0]["id"])

    def failures(self, user_id: str | None = None, include_resolved: bool = False) -> list[dict[str, Any]]:
        clauses = [] if include_resolved else ["resolved_at IS NULL"]
        args: tuple[Any, ...] = ()
        if user_id is not None:
            clauses.append("user_id=?")
            args = (user_id,)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return self._query(f"SELECT * FROM failed_batches {where} ORDER BY id", args)

    def resolve_failure(self, conn: Connection, failure_id: int) -> None:
        conn.execute("UPDATE failed_batches SET resolved_at=? WHERE id=?", (time.time(), failure_id))

    # --- entry changes ----------------------------------------------------------------------------
    def record_change(self, conn: Connection, entry_id: str, user_id: str, action: str,
                      old_text: str | None, new_text: str | None, reason: str | None) -> None:
        conn.execute(
            "INSERT INTO entry_history (entry_id,user_id,action,old_text,new_text,reason,created_at) VALUES (?,?,?,?,?,?,?)",
            (entry_id, user_id, action, old_text, new_text, reason, time.time()),
        )

    def entry_history(self, entry_id: str) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM entry_history WHERE entry_id=? ORDER BY id", (entry_id,))

    def user_history(self, user_id: str) -> list[dict[str, Any]]:
        """Every change to any entry of ``user_id``, in the order they were made."""
        return self._query("SELECT * FROM entry_history WHERE user_id=? ORDER BY id", (user_id,))

    # --- offline-update queue ---------------------------------------------------------------------
    def put_update_candidates(self, conn: Connection, entry_id: str, user_id: str, candidates: list[dict[str, Any]]) -> None:
        conn.execute(
            "INSERT INTO update_queue VALUES (?,?,?,?) ON CONFLICT(entry_id) DO UPDATE SET candidates=excluded.candidates,"
            " built_at=excluded.built_at",
            (entry_id, user_id, json.dumps(candidates), time.time()),
        )

    def update_queue(self, user_id: str) -> list[tuple[str, list[dict[str, Any]]]]:
        rows = self._query("SELECT entry_id, candidates FROM update_queue WHERE user_id=? ORDER BY entry_id", (user_id,))
        return [(r["entry_id"], json.loads(r["candidates"])) for r in rows]

    def drop_from_update_queue(self, conn: Connection, entry_ids: list[str]) -> None:
        conn.executemany("DELETE FROM update_queue WHERE entry_id=?", [(i,) for i in entry_ids])

    def delete_user(self, conn: Connection, user_id: str) -> None:
        for table in ("messages", "sessions", "buffers", "update_queue", "seen_messages", "speaker_names",
                      *schema.GRAPH_TABLES):
            conn.execute(f"DELETE FROM {table} WHERE user_id=?", (user_id,))
        conn.execute("DELETE FROM counters WHERE scope=?", (user_id,))

    def reset(self) -> None:
        with self.transaction() as conn:
            for table in schema.TABLES:
                conn.execute(f"DELETE FROM {table}")

    def close(self) -> None:
        self._db.close()
