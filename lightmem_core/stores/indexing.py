"""Indexing: embed entries (batched) and upsert them with the vectors the index strategy asks for."""

from __future__ import annotations

from lightmem_core.embedders.base import Embedder
from lightmem_core.embedders.bm25 import BM25Encoder
from lightmem_core.models import MemoryEntry
from lightmem_core.stores.base import MemoryStore


def index_entries(
    entries: list[MemoryEntry],
    store: MemoryStore,
    embedder: Embedder | None,
    bm25: BM25Encoder | None,
) -> None:
    """Embed (batched) and upsert entries with the vectors the index strategy asks for."""
    if not entries:
        return
    texts = [e.memory for e in entries]
    dense = embedder.embed(texts) if embedder is not None else None
    sparse = [bm25.encode_document(t) for t in texts] if bm25 is not None else None
    store.upsert(entries, dense, sparse)
