"""graph_mem's retrieval cost: search p50/p95 with ``graph_hops=1`` (and 2) against plain hybrid.

10,000 entries of 50 users (LoCoMo turns, as in ``bench.core``: real texts and MiniLM vectors, copies
nudged) in an embedded Qdrant Edge store, and a graph in a SQLite history database built the way the
store stage writes it (``graph.write.write_facts``): for each entry, its speaker -> "talks about" ->
each capitalised name in the turn, with the entry as provenance. Speakers are hubs (about 100 edges
each per user), so a question naming a speaker walks a large neighbourhood: a hard case. Each
search goes through ``Retriever.retrieve`` with the query embedding included, 200 LoCoMo questions
(most name a speaker), alternating the variants so that they share the machine's state.

Run: ``make bench`` (all sections) or ``python -m bench.graph``.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from bench.common import data_dir, locomo_questions, percentile
from lightmem_core.embedders.bm25 import BM25Encoder
from lightmem_core.embedders.huggingface import HuggingFaceEmbedder
from lightmem_core.graph.model import GraphFacts, GraphRelation
from lightmem_core.graph.write import write_facts
from lightmem_core.history import HistoryStore
from lightmem_core.models import MemoryEntry, entry_id_for
from lightmem_core.retrieval import Retriever
from lightmem_core.stores import EdgeStore

USERS, SIZE, QUERIES = 50, 10_000, 200
GOAL_RATIO = 2.0
_NAME = re.compile(r"\b[A-Z][a-z]{2,}\b")
_NOT_NAMES = {"The", "That", "This", "What", "Thanks", "Thank", "Yeah", "Wow", "And", "But", "How", "Hey", "Yes",
              "You", "It's", "Its", "Have", "Did", "Was", "Are", "Not", "Sounds", "Sure", "Good", "Great", "When",
              "Where", "Why", "Who", "Also", "Just", "Oh", "Well", "Congrats", "Glad", "Haha", "Awesome", "Definitely"}


def _turns() -> list[tuple[str, str]]:
    """(speaker, text) of every LoCoMo turn, in file order."""
    turns: list[tuple[str, str]] = []
    for sample in json.loads((data_dir() / "locomo10.json").read_text(encoding="utf-8")):
        conv, n = sample["conversation"], 1
        while f"session_{n}" in conv or f"session_{n}_date_time" in conv:
            turns += [(t["speaker"], t["text"]) for t in conv.get(f"session_{n}", []) if t.get("text")]
            n += 1
    return turns


def _build(tmp: Path, embedder: HuggingFaceEmbedder, size: int = SIZE) -> Retriever:
    turns = _turns()[:size]
    texts = [t for _, t in turns]
    vectors = np.asarray(embedder.embed(texts), dtype=np.float32)
    rng = np.random.default_rng(7)
    bm25 = BM25Encoder()
    store = EdgeStore("lightmem", vectors.shape[1], path=str(tmp / "qdrant"))
    history = HistoryStore(str(tmp / "history.db"))
    start = datetime(2023, 1, 1, tzinfo=UTC)
    entries: list[MemoryEntry] = []
    facts: dict[str, list[GraphRelation]] = {}
    for k in range(size):
        speaker, text = turns[k % len(turns)]
        text = text if k < len(turns) else f"{text} #{k}"
        user = f"user-{k % USERS}"
        entry = MemoryEntry(id=entry_id_for(user, [str(k)], text), user_id=user, memory=text,
                            time_stamp=start + timedelta(minutes=k), source_ids=[str(k)], speaker=speaker)
        entries.append(entry)
        names = [n for n in dict.fromkeys(_NAME.findall(text)) if n != speaker and n not in _NOT_NAMES]
        facts.setdefault(user, []).extend(
            GraphRelation(subject=speaker, relation="talks about", object=n, source_ids=[str(k)], entry_ids=[entry.id],
                          observed_ts=entry.time_stamp.timestamp()) for n in names)
    rows = [k % len(turns) for k in range(size)]
    dense = vectors[rows] + rng.normal(0, 0.02, (size, vectors.shape[1]))
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    for s in range(0, size, 256):
        chunk = entries[s : s + 256]
        store.upsert(chunk, dense[s : s + 256].tolist(), [bm25.encode_document(e.memory) for e in chunk])
    for user, relations in facts.items():
        with history.transaction() as conn:
            write_facts(conn, user, GraphFacts(relations=relations))
    return Retriever(store=store, embedder=embedder, bm25=bm25, strategy="hybrid", history=history, graph=True)


def _edges(history: HistoryStore) -> tuple[int, int]:
    with history.connection() as conn:
        row = conn.execute("SELECT (SELECT COUNT(*) FROM graph_nodes) AS nodes, (SELECT COUNT(*) FROM graph_edges) AS edges")
    return int(row[0]["nodes"]), int(row[0]["edges"])


def run(size: int = SIZE, queries: int = QUERIES) -> str:
    embedder = HuggingFaceEmbedder(device="cpu")
    questions = locomo_questions(queries)
    users = [f"user-{i % USERS}" for i in range(len(questions))]
    with tempfile.TemporaryDirectory() as tmp:
        retriever = _build(Path(tmp), embedder, size)
        assert retriever.history is not None
        nodes, edges = _edges(retriever.history)
        variants = {"plain hybrid": 0, "graph_hops=1": 1, "graph_hops=2": 2}
        times: dict[str, list[float]] = {v: [] for v in variants}
        added: dict[str, int] = {v: 0 for v in variants}
        for i in range(10):  # warm-up
            retriever.retrieve(users[i], questions[i], 10, graph_hops=1)
        for i, question in enumerate(questions):
            plain: set[str] = set()
            for name, hops in variants.items():
                started = time.perf_counter()
                hits = retriever.retrieve(users[i], question, 10, graph_hops=hops)
                times[name].append((time.perf_counter() - started) * 1000)
                ids = {h.id for h in hits}
                plain = ids if hops == 0 else plain
                added[name] += len(ids - plain)
        retriever.store.close()
        retriever.history.close()
    base = percentile(times["plain hybrid"], 95)
    lines = [
        "### Graph retrieval (`python -m bench.graph`)",
        "",
        f"{size:,} entries of {USERS} users in Qdrant Edge, hybrid top 10 with the query embedding, through "
        f"`Retriever.retrieve`; graph: {nodes:,} nodes, {edges:,} edges in SQLite (each turn's speaker -> "
        f"\"talks about\" -> the names in it). {len(questions)} LoCoMo questions.",
        "",
        "| search | p50 ms | p95 ms | p95 / plain | entries the graph added (of 10 per search, mean) |",
        "|---|---|---|---|---|",
    ]
    for name in variants:
        p50, p95 = percentile(times[name], 50), percentile(times[name], 95)
        lines.append(f"| {name} | {p50:.1f} | {p95:.1f} | {p95 / base:.2f}× | {added[name] / len(questions):.1f} |")
    ratio = percentile(times["graph_hops=1"], 95) / base
    lines += ["", f"Goal: graph_hops=1 p95 ≤ {GOAL_RATIO:.0f}× plain hybrid: "
                  f"{'**met**' if ratio <= GOAL_RATIO else '**NOT met**'} ({ratio:.2f}×)."]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(run(*(int(a) for a in sys.argv[1:3])))  # [SIZE [QUERIES]]: a smaller run to try it
