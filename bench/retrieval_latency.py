"""Search latency of the default retrieval at 10k entries of ONE user (the worst case for the user filter),
query embedding included: plain hybrid search against ``speaker_match`` (a query that names a speaker
searches twice and reads the user's names from the history), and both with ``index_plain_vector`` (a
second store whose entries also have the ``plain`` vector: three lists fused instead of two).

The entries are LoCoMo turns with their speaker labels and real all-MiniLM-L6-v2 vectors (copies get a
number and a little noise); the queries are 200 LoCoMo questions, most of which name a speaker.

    python -m bench.retrieval_latency
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from bench.common import data_dir, locomo_questions, percentile
from lightmem_core.embedders.bm25 import BM25Encoder
from lightmem_core.embedders.huggingface import HuggingFaceEmbedder
from lightmem_core.history import HistoryStore
from lightmem_core.models import MemoryEntry, Message, entry_id_for
from lightmem_core.retrieval import Retriever
from lightmem_core.speakers import SpeakerNames
from lightmem_core.stores.edge import EdgeStore
from producers.datasets import load_locomo

SIZE, USER, QUERIES = 10_000, "one-user", 200


def turns() -> list[tuple[str, str]]:
    """(speaker, text) of every LoCoMo turn."""
    return [(m["speaker_name"], m["content"]) for c in load_locomo(data_dir() / "locomo10.json")
            for s in c.sessions for m in s.messages]


def main() -> int:
    import torch

    torch.set_num_threads(1)  # as lightmem eval does: on a shared 2-core machine spinning threads cost 10x
    said = turns()
    embedder = HuggingFaceEmbedder(device="cpu")
    vectors = np.asarray(embedder.embed([f"{w}: {t}" for w, t in said]), dtype=np.float32)
    rng = np.random.default_rng(7)
    start = datetime(2023, 1, 1, tzinfo=UTC)
    bm25 = BM25Encoder()
    with tempfile.TemporaryDirectory() as folder:
        store = EdgeStore(collection="lat", dims=embedder.dims, path=str(Path(folder) / "q"))
        with_plain = EdgeStore(collection="lat-plain", dims=embedder.dims, path=str(Path(folder) / "q"), plain_vector=True)
        history = HistoryStore(str(Path(folder) / "h.db"))
        entries, rows = [], []
        for k in range(SIZE):
            who, text = said[k % len(said)]
            text = f"{who}: {text}" + (f" #{k}" if k >= len(said) else "")
            entries.append(MemoryEntry(id=entry_id_for(USER, [str(k)], text), user_id=USER, memory=text, speaker=who,
                                       time_stamp=start + timedelta(minutes=k), source_ids=[str(k)]))
            rows.append(k % len(said))
        dense = vectors[rows] + rng.normal(0, 0.02, (SIZE, vectors.shape[1]))
        dense /= np.linalg.norm(dense, axis=1, keepdims=True)
        plain = vectors[rows] + rng.normal(0, 0.02, (SIZE, vectors.shape[1]))  # a vector of its own, near the dense
        plain /= np.linalg.norm(plain, axis=1, keepdims=True)
        for i in range(0, SIZE, 500):
            part = entries[i:i + 500]
            sparse = [bm25.encode_document(e.memory) for e in part]
            store.upsert(part, dense[i:i + 500].tolist(), sparse)
            with_plain.upsert(part, dense[i:i + 500].tolist(), sparse, plain=plain[i:i + 500].tolist())
        speakers = SpeakerNames(history)
        with history.transaction() as conn:
            speakers.record(conn, USER, [Message(id=str(n), user_id=USER, session_id="s", turn_index=n, role="user",
                                                 content="", time_stamp=start, speaker=who)
                                         for n, who in enumerate(sorted({w for w, _ in said}))])
        questions = locomo_questions(QUERIES)
        print(f"{SIZE:,} entries of one user, {len(questions)} LoCoMo questions, query embedding included")
        print("| retrieval | p50 ms | p95 ms | queries naming one speaker |\n|---|---|---|---|")
        for label, names, searched in (("hybrid", None, store), ("hybrid + speaker_match (default)", speakers, store),
                                       ("hybrid + plain vector", None, with_plain),
                                       ("hybrid + speaker_match + plain vector", speakers, with_plain)):
            retriever = Retriever(store=searched, embedder=embedder, bm25=bm25, strategy="hybrid", history=history,
                                  speakers=names)
            for q in questions[:10]:  # warm up
                retriever.retrieve(USER, q, 10)
            times = []
            for q in questions:
                t0 = time.perf_counter()
                retriever.retrieve(USER, q, 10)
                times.append((time.perf_counter() - t0) * 1000)
            named = sum(speakers.named(USER, q) is not None for q in questions) if names else 0
            print(f"| {label} | {percentile(times, 50):.1f} | {percentile(times, 95):.1f} | {named} |")
        store.close()
        with_plain.close()
        history.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
