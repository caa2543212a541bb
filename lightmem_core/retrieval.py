"""Retrieval: the query's vectors by strategy, then the store's filtered search.

``LightMemory.retrieve``, the store worker's search desk and a producer searching a Qdrant server all
search through a ``Retriever``. ``retrieve`` adds to each hit the original messages it comes from (from
the history store), so a caller sees what was said, by whom and when, beside the compressed entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

from lightmem_core.components import Components
from lightmem_core.config import Strategy
from lightmem_core.embedders.base import Embedder, ImageEmbedder
from lightmem_core.embedders.bm25 import BM25Encoder, SparseVec
from lightmem_core.errors import InvalidInput
from lightmem_core.graph.search import with_graph
from lightmem_core.history import HistoryStore
from lightmem_core.image_search import with_images
from lightmem_core.models import MemoryEntry, RetrievedMemory, SourceMessage
from lightmem_core.speakers import SpeakerNames
from lightmem_core.stores.base import MemoryStore
from lightmem_core.summaries import TopicSummaries

QueryVectors = tuple[list[float] | None, SparseVec | None]
STRATEGIES: tuple[str, ...] = get_args(Strategy)


@dataclass(frozen=True)
class Retriever:
    """What a search needs: the store, the query encoders and the configured strategy. Thread-safe as
    far as its parts are: both stores are, and a reader thread may bring its own embedder."""

    store: MemoryStore
    embedder: Embedder | None
    bm25: BM25Encoder | None
    strategy: Strategy
    history: HistoryStore | None = None  # where the original messages are; None: results without them
    image_embedder: ImageEmbedder | None = None  # multimodal_embedder: image entries fused into the results
    summaries: TopicSummaries | None = None  # summary_retriever: search the topic summaries first
    graph: bool = False  # graph_mem: retrieve(graph_hops=1|2) adds the entries linked through named entities
    speakers: SpeakerNames | None = None  # speaker_match: a query naming one speaker also searches their entries

    @classmethod
    def of(cls, c: Components, strategy: Strategy, embedder: Embedder | None = None, graph: bool = False) -> Retriever:
        return cls(store=c.store, embedder=embedder or c.embedder, bm25=c.bm25, strategy=strategy, history=c.history,
                   image_embedder=c.image_embedder,
                   summaries=c.summaries, graph=graph, speakers=c.speakers)

    def checked_strategy(self, strategy: str | None) -> Strategy:
        """``strategy`` (default: the configured one) if this configuration indexes what it searches."""
        chosen = strategy or self.strategy
        if chosen not in STRATEGIES:
            raise InvalidInput(f"strategy: expected one of {', '.join(STRATEGIES)}, got {chosen!r}")
        if chosen in ("embedding", "hybrid") and self.embedder is None:
            raise InvalidInput(f"strategy {chosen!r} needs dense vectors, which this configuration does not index")
        if chosen in ("context", "hybrid") and self.bm25 is None:
            raise InvalidInput(f"strategy {chosen!r} needs BM25 vectors, which this configuration does not index")
        return chosen  # type: ignore[return-value]  # checked against Strategy's values above

    def query_vectors(self, strategy: Strategy, query: str) -> QueryVectors:
        """The dense and sparse vectors that ``strategy`` searches with (model work: no lock needed)."""
        dense = self.embedder.embed([query])[0] if strategy in ("embedding", "hybrid") and self.embedder else None
        sparse = self.bm25.encode_query(query) if strategy in ("context", "hybrid") and self.bm25 else None
        return dense, sparse

    def search(self, user_id: str, query: str, limit: int, filters: dict[str, Any] | None = None,
               strategy: str | None = None) -> list[tuple[MemoryEntry, float]]:
        """The ``limit`` entries of ``user_id`` nearest to ``query`` (dense, BM25 or both fused)."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("query: expected a non-empty string")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInput(f"limit: expected a positive integer, got {limit!r}")
        chosen = self.checked_strategy(strategy)
        dense, sparse = self.query_vectors(chosen, query)

        def run(depth: int, where: dict[str, Any] | None) -> list[tuple[MemoryEntry, float]]:
            if self.summaries is not None:
                return self.summaries.search(self.store, user_id, chosen, dense, sparse, depth, where)
            return self.store.search(user_id, chosen, dense, sparse, depth, where)

        if self.speakers is not None:
            return self.speakers.search(user_id, query, limit, filters, run)
        return run(limit, filters)

    def checked_hops(self, graph_hops: int, filters: dict[str, Any] | None) -> int:
        """``graph_hops`` (0: no graph) if this configuration keeps a graph to walk."""
        if isinstance(graph_hops, bool) or graph_hops not in (0, 1, 2):
            raise InvalidInput(f"graph_hops: expected 0, 1 or 2, got {graph_hops!r}")
        if graph_hops and (not self.graph or self.history is None):
            raise InvalidInput("graph_hops needs graph_mem: true (the graph is built by the extraction call)")
        if graph_hops and filters:
            raise InvalidInput("graph_hops cannot be combined with filters (graph entries are not filtered yet)")
        return graph_hops

    def retrieve(self, user_id: str, query: str, limit: int, filters: dict[str, Any] | None = None,
                 strategy: str | None = None, graph_hops: int = 0) -> list[RetrievedMemory]:
        """``search``'s hits (fused with image search under ``multimodal_embedder``) as results that carry
        their original messages."""
        hops = self.checked_hops(graph_hops, filters)
        hits = self.search(user_id, query, limit, filters, strategy)
        if hops and self.history is not None:
            hits = with_graph(self.store, self.history, user_id, query, hits, limit, hops)
        if self.image_embedder is not None:
            hits = with_images(self.store, self.image_embedder, user_id, query, hits, limit, filters)
        originals = (self.history.messages_by_id(user_id, [i for e, _ in hits for i in e.source_ids])
                     if self.history is not None and hits else {})
        return [RetrievedMemory(id=e.id, score=s, memory=e.memory, time_stamp=e.time_stamp, weekday=e.weekday, entry=e,
                                sources=[_source(originals[i]) for i in e.source_ids if i in originals])
                for e, s in hits]


def _source(row: dict[str, Any]) -> SourceMessage:
    return SourceMessage(id=row["id"], session_id=row["session_id"], role=row["role"], speaker=row.get("speaker"),
                         content=row["content"], time_stamp=row["time_stamp"])
