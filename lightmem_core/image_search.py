"""Image search beside text search (``multimodal_embedder``): the query through the CLIP text tower
against the ``image`` vectors, fused with the text results by reciprocal rank fusion.

The fusion happens here and not inside the engine because the two lists come from different query
vectors of different models (the text embedder's and CLIP's), whichever text strategy ran first.
When the user has no image entries the text results come back unchanged.
"""

from __future__ import annotations

from typing import Any

from lightmem_core.embedders.base import ImageEmbedder
from lightmem_core.stores.base import MemoryStore
from lightmem_core.stores.fusion import Hits, fuse


def with_images(store: MemoryStore, image_embedder: ImageEmbedder, user_id: str, query: str, text_hits: Hits,
                limit: int, filters: dict[str, Any] | None = None) -> Hits:
    """``text_hits`` fused with the image entries nearest to ``query`` in CLIP's space."""
    vector = image_embedder.embed([query])[0]
    image_hits = store.search_images(user_id, vector, limit, filters)
    if not image_hits:
        return text_hits
    return fuse([text_hits, image_hits], limit, ties_by_id=True)
