"""The history store (SQLite at ``history_db_path``).

It keeps what LightMem throws away: every original message, the sessions, the processing state of
each message, persisted buffers (so a restart loses nothing), token and LLM-call accounting, failed
batches with the raw reply, and every change ever made to an entry. One connection per store,
serialised by a lock; WAL mode so other processes can read while one writes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightmem_core.models import Message

# Message ids are scoped per user: two users may send the same explicit id.
_MESSAGES = """CREATE TABLE IF NOT EXISTS messages (
    id TEXT NOT NULL, user_id TEXT NOT NULL, session_id TEXT NOT NULL, turn_index INTEGER NOT NULL,
    role TEXT NOT NULL, speaker TEXT, content TEXT NOT NULL, compressed TEXT, time_stamp TEXT NOT NULL,
    tokens_original INTEGER NOT NULL DEFAULT 0, tokens_compressed INTEGER,
    state TEXT NOT NULL DEFAULT 'received', created_at REAL NOT NULL, PRIMARY KEY (user_id, id))"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    user_id TEXT NOT NULL, session_id TEXT NOT NULL, time_stamp TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (user_id, session_id));
{messages};
CREATE INDEX IF NOT EXISTS messages_by_session ON messages (user_id, session_id, turn_index);
CREATE TABLE IF NOT EXISTS buffers (
    user_id TEXT NOT NULL, kind TEXT NOT NULL, item_key TEXT NOT NULL, payload TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (user_id, kind, item_key));
CREATE TABLE IF NOT EXISTS seen_messages (
    user_id TEXT NOT NULL, message_id TEXT NOT NULL, PRIMARY KEY (user_id, message_id));
CREATE TABLE IF NOT EXISTS counters (
    scope TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL, PRIMARY KEY (scope, name));
CREATE TABLE IF NOT EXISTS llm_calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT, session_id TEXT, purpose TEXT NOT NULL, model TEXT,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, latency_s REAL NOT NULL,
    outcome TEXT NOT NULL, error TEXT, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS failed_batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, purpose TEXT NOT NULL, payload TEXT NOT NULL,
    raw_reply TEXT, reason TEXT NOT NULL, created_at REAL NOT NULL, resolved_at REAL);
CREATE TABLE IF NOT EXISTS entry_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, entry_id TEXT NOT NULL, user_id TEXT NOT NULL, action TEXT NOT NULL,
    old_text TEXT, new_text TEXT, reason TEXT, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS entry_history_by_entry ON entry_history (entry_id, id);
CREATE TABLE IF NOT EXISTS update_queue (
    entry_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, candidates TEXT NOT NULL, built_at REAL NOT NULL);
