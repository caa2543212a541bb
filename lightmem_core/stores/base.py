"""The store role: memory entries with a dense and a sparse vector (image entries also an ``image`` one),
always scoped by user."""

from __future__ import annotations

from typing import Any, Literal, Protocol

from lightmem_core.embedders.bm25 import SparseVec
from lightmem_core.errors import StoreError
from lightmem_core.models import MemoryEntry

SearchStrategy = Literal["embedding", "context", "hybrid"]


class MemoryStore(Protocol):
    """Persistent entries; every read and delete is filtered by ``user_id``."""

    # Whether entries get the ``plain`` vector (``index_plain_vector``, and the collection has it): hybrid
    # search then fuses it as a third list, with the same query vector as ``dense``.
    plain_vector: bool

    def upsert(
        self, entries: list[MemoryEntry], dense: list[list[float]] | None, sparse: list[SparseVec] | None,
        images: list[list[float]] | None = None, plain: list[list[float]] | None = None,
    ) -> None:
        """Write entries with their vectors; with ``plain_vector``, ``plain`` (default: ``dense``) too."""
        ...

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

    def search_images(
        self, user_id: str, vector: list[float], limit: int, filters: dict[str, Any] | None = None
    ) -> list[tuple[MemoryEntry, float]]:
        """Image entries nearest to a CLIP vector; none when the collection has no ``image`` vector."""
        ...

    def count(self, user_id: str | None = None) -> int: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


def check_images(entries: list[MemoryEntry], images: list[list[float]] | None, image_dims: int | None) -> None:
    """``StoreError`` unless ``images`` (one image vector per entry, or none) fits the collection."""
    if images is None:
        return
    if image_dims is None:
        raise StoreError("image vectors given, but the collection has no 'image' vector (multimodal_embedder is off)")
    if len(images) != len(entries):
        raise StoreError(f"{len(entries)} entries but {len(images)} image vectors")
    if any(len(v) != image_dims for v in images):
        raise StoreError(f"an image vector's size is not the collection's {image_dims}")


def checked_plain(entries: list[MemoryEntry], dense: list[list[float]] | None, plain: list[list[float]] | None,
                  dims: int) -> list[list[float]] | None:
    """The ``plain`` vectors to write: ``plain``, else ``dense`` (an entry whose dense text has no context,
    such as an LLM fact or an updated entry, is ranked by the same vector in both lists, so fusion does not
    favour entries that have two)."""
    chosen = plain if plain is not None else dense
    if chosen is None:
        return None
    if len(chosen) != len(entries):
        raise StoreError(f"{len(entries)} entries but {len(chosen)} plain vectors")
    if any(len(v) != dims for v in chosen):
        raise StoreError(f"a plain vector's size is not the collection's {dims}")
    return chosen


def missing_plain_warning(collection: str) -> str:
    return (f"collection {collection!r} was made without the 'plain' vector (before index_plain_vector): searches "
            "fuse dense and BM25 only; rebuild it to get the plain vector (docs/configuration.md)")
