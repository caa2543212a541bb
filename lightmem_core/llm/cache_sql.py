"""The call cache in a SQL table: a SQLite file at ``kv_cache_path`` (processes on one host), or
PostgreSQL (workers on several hosts), through the history's small database layer.

One row per key with the stored reply, its size and its last use; one row of totals (entries,
bytes, replays) kept in the same transactions, so the bound is checked on every ``put`` without
counting the table. Past ``max_entries`` or ``max_bytes`` the least recently used
rows go, down to nine tenths of the bound (LRU by last use, marked on every hit).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

from lightmem_core.errors import TransientError
from lightmem_core.history.base import Connection, Database
from lightmem_core.llm.cache import CachedReply, CacheStats

SCHEMA = """
CREATE TABLE IF NOT EXISTS llm_cache (
    key TEXT PRIMARY KEY, reply TEXT NOT NULL, size INTEGER NOT NULL, created_at REAL NOT NULL,
    last_used REAL NOT NULL);
CREATE INDEX IF NOT EXISTS llm_cache_by_use ON llm_cache (last_used);
CREATE TABLE IF NOT EXISTS llm_cache_totals (
    id INTEGER PRIMARY KEY, entries INTEGER NOT NULL, bytes INTEGER NOT NULL, replays INTEGER NOT NULL);
INSERT INTO llm_cache_totals VALUES (0, 0, 0, 0) ON CONFLICT DO NOTHING
"""
_EVICT_TO = 0.9  # an eviction makes room for a while, instead of one row per put


class SQLReplyCache:
    """``ReplyCache`` on a ``SQLiteDatabase`` or a ``PostgresDatabase``; safe across threads and processes.

    Args:
        database: where the table lives (created on open).
        max_entries: the most replies kept.
        max_bytes: the most bytes of stored replies kept.
    """

    def __init__(self, database: Database, max_entries: int = 100_000, max_bytes: int = 512 * 2**20) -> None:
        self._db = database
        self.where = database.where
        self.max_entries, self.max_bytes = max_entries, max_bytes
        try:
            with self._transaction() as conn:
                database.lock(conn, "lightmem:llm_cache:schema")
                for statement in database.schema(SCHEMA).split(";"):
                    if statement.strip():
                        conn.execute(statement)
        except BaseException:
            database.close()
            raise

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """SQLite's "database is locked" (past its 30 s wait) as ``TransientError`` (PostgreSQL's are already)."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            raise TransientError(f"call cache {self.where}: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self._translated(), self._db.transaction() as conn:
            yield conn

    def get(self, key: str) -> CachedReply | None:
        with self._transaction() as conn:
            rows = conn.execute("UPDATE llm_cache SET last_used=? WHERE key=? RETURNING reply", (time.time(), key))
            if rows:
                conn.execute("UPDATE llm_cache_totals SET replays=replays+1 WHERE id=0")
        return CachedReply.loads(rows[0]["reply"]) if rows else None

    def put(self, key: str, reply: CachedReply) -> None:
        raw = reply.dumps()
        size = len(raw.encode("utf-8"))
        now = time.time()
        with self._transaction() as conn:
            self._db.lock(conn, "lightmem:llm_cache:totals")
            added = conn.execute("INSERT INTO llm_cache VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING RETURNING size",
                                 (key, raw, size, now, now))
            if not added:
                return
            totals = conn.execute("UPDATE llm_cache_totals SET entries=entries+1, bytes=bytes+? WHERE id=0"
                                  " RETURNING entries, bytes", (size,))[0]
            if totals["entries"] > self.max_entries or totals["bytes"] > self.max_bytes:
                self._evict(conn, int(totals["entries"]), int(totals["bytes"]))

    def _evict(self, conn: Connection, entries: int, size: int) -> None:
        """Drop the least recently used rows until both totals are within nine tenths of their bounds."""
        keep_entries, keep_bytes = int(self.max_entries * _EVICT_TO), int(self.max_bytes * _EVICT_TO)
        while entries > keep_entries or size > keep_bytes:
            chunk = max(1, entries - keep_entries, entries // 10 if size > keep_bytes else 0)
            gone = conn.execute("DELETE FROM llm_cache WHERE key IN (SELECT key FROM llm_cache ORDER BY last_used, key"
                                " LIMIT ?) RETURNING size", (chunk,))
            if not gone:
                break
            entries -= len(gone)
            size -= sum(int(r["size"]) for r in gone)
            conn.execute("UPDATE llm_cache_totals SET entries=entries-?, bytes=bytes-? WHERE id=0",
                         (len(gone), sum(int(r["size"]) for r in gone)))

    def delete(self, key: str) -> None:
        with self._transaction() as conn:
            self._db.lock(conn, "lightmem:llm_cache:totals")
            gone = conn.execute("DELETE FROM llm_cache WHERE key=? RETURNING size", (key,))
            if gone:
                conn.execute("UPDATE llm_cache_totals SET entries=entries-1, bytes=bytes-? WHERE id=0",
                             (int(gone[0]["size"]),))

    def stats(self) -> CacheStats:
        with self._transaction() as conn:
            totals = conn.execute("SELECT entries, bytes, replays FROM llm_cache_totals WHERE id=0")[0]
        return CacheStats(self.where, int(totals["entries"]), int(totals["bytes"]), int(totals["replays"]),
                          self.max_entries, self.max_bytes)

    def clear(self) -> int:
        with self._transaction() as conn:
            self._db.lock(conn, "lightmem:llm_cache:totals")
            count = len(conn.execute("DELETE FROM llm_cache RETURNING size"))
            conn.execute("UPDATE llm_cache_totals SET entries=0, bytes=0, replays=0 WHERE id=0")
        return count

    def close(self) -> None:
        self._db.close()
