"""What ``HistoryStore`` needs from a database: connections that speak one SQL, and transactions.

Statements are written once, in the SQL that SQLite and PostgreSQL share (``ON CONFLICT``,
``RETURNING``), with ``?`` placeholders; a backend translates what differs (placeholders, column
types) and returns rows as dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

Row = dict[str, Any]


class Connection(Protocol):
    """One connection, inside a transaction or in autocommit; what ``HistoryStore.transaction()`` yields."""

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """Run one statement; its rows (none for a statement without ``RETURNING``)."""

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once per row of arguments."""


class Database(Protocol):
    """A SQLite file or a PostgreSQL server, as the history store uses it."""

    where: str  # for messages: the file, or the server and database (never a password)

    def transaction(self) -> AbstractContextManager[Connection]:
        """Statements inside commit together or not at all. A transaction opened in a thread that has one
        open joins it, and every read of that thread sees its writes."""

    def connection(self) -> AbstractContextManager[Connection]:
        """The thread's open transaction if there is one, else a connection in autocommit."""

    def lock(self, conn: Connection, key: str) -> None:
        """Hold ``key`` until ``conn``'s transaction ends: other transactions that ask for it wait."""

    def schema(self, ddl: str) -> str:
        """``ddl`` (written for SQLite) in this database's dialect."""

    def primary_key(self, conn: Connection, table: str) -> list[str]:
        """The primary-key columns of ``table`` in key order; ``[]`` when there is no such table."""

    def columns(self, conn: Connection, table: str) -> list[str]:
        """The columns of ``table``; ``[]`` when there is no such table."""

    def close(self) -> None:
        """Close every connection."""