""".replace("{messages}", _MESSAGES)

GLOBAL_SCOPE = "*"


class HistoryStore:
    """SQLite-backed history, state and accounting."""

    def __init__(self, path: str) -> None:
        self.path = path
        if path != ":memory:":
            Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._depth = 0  # nesting of transaction() in the thread that holds the lock
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._scope_message_ids_per_user()
            self._conn.executescript(_SCHEMA)

    def _scope_message_ids_per_user(self) -> None:
        """Databases written before message ids were scoped per user keyed ``messages`` by id alone, so a
        second user's message with the same explicit id was dropped. Re-key such a table once."""
        columns = {r["name"]: r["pk"] for r in self._conn.execute("PRAGMA table_info(messages)")}
        if columns.get("id") != 1 or columns.get("user_id"):
            return  # no table yet, or already keyed by (user_id, id)
        self._conn.executescript(f"BEGIN IMMEDIATE; ALTER TABLE messages RENAME TO messages_by_id; {_MESSAGES}; "
                                 "INSERT INTO messages SELECT * FROM messages_by_id; DROP TABLE messages_by_id; COMMIT;")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All statements inside commit together or not at all; a transaction opened inside another
        (by the same thread, which holds the lock) joins it."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0
            self._conn.execute("COMMIT")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, args).fetchall())

    # --- messages and sessions --------------------------------------------------------------------
    def next_turn_index(self, user_id: str, session_id: str) -> int:
        rows = self._query(
            "SELECT COALESCE(MAX(turn_index) + 1, 0) AS n FROM messages WHERE user_id=? AND session_id=?", (user_id, session_id)
        )
        return int(rows[0]["n"])

    def save_messages(self, conn: sqlite3.Connection, messages: list[Message]) -> None:
        """Insert messages (and their sessions); a message id already stored is left as it is."""
        now = time.time()
        for m in messages:
            conn.execute(
                "INSERT OR IGNORE INTO sessions VALUES (?,?,?,?)", (m.user_id, m.session_id, m.time_stamp.isoformat(), now)
            )
            conn.execute(
                "INSERT OR IGNORE INTO messages (id,user_id,session_id,turn_index,role,speaker,content,compressed,"
                "time_stamp,tokens_original,tokens_compressed,state,created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (m.id, m.user_id, m.session_id, m.turn_index, m.role, m.speaker, m.content, m.compressed,
                 m.time_stamp.isoformat(), m.tokens_original, m.tokens_compressed, "received", now),
            )

    def set_message_state(self, conn: sqlite3.Connection, user_id: str, ids: list[str], state: str) -> None:
        conn.executemany("UPDATE messages SET state=? WHERE user_id=? AND id=?", [(state, user_id, i) for i in ids])

    def messages(self, user_id: str, session_id: str | None = None) -> list[dict[str, Any]]:
        if session_id is None:
            rows = self._query("SELECT * FROM messages WHERE user_id=? ORDER BY time_stamp, turn_index", (user_id,))
        else:
            rows = self._query(
                "SELECT * FROM messages WHERE user_id=? AND session_id=? ORDER BY turn_index", (user_id, session_id)
            )
        return [dict(r) for r in rows]

    def sessions(self, user_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._query("SELECT * FROM sessions WHERE user_id=? ORDER BY time_stamp", (user_id,))]

    def users(self) -> list[str]:
        return [r["user_id"] for r in self._query("SELECT DISTINCT user_id FROM messages ORDER BY user_id")]

    # --- persisted buffers ------------------------------------------------------------------------
    def buffer_put(self, conn: sqlite3.Connection, user_id: str, kind: str, key: str, payload: dict[str, Any]) -> None:
        seq = conn.execute(
            "SELECT COALESCE(MAX(seq)+1,0) FROM buffers WHERE user_id=? AND kind=?", (user_id, kind)
        ).fetchone()[0]
        conn.execute(
            "INSERT OR IGNORE INTO buffers VALUES (?,?,?,?,?)", (user_id, kind, key, json.dumps(payload), seq)
        )

    def buffer_items(self, user_id: str, kind: str) -> list[tuple[str, dict[str, Any]]]:
        rows = self._query("SELECT item_key, payload FROM buffers WHERE user_id=? AND kind=? ORDER BY seq", (user_id, kind))
        return [(r["item_key"], json.loads(r["payload"])) for r in rows]

    def buffer_has(self, user_id: str, kind: str, key: str) -> bool:
        return bool(self._query("SELECT 1 FROM buffers WHERE user_id=? AND kind=? AND item_key=?", (user_id, kind, key)))

    def buffer_replace(self, conn: sqlite3.Connection, user_id: str, kind: str, key: str, payload: dict[str, Any]) -> None:
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

    def mark_seen(self, conn: sqlite3.Connection, user_id: str, ids: list[str]) -> None:
        conn.executemany("INSERT OR IGNORE INTO seen_messages VALUES (?,?)", [(user_id, i) for i in ids])

    def buffer_remove(self, conn: sqlite3.Connection, user_id: str, kind: str, keys: list[str]) -> None:
        conn.executemany("DELETE FROM buffers WHERE user_id=? AND kind=? AND item_key=?", [(user_id, kind, k) for k in keys])

    # --- counters ---------------------------------------------------------------------------------
    def next_counter(self, conn: sqlite3.Connection, scope: str, name: str) -> int:
        """Increment and return a per-scope counter (topic ids are unique per user, never global)."""
        conn.execute(
            "INSERT INTO counters VALUES (?,?,1) ON CONFLICT(scope,name) DO UPDATE SET value=value+1", (scope, name)
        )
        return int(conn.execute("SELECT value FROM counters WHERE scope=? AND name=?", (scope, name)).fetchone()[0])

    def add_to_counter(self, conn: sqlite3.Connection, scope: str, name: str, amount: float) -> None:
        conn.execute(
            "INSERT INTO counters VALUES (?,?,?) ON CONFLICT(scope,name) DO UPDATE SET value=value+excluded.value",
            (scope, name, amount),
        )

    def set_counter(self, conn: sqlite3.Connection, scope: str, name: str, value: float) -> None:
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
                        error: str | None = None) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO llm_calls (user_id,session_id,purpose,model,prompt_tokens,completion_tokens,latency_s,"
                "outcome,error,created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (user_id, session_id, purpose, model, prompt_tokens, completion_tokens, latency_s, outcome, error, time.time()),
            )

    def llm_totals(self, user_id: str | None = None, session_id: str | None = None) -> dict[str, float]:
        """Calls, prompt and completion tokens and latency of LLM calls, for one user and/or session or all."""
        clauses = [(c, v) for c, v in (("user_id=?", user_id), ("session_id=?", session_id)) if v is not None]
        where = f"WHERE {' AND '.join(c for c, _ in clauses)}" if clauses else ""
        args: tuple[Any, ...] = tuple(v for _, v in clauses)
        row = self._query(
            "SELECT COUNT(*) AS calls, COALESCE(SUM(prompt_tokens),0) AS prompt_tokens, "
            f"COALESCE(SUM(completion_tokens),0) AS completion_tokens, COALESCE(SUM(latency_s),0) AS latency_s FROM llm_calls {where}",
            args,
        )[0]
        return {k: float(row[k]) for k in row.keys()}

    def record_failure(self, user_id: str, purpose: str, payload: dict[str, Any], raw_reply: str | None, reason: str) -> int:
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO failed_batches (user_id,purpose,payload,raw_reply,reason,created_at) VALUES (?,?,?,?,?,?)",
                (user_id, purpose, json.dumps(payload), raw_reply, reason, time.time()),
            )
            return int(cur.lastrowid or 0)

    def failures(self, user_id: str | None = None, include_resolved: bool = False) -> list[dict[str, Any]]:
        clauses = [] if include_resolved else ["resolved_at IS NULL"]
        args: tuple[Any, ...] = ()
        if user_id is not None:
            clauses.append("user_id=?")
            args = (user_id,)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return [dict(r) for r in self._query(f"SELECT * FROM failed_batches {where} ORDER BY id", args)]

    def resolve_failure(self, conn: sqlite3.Connection, failure_id: int) -> None:
        conn.execute("UPDATE failed_batches SET resolved_at=? WHERE id=?", (time.time(), failure_id))

    # --- entry changes ----------------------------------------------------------------------------
    def record_change(self, conn: sqlite3.Connection, entry_id: str, user_id: str, action: str,
                      old_text: str | None, new_text: str | None, reason: str | None) -> None:
        conn.execute(
            "INSERT INTO entry_history (entry_id,user_id,action,old_text,new_text,reason,created_at) VALUES (?,?,?,?,?,?,?)",
            (entry_id, user_id, action, old_text, new_text, reason, time.time()),
        )

    def entry_history(self, entry_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._query("SELECT * FROM entry_history WHERE entry_id=? ORDER BY id", (entry_id,))]

    def user_history(self, user_id: str) -> list[dict[str, Any]]:
        """Every change to any entry of ``user_id``, in the order they were made."""
        return [dict(r) for r in self._query("SELECT * FROM entry_history WHERE user_id=? ORDER BY id", (user_id,))]

    # --- offline-update queue ---------------------------------------------------------------------
    def put_update_candidates(self, conn: sqlite3.Connection, entry_id: str, user_id: str, candidates: list[dict[str, Any]]) -> None:
        conn.execute(
            "INSERT INTO update_queue VALUES (?,?,?,?) ON CONFLICT(entry_id) DO UPDATE SET candidates=excluded.candidates,"
            " built_at=excluded.built_at",
            (entry_id, user_id, json.dumps(candidates), time.time()),
        )

    def update_queue(self, user_id: str) -> list[tuple[str, list[dict[str, Any]]]]:
        rows = self._query("SELECT entry_id, candidates FROM update_queue WHERE user_id=? ORDER BY entry_id", (user_id,))
        return [(r["entry_id"], json.loads(r["candidates"])) for r in rows]

    def drop_from_update_queue(self, conn: sqlite3.Connection, entry_ids: list[str]) -> None:
        conn.executemany("DELETE FROM update_queue WHERE entry_id=?", [(i,) for i in entry_ids])

    def delete_user(self, conn: sqlite3.Connection, user_id: str) -> None:
        for table in ("messages", "sessions", "buffers", "update_queue", "seen_messages"):
            conn.execute(f"DELETE FROM {table} WHERE user_id=?", (user_id,))
        conn.execute("DELETE FROM counters WHERE scope=?", (user_id,))

    def reset(self) -> None:
        with self.transaction() as conn:
            for table in ("sessions", "messages", "buffers", "counters", "llm_calls", "failed_batches",
                          "entry_history", "update_queue", "seen_messages"):
                conn.execute(f"DELETE FROM {table}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
