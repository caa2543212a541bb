"""Topic summaries that take part in retrieval (LightMem's ``summary_retriever``).

``text_summary`` has the extraction call write one summary per topic, kept on each of the topic's
entries. With ``summary_retriever`` those summaries are also indexed in a collection of their own (one
point per user and topic, with the same dense and BM25 vectors as entries), and retrieval goes through
them: search the summaries first, then only the entries of the best topics. LightMem's point: a few
hundred summaries are searched instead of every entry, and a question about a conversation's subject
finds the entries of that conversation even when no single entry says it in the question's words.

A summary point is stored as a ``MemoryEntry`` record so both store engines keep it unchanged: its
``memory`` is the summary, ``topic_id`` and ``session_id`` are the topic's, ``source_ids`` are the
original messages behind the topic's entries, and its id is derived from the user and the topic, so
storing a batch again rewrites the same point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from lightmem_core.embedders.base import Embedder
from lightmem_core.embedders.bm25 import BM25Encoder, SparseVec
from lightmem_core.models import MemoryEntry, stable_id
from lightmem_core.stores.base import MemoryStore, SearchStrategy
from lightmem_core.stores.fusion import fuse
from lightmem_core.stores.indexing import index_entries

Hits = list[tuple[MemoryEntry, float]]
SummaryRetrieval = Literal["summaries_first", "fused"]


def summary_id(user_id: str, topic_id: int) -> str:
    """One summary point per user and topic (topic ids are unique per user)."""
    return stable_id("summary", user_id, str(topic_id))


def summary_records(entries: list[MemoryEntry]) -> list[MemoryEntry]:
    """One record per (user, topic) among ``entries`` that carry a summary, in first-seen order."""
    grouped: dict[tuple[str, int], list[MemoryEntry]] = {}
    for entry in entries:
        if entry.summary and entry.summary.strip():
            grouped.setdefault((entry.user_id, entry.topic_id), []).append(entry)
    records = []
    for (user_id, topic_id), topic in grouped.items():
        sources = list(dict.fromkeys(i for e in topic for i in e.source_ids))
        records.append(MemoryEntry(
            id=summary_id(user_id, topic_id), user_id=user_id, memory=(topic[0].summary or "").strip(),
            time_stamp=max(e.time_stamp for e in topic), topic_id=topic_id, session_id=topic[0].session_id,
            source_ids=sources, created_at=min(e.created_at for e in topic),
        ))
    return records


@dataclass(frozen=True)
class TopicSummaries:
    """The summary collection and how retrieval uses it (``summary_retriever.configs``)."""

    store: MemoryStore
    top_topics: int = 3
    retrieval: SummaryRetrieval = "summaries_first"

    def index(self, entries: list[MemoryEntry], embedder: Embedder | None, bm25: BM25Encoder | None) -> int:
        """Embed and upsert the summaries of the topics among ``entries``; how many were written."""
        records = summary_records(entries)
        index_entries(records, self.store, embedder, bm25)
        return len(records)

    def best_topics(self, user_id: str, strategy: SearchStrategy, dense: list[float] | None,
                    sparse: SparseVec | None) -> list[int]:
        """The topic ids of the user's ``top_topics`` summaries nearest to the query, best first."""
        found = self.store.search(user_id, strategy, dense, sparse, self.top_topics)
        return [s.topic_id for s, _ in found]

    def search(self, entries: MemoryStore, user_id: str, strategy: SearchStrategy, dense: list[float] | None,
               sparse: SparseVec | None, limit: int, filters: dict[str, Any] | None = None) -> Hits:
        """Entries through the summaries: those of the best topics first (``summaries_first``) or fused
        with plain entry search (``fused``). A caller's own ``topic_id`` filter, or a user without
        summaries, gets plain entry search."""
        if filters and "topic_id" in filters:
            return entries.search(user_id, strategy, dense, sparse, limit, filters)
        topics = self.best_topics(user_id, strategy, dense, sparse)
        if not topics:
            return entries.search(user_id, strategy, dense, sparse, limit, filters)
        within = entries.search(user_id, strategy, dense, sparse, limit, {**(filters or {}), "topic_id": {"in": topics}})
        if self.retrieval == "summaries_first" and len(within) >= limit:
            return within
        plain = entries.search(user_id, strategy, dense, sparse, limit, filters)
        if self.retrieval == "fused":
            return fuse([within, plain], limit)
        taken = {e.id for e, _ in within}
        return within + [(e, s) for e, s in plain if e.id not in taken][: limit - len(within)]

    def report(self, user_id: str, entries: list[MemoryEntry]) -> dict[str, Any]:
        """The user's topic summaries in LightMem's ``summarize()`` form (oldest first), each with the
        time range and the number of ``entries`` of its topic."""
        by_topic: dict[int, list[MemoryEntry]] = {}
        for entry in entries:
            by_topic.setdefault(entry.topic_id, []).append(entry)
        items: list[dict[str, Any]] = []
        for point in self.store.list_entries(user_id):
            topic = by_topic.get(point.topic_id, [])
            start = min((e.time_stamp for e in topic), default=point.time_stamp)
            items.append({"summary": point.memory, "summary_id": point.id, "topic_id": point.topic_id,
                          "session_id": point.session_id, "entry_count": len(topic),
                          "time_range": {"start": start.isoformat(), "end": point.time_stamp.isoformat()}})
        return {"summaries": items, "total_summaries": len(items), "total_entries": sum(i["entry_count"] for i in items),
                "time_range": {"start": items[0]["time_range"]["start"], "end": items[-1]["time_range"]["end"]}
                if items else None}

    def delete_user(self, user_id: str) -> None:
        self.store.delete_user(user_id)
