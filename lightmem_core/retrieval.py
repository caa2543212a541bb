"""Retrieval: the query's vectors by ``retrieve_strategy``, then the store's filtered search.

``LightMemory.retrieve`` and the store worker's search task both call ``search``.
"""

from __future__ import annotations

from typing import Any

from lightmem_core.components import Components
from lightmem_core.config import Strategy
from lightmem_core.embedders.bm25 import SparseVec
from lightmem_core.models import MemoryEntry

QueryVectors = tuple[list[float] | None, SparseVec | None]


def query_vectors(c: Components, strategy: Strategy, query: str) -> QueryVectors:
    """The dense and sparse vectors that ``strategy`` searches with (model work: no lock needed)."""
    dense = c.embedder.embed([query])[0] if strategy in ("embedding", "hybrid") and c.embedder else None
    sparse = c.bm25.encode_query(query) if strategy in ("context", "hybrid") and c.bm25 else None
    return dense, sparse


def search(c: Components, strategy: Strategy, user_id: str, vectors: QueryVectors, limit: int,
           filters: dict[str, Any] | None = None) -> list[tuple[MemoryEntry, float]]:
    """The ``limit`` entries of ``user_id`` nearest to the query's vectors (dense, BM25 or both fused)."""
    dense, sparse = vectors
    return c.store.search(user_id, strategy, dense, sparse, limit, filters)
