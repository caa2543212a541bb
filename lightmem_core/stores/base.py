"""The store role: memory entries with a dense and a sparse vector, always scoped by user."""

from __future__ import annotations

from typing import Any, Literal, Protocol

from lightmem_core.embedders.bm25 import SparseVec
from lightmem_core.models import MemoryEntry

SearchStrategy = Literal["embedding", "context", "hybrid"]


class MemoryStore(Protocol):
    """Persistent entries; every read and delete is filtered by ``user_id``."""

    def upsert(
        self, entries: list[MemoryEntry], dense: list[list[float]] | None, sparse: list[SparseVec] | None
    ) -> None: ...

    def get(self, entry_ids: list[str]) -> list[MemoryEntry]: ...

    def list_entries(self, user_id: str, since_ts: float | None = None) -> list[MemoryEntry]: ...

    def dense_vectors(self, entry_ids: list[str]) -> dict[str, list[float]]: ...

    def delete(self, entry_ids: list[str]) -> None: ...

    def delete_user(self, user_id: str) -> None: ...

    def search(
        self,
        user_id: str,
        strategy: SearchStrategy,
        dense: list[float] | None,
        sparse: SparseVec | None,
        limit: int,
        filters: dict[str, Any] | None = None,
    ) -> list[tuple[MemoryEntry, float]]: ...

    def count(self, user_id: str | None = None) -> int: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...
