"""Retrieval through topic summaries (``summary_retriever``) against plain hybrid search, at 10k entries.

The store of ``bench.core`` (10,000 LoCoMo turns with all-MiniLM-L6-v2 vectors, 50 users, Qdrant Edge)
with topics of 8 consecutive entries per user, each with a summary; the summary points (1,250) are
written by the real stage (``TopicSummaries.index``: embedded and upserted into their own collection).
Then 200 LoCoMo questions, each asked three ways in turn through ``Retriever.search`` with the query
embedding included: plain hybrid (dense + BM25, RRF) top 10; summaries first (the 3 best topic
summaries, then those topics' entries, padded from plain search when they hold fewer than 10); fused
(the same, merged with plain search by RRF). The summaries' text stands in for the LLM's: their number,
not their wording, sets the cost. Goal: p95 through summaries ≤ 2× plain hybrid.

Run: ``make bench`` (all sections) or ``python -m bench.summary_retrieval``.
"""

from __future__ import annotations

import random
import tempfile
import time

import numpy as np

from bench.common import locomo_questions, locomo_texts, percentile
from bench.core import USERS, _corpus
from lightmem_core.embedders.bm25 import BM25Encoder
from lightmem_core.embedders.huggingface import HuggingFaceEmbedder
from lightmem_core.models import MemoryEntry
from lightmem_core.retrieval import Retriever
from lightmem_core.stores import EdgeStore
from lightmem_core.summaries import TopicSummaries

SIZE = 10_000
TOPIC_ENTRIES = 8
QUERIES = 200
LIMIT = 10
GOAL_RATIO = 2.0
MODES = ("plain hybrid", "summaries first", "fused with entry search")


def _with_topics(entries: list[MemoryEntry]) -> list[MemoryEntry]:
    """Topics of ``TOPIC_ENTRIES`` consecutive entries per user; each topic's summary: its first entry's text."""
    out, firsts = [], {}
    for k, entry in enumerate(entries):
        topic = (k // USERS) // TOPIC_ENTRIES + 1
        summary = firsts.setdefault((entry.user_id, topic), f"Talk about {entry.memory[:120]}")
        out.append(entry.model_copy(update={"topic_id": topic, "summary": summary}))
    return out


def run() -> str:
    embedder = HuggingFaceEmbedder(device="cpu")
    bm25 = BM25Encoder()
    texts = locomo_texts()
    vectors = np.asarray(embedder.embed(texts), dtype=np.float32)
    entries, dense = _corpus(texts, vectors, SIZE)
    entries = _with_topics(entries)
    questions = locomo_questions(QUERIES)
    rng = random.Random(11)
    users = [f"user-{rng.randrange(USERS)}" for _ in questions]
    with tempfile.TemporaryDirectory() as tmp:
        store = EdgeStore("lightmem", embedder.dims, path=tmp)
        for s in range(0, SIZE, 256):
            store.upsert(entries[s : s + 256], dense[s : s + 256].tolist(),
                         [bm25.encode_document(e.memory) for e in entries[s : s + 256]])
        summaries = EdgeStore("lightmem_summaries", embedder.dims, path=tmp)
        started = time.perf_counter()
        for s in range(0, SIZE, 256):
            TopicSummaries(summaries).index(entries[s : s + 256], embedder, bm25)
        written = summaries.count()
        index_s = time.perf_counter() - started
        retrievers = [Retriever(store, embedder, bm25, "hybrid"),
                      Retriever(store, embedder, bm25, "hybrid", summaries=TopicSummaries(summaries)),
                      Retriever(store, embedder, bm25, "hybrid", summaries=TopicSummaries(summaries, retrieval="fused"))]
        times: list[list[float]] = [[] for _ in MODES]
        for i, question in enumerate(questions[:10]):  # warm-up
            for r in retrievers:
                r.search(users[i], question, LIMIT)
        for i, question in enumerate(questions):  # the three ways in turn, so drift on a shared machine hits all alike
            for mode, r in enumerate(retrievers):
                tick = time.perf_counter()
                r.search(users[i], question, LIMIT)
                times[mode].append((time.perf_counter() - tick) * 1000)
        store.close()
        summaries.close()
    p95 = [percentile(t, 95) for t in times]
    lines = [
        "### Retrieval through topic summaries (`python -m bench.summary_retrieval`)",
        "",
        f"{SIZE:,} entries of {USERS} users in topics of {TOPIC_ENTRIES}, {written:,} topic summaries in their own "
        f"collection (indexed in {index_s:.1f} s), Qdrant Edge, top {LIMIT}, {QUERIES} LoCoMo questions, "
        "**query embedding included** (one per search, shared by both collections).",
        "",
        "| retrieval | p50 ms | p95 ms | p95 / plain hybrid |",
        "|---|---|---|---|",
    ]
    for mode, t in zip(MODES, times, strict=True):
        lines.append(f"| {mode} | {percentile(t, 50):.1f} | {percentile(t, 95):.1f} | {percentile(t, 95) / p95[0]:.2f}× |")
    worst = max(p95[1:]) / p95[0]
    lines += ["", f"Goal: p95 through summaries ≤ {GOAL_RATIO:.0f}× plain hybrid: "
                  f"{'**met**' if worst <= GOAL_RATIO else '**NOT met**'} ({worst:.2f}× at worst)."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
