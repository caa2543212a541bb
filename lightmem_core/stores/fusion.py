"""Reciprocal rank fusion of ranked hit lists, in Python, with the constant Qdrant fuses hybrid search with.

Used where rankings come from separate searches (a speaker's entries beside all entries, a summary's
topics beside plain entry search), so that their fused scores read like the engine's own hybrid scores.
"""

from __future__ import annotations

from lightmem_core.models import MemoryEntry

RRF_K = 2  # Qdrant's default constant for reciprocal rank fusion (the server and local mode use it too)
Hits = list[tuple[MemoryEntry, float]]


def fuse(rankings: list[Hits], limit: int | None = None, k: int = RRF_K, ties_by_id: bool = False) -> Hits:
    """Each entry scores the sum of 1 / (k + rank) over the rankings it is in (rank from 1); the ``limit``
    best (all when None), ties in the order the entries were first seen (by entry id with ``ties_by_id``)."""
    scores: dict[str, float] = {}
    entries: dict[str, MemoryEntry] = {}
    for ranking in rankings:
        for rank, (entry, _) in enumerate(ranking, start=1):
            scores[entry.id] = scores.get(entry.id, 0.0) + 1.0 / (k + rank)
            entries.setdefault(entry.id, entry)
    best = sorted(scores, key=(lambda i: (-scores[i], i)) if ties_by_id else (lambda i: -scores[i]))[:limit]
    return [(entries[i], scores[i]) for i in best]
