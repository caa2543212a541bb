"""Core library figures: embedding and upsert throughput, retrieval latency at 1k and 10k entries.

Run: ``make bench`` (all sections) or ``python -m bench.core``.
"""

from __future__ import annotations

import random
import tempfile
from datetime import UTC, datetime, timedelta

from bench.common import locomo_questions, locomo_texts, percentile, timed
from lightmem_core import LightMemory, parse_config
from lightmem_core.embedders.huggingface import HuggingFaceEmbedder
from lightmem_core.factory import build_components
from lightmem_core.models import MemoryEntry, entry_id_for

QUERIES = 100


def _entries(texts: list[str], user: str) -> list[MemoryEntry]:
    start = datetime(2023, 1, 1, tzinfo=UTC)
    return [MemoryEntry(id=entry_id_for(user, [str(i)], t), user_id=user, memory=t, time_stamp=start + timedelta(hours=i),
                        source_ids=[str(i)]) for i, t in enumerate(texts)]


def _noisy(vectors: list[list[float]], n: int, rng: random.Random) -> list[list[float]]:
    """``n`` vectors near the real ones (real embeddings plus small noise, unit length)."""
    out = []
    for i in range(n):
        v = [x + rng.gauss(0, 0.02) for x in vectors[i % len(vectors)]]
        norm = sum(x * x for x in v) ** 0.5
        out.append([x / norm for x in v])
    return out


def run() -> str:
    embedder = HuggingFaceEmbedder(device="cpu")
    texts = locomo_texts(2000)
    sample = texts[:512]
    embedder.embed(sample[:64])  # warm-up
    batched_s = timed(lambda: embedder.embed(sample))
    single = sample[:128]
    single_s = timed(lambda: [embedder.embed([t]) for t in single])
    batched_rate, single_rate = len(sample) / batched_s, len(single) / single_s
    vectors = embedder.embed(texts)
    rng = random.Random(7)
    lines = [
        "### Core library (`python -m bench.core`)",
        "",
        f"Embedding, all-MiniLM-L6-v2 on CPU: batched {batched_rate:.0f} entries/s, one at a time {single_rate:.0f} entries/s "
        f"(**{batched_rate / single_rate:.1f}×**).",
        "",
        "| entries | upsert entries/s | strategy | retrieve p50 ms | retrieve p95 ms |",
        "|---|---|---|---|---|",
    ]
    questions = locomo_questions(QUERIES)
    for size in (1_000, 10_000):
        with tempfile.TemporaryDirectory() as tmp:
            all_texts = [texts[i % len(texts)] + ("" if i < len(texts) else f" #{i}") for i in range(size)]
            entries = _entries(all_texts, "bench")
            dense = _noisy(vectors, size, rng)
            for strategy in ("embedding", "context", "hybrid"):
                cfg = parse_config({
                    "memory_manager": {"model_name": "verbatim"}, "index_strategy": "hybrid", "retrieve_strategy": strategy,
                    "history_db_path": f"{tmp}/h.db", "embedding_retriever": {"configs": {"path": f"{tmp}/q"}},
                })
                memory = LightMemory(cfg, build_components(cfg, embedder=embedder))
                if strategy == "embedding":
                    bm25 = memory.components.bm25
                    assert bm25 is not None
                    sparse = [bm25.encode_document(t) for t in all_texts]
                    upsert_s = timed(lambda m=memory, e=entries, d=dense, s=sparse: m.store.upsert(e, d, s))
                for q in questions[:10]:
                    memory.retrieve(q, limit=10, user_id="bench")  # warm-up
                latencies = [timed(lambda q=q, m=memory: m.retrieve(q, limit=10, user_id="bench")) * 1000 for q in questions]
                lines.append(f"| {size:,} | {size / upsert_s:,.0f} | {strategy} | {percentile(latencies, 50):.1f} | "
                             f"{percentile(latencies, 95):.1f} |")
                memory.close()
    lines.append("")
    lines.append("Retrieval latency includes embedding the query; embedded Qdrant (local mode), 2 CPU cores.")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
