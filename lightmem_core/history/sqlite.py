"""The history in a SQLite file: one connection per store, serialised by a lock; WAL mode so other
processes can read while one writes. Only processes on one host (or one shared disk) can share it."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightmem_core.history.base import Connection, Row


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


class SQLiteConnection:
    """``sqlite3.Connection`` with rows as dicts (the shared SQL is SQLite's own)."""

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return list(self.raw.execute(sql, tuple(args)).fetchall())

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.raw.executemany(sql, rows)


class SQLiteDatabase:
    """A SQLite file (or ``:memory:``). Write transactions start with ``BEGIN IMMEDIATE``, so they
    run one at a time across processes and ``lock`` has nothing left to do."""

    def __init__(self, path: str) -> None:
        self.path = self.where = path
        if path != ":memory:":
            Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        raw = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
        raw.row_factory = _dict_row
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("PRAGMA synchronous=NORMAL")
        self._conn = SQLiteConnection(raw)
        self._lock = threading.RLock()
        self._depth = 0  # nesting of transaction() in the thread that holds the lock

    @contextmanager
    def transaction(self) -> Iterator[SQLiteConnection]:
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

    @contextmanager
    def connection(self) -> Iterator[SQLiteConnection]:
        with self._lock:
            yield self._conn

    def lock(self, conn: Connection, key: str) -> None:
        """Nothing: ``BEGIN IMMEDIATE`` already holds the database's one write lock."""

    def schema(self, ddl: str) -> str:
        return ddl

    def primary_key(self, conn: Connection, table: str) -> list[str]:
        columns = [r for r in conn.execute(f"PRAGMA table_info({table})") if r["pk"]]
        return [r["name"] for r in sorted(columns, key=lambda r: r["pk"])]

    def columns(self, conn: Connection, table: str) -> list[str]:
        return [r["name"] for r in conn.execute(f"PRAGMA table_info({table})")]

    def close(self) -> None:
        with self._lock:
            self._conn.raw.close()
