"""Image search beside text search (``multimodal_embedder``): the query through the CLIP text tower
against the ``image`` vectors, fused with the text results by reciprocal rank fusion.

The fusion happens here and not inside the engine because the two lists come from different query
vectors of different models (the text embedder's and CLIP's), whichever text strategy ran first.
When the user has no image entries the text results come back unchanged.
"""

from __future__ import annotations

from typing import Any

from lightmem_core.embedders.base import ImageEmbedder
from lightmem_core.models import MemoryEntry
from lightmem_core.stores.base import MemoryStore

RRF_K = 2  # the constant of Qdrant's own RRF fusion, so that fused scores read like hybrid search's

Hits = list[tuple[MemoryEntry, float]]


def rrf(rankings: list[Hits], limit: int, k: int = RRF_K) -> Hits:
    """Reciprocal rank fusion: each entry scores the sum of 1 / (k + rank) over the lists it is in."""
    scores: dict[str, float] = {}
    entries: dict[str, MemoryEntry] = {}
    for ranking in rankings:
        for rank, (entry, _) in enumerate(ranking, start=1):
            scores[entry.id] = scores.get(entry.id, 0.0) + 1.0 / (k + rank)
            entries.setdefault(entry.id, entry)
    best = sorted(scores, key=lambda i: (-scores[i], i))[:limit]
    return [(entries[i], scores[i]) for i in best]


def with_images(store: MemoryStore, image_embedder: ImageEmbedder, user_id: str, query: str, text_hits: Hits,
                limit: int, filters: dict[str, Any] | None = None) -> Hits:
    """``text_hits`` fused with the image entries nearest to ``query`` in CLIP's space."""
    vector = image_embedder.embed([query])[0]
    image_hits = store.search_images(user_id, vector, limit, filters)
    if not image_hits:
        return text_hits
    return rrf([text_hits, image_hits], limit)
