"""The history store (``store.HistoryStore``) over SQLite (``sqlite``) or PostgreSQL (``postgres``)."""

from lightmem_core.history.base import Connection, Database
from lightmem_core.history.sqlite import SQLiteDatabase
from lightmem_core.history.store import GLOBAL_SCOPE, HistoryStore

__all__ = ["GLOBAL_SCOPE", "Connection", "Database", "HistoryStore", "SQLiteDatabase"]
