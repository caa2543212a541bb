"""Graph retrieval: the entities a query names, their neighbourhood, and the entries behind it, fused
with the normal search results.

Model-free: every run of up to ``MAX_NAME_WORDS`` words of the query, normalised like node names, is
looked up among the user's names and aliases (one indexed query), so the cost does not grow with the
graph. The entries linked to the edges found are ranked by how many of the query's words the path to
their edge holds (``path_overlaps``), then by distance, then newest first; both lists are fused by
reciprocal rank (RRF, k = 60), as the hybrid search fuses dense and BM25.
"""

from __future__ import annotations

import re

from lightmem_core.graph.model import MAX_NAME_WORDS, normalise_name
from lightmem_core.graph.read import Edge, neighbourhood, nodes_named
from lightmem_core.history import HistoryStore
from lightmem_core.models import MemoryEntry
from lightmem_core.stores.base import MemoryStore

RRF_K = 60
_WORD = re.compile(r"[\w'’-]+")


def query_names(query: str) -> list[str]:
    """The normalised word runs of ``query`` that could be an entity's name."""
    words = _WORD.findall(query)
    runs: dict[str, None] = {}
    for size in range(1, MAX_NAME_WORDS + 1):
        for start in range(len(words) - size + 1):
            name = normalise_name(" ".join(words[start : start + size]))
            if name:
                runs[name] = None
    return list(runs)


def _stems(text: str) -> set[str]:
    """Crude word stems (the first four letters) so that "live" meets "lives in"."""
    return {w[:4] for w in normalise_name(text).split() if len(w) > 2}


def _words(edge: Edge) -> set[str]:
    return _stems(f"{edge.subject} {edge.relation} {edge.object}")


def path_overlaps(edges: list[Edge], query: str) -> dict[str, int]:
    """For each edge, how many of the query's words the best path to it holds (its own words, and for an
    edge two hops out, those of the one-hop edge it hangs on): "the sister of Alice ... live" scores the
    path Alice -sister-> Bella -lives in-> Lisbon above Alice's own "lives in"."""
    asked = _stems(query)
    first = [e for e in edges if e.hop == 1]
    scores: dict[str, int] = {}
    for edge in edges:
        own = _words(edge)
        via = [own | _words(e) for e in first if e.hop < edge.hop and set(e.ends) & set(edge.ends)]
        scores[edge.id] = max(len(asked & words) for words in [own, *via])
    return scores


def ranked_entry_ids(edges: list[Edge], query: str) -> list[str]:
    """The entries behind ``edges``, best first (see the module's doc)."""
    overlaps = path_overlaps(edges, query)
    best: dict[str, tuple[int, int, float]] = {}
    for edge in edges:
        key = (-overlaps[edge.id], edge.hop, -edge.observed_ts)
        for entry_id in edge.entry_ids:
            best[entry_id] = min(best.get(entry_id, key), key)
    return sorted(best, key=lambda e: (best[e], e))


def graph_entry_ids(history: HistoryStore, user_id: str, query: str, hops: int, max_edges: int = 200) -> list[str]:
    """The ids of ``user_id``'s entries linked to the edges within ``hops`` of the entities ``query`` names."""
    seeds = nodes_named(history, user_id, query_names(query))
    if not seeds:
        return []
    return ranked_entry_ids(neighbourhood(history, user_id, list(seeds.values()), hops, max_edges), query)


def fuse(normal: list[str], graph: list[str], limit: int) -> list[tuple[str, float]]:
    """Reciprocal rank fusion of two ranked id lists: the ``limit`` best ids with their fused scores."""
    scores: dict[str, float] = {}
    for ranked in (normal, graph):
        for rank, item in enumerate(ranked, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (RRF_K + rank)
    first_seen = {item: i for i, item in enumerate(scores)}  # a tie goes to the normal results' order
    return sorted(scores.items(), key=lambda kv: (-kv[1], first_seen[kv[0]]))[:limit]


def with_graph(store: MemoryStore, history: HistoryStore, user_id: str, query: str,
               hits: list[tuple[MemoryEntry, float]], limit: int, hops: int) -> list[tuple[MemoryEntry, float]]:
    """``hits`` fused with the entries linked through the entities ``query`` names (RRF scores); ``hits``
    unchanged when the query names no entity of the user's graph."""
    linked = graph_entry_ids(history, user_id, query, hops)[: 2 * limit]
    if not linked:
        return hits
    found = {e.id: e for e, _ in hits}
    missing = [i for i in linked if i not in found]
    found.update((e.id, e) for e in store.get(missing) if e.user_id == user_id)  # gone after an update: skipped
    ranked = fuse([e.id for e, _ in hits], [i for i in linked if i in found], limit)
    return [(found[i], score) for i, score in ranked]
