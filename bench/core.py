"""Core library figures: embedding throughput, and the embedded store engines side by side.

The store part compares the previous embedded engine (an in-process mirror index over qdrant-client's
local mode, loaded from git history by ``bench.legacy_store``) with Qdrant Edge, at 10k and 100k entries
of 50 users: upsert throughput, reopen time (open the folder and answer a first search), hybrid search
p50/p95 filtered by user with the query embedding included, the same while a writer upserts 100
entries/s into the same store, and the peak memory. Each (engine, size) runs in its own process, so
memory figures do not mix; the entries are real LoCoMo turns with all-MiniLM-L6-v2 vectors (5,882
unique texts embedded once; copies get small noise and a number, so no two entries are equal).

Run: ``make bench`` (all sections) or ``python -m bench.core [SIZE ...]``.
"""

from __future__ import annotations

import multiprocessing
import random
import resource
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import locomo_questions, locomo_texts, percentile, timed
from lightmem_core.embedders.bm25 import BM25Encoder
from lightmem_core.embedders.huggingface import HuggingFaceEmbedder
from lightmem_core.models import MemoryEntry, entry_id_for

USERS = 50
QUERIES = 200
WRITES_PER_S = 100
SIZES = (10_000, 100_000)
ENGINES = ("previous engine (mirror over local mode)", "Qdrant Edge")
GOAL_P95_MS, GOAL_REOPEN_S, GOAL_WRITING_RATIO = 30.0, 2.0, 1.5


def _corpus(texts: list[str], vectors: np.ndarray, size: int, offset: int = 0) -> tuple[list[MemoryEntry], np.ndarray]:
    """``size`` entries of ``USERS`` users: real texts and vectors, copies numbered and nudged."""
    rng = np.random.default_rng(7 + offset)
    start = datetime(2023, 1, 1, tzinfo=UTC)
    entries, rows = [], []
    for k in range(offset, offset + size):
        i = k % len(texts)
        text = texts[i] if k < len(texts) else f"{texts[i]} #{k}"
        user = f"user-{k % USERS}"
        entries.append(MemoryEntry(id=entry_id_for(user, [str(k)], text), user_id=user, memory=text,
                                   time_stamp=start + timedelta(minutes=k), source_ids=[str(k)]))
        rows.append(i)
    dense = vectors[rows] + (rng.normal(0, 0.02, (size, vectors.shape[1])) if offset or size > len(texts) else 0)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    return entries, dense.astype(np.float32)


def _open(engine: str, path: str, dims: int) -> Any:
    if engine == ENGINES[0]:
        from bench.legacy_store import load

        return load()("lightmem", dims, path=path)
    from lightmem_core.stores import EdgeStore

    return EdgeStore("lightmem", dims, path=path)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _measure(engine: str, size: int, vectors_file: str, out: Any) -> None:
    """One engine at one size, in a fresh process."""
    embedder = HuggingFaceEmbedder(device="cpu")
    bm25 = BM25Encoder()
    texts = locomo_texts()
    vectors = np.load(vectors_file)
    questions = locomo_questions(QUERIES)
    rng = random.Random(11)
    users = [f"user-{rng.randrange(USERS)}" for _ in questions]
    embedder.embed(questions[:8])  # warm-up
    entries, dense = _corpus(texts, vectors, size)
    sparse = [bm25.encode_document(e.memory) for e in entries]
    baseline = _rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        store = _open(engine, tmp, vectors.shape[1])

        def upsert_all() -> None:
            for s in range(0, size, 256):  # the store worker's batch size
                store.upsert(entries[s : s + 256], dense[s : s + 256].tolist(), sparse[s : s + 256])

        upsert_s = timed(upsert_all)

        def ask(i: int) -> float:
            q = questions[i]
            started = time.perf_counter()
            store.search(users[i], "hybrid", embedder.embed([q])[0], bm25.encode_query(q), 10)
            return (time.perf_counter() - started) * 1000

        store.close()
        started = time.perf_counter()
        store = _open(engine, tmp, vectors.shape[1])  # ask() and writer() use the reopened store
        ask(0)  # the previous engine loads its mirror on the first search
        reopen_s = time.perf_counter() - started
        for i in range(10):
            ask(i)  # warm-up
        quiet = [ask(i) for i in range(len(questions))]
        extra, extra_dense = _corpus(texts, vectors, 40 * WRITES_PER_S, offset=size)
        extra_sparse = [bm25.encode_document(e.memory) for e in extra]
        stop, written = threading.Event(), [0]

        def writer() -> None:  # 100 entries/s in batches of 10, as index batches would arrive
            n = 0
            while not stop.is_set() and n < len(extra):
                tick = time.perf_counter()
                store.upsert(extra[n : n + 10], extra_dense[n : n + 10].tolist(), extra_sparse[n : n + 10])
                n += 10
                written[0] = n
                stop.wait(max(0.0, 10 / WRITES_PER_S - (time.perf_counter() - tick)))

        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(0.5)
        writing = [ask(i) for i in range(len(questions))]
        stop.set()
        thread.join()
        peak = _rss_mib()
        store.close()
    out.put({"upserts_s": size / upsert_s, "reopen_s": reopen_s, "p50": percentile(quiet, 50), "p95": percentile(quiet, 95),
             "w_p50": percentile(writing, 50), "w_p95": percentile(writing, 95), "written": written[0],
             "mib": peak - baseline})


def _embedding_line(embedder: HuggingFaceEmbedder, texts: list[str]) -> str:
    sample = texts[:512]
    embedder.embed(sample[:64])  # warm-up
    batched_s = timed(lambda: embedder.embed(sample))
    single = sample[:128]
    single_s = timed(lambda: [embedder.embed([t]) for t in single])
    batched_rate, single_rate = len(sample) / batched_s, len(single) / single_s
    return (f"Embedding, all-MiniLM-L6-v2 on CPU: batched {batched_rate:.0f} entries/s, one at a time "
            f"{single_rate:.0f} entries/s (**{batched_rate / single_rate:.1f}×**).")


def run(sizes: tuple[int, ...] = SIZES) -> str:
    embedder = HuggingFaceEmbedder(device="cpu")
    texts = locomo_texts()
    lines = [
        "### Core library (`python -m bench.core`)",
        "",
        _embedding_line(embedder, texts),
        "",
        f"Embedded store engines, {USERS} users, hybrid (dense + BM25, RRF) top 10 filtered by user, "
        f"{QUERIES} LoCoMo questions, **query embedding included**; \"while writing\": another thread upserts "
        f"{WRITES_PER_S} entries/s into the same store. Memory: peak resident growth over the process's "
        "start (model loaded, data built).",
        "",
        "| entries | engine | upserts/s | reopen → first answer s | hybrid p50 / p95 ms | while writing p50 / p95 ms "
        "| p95 writing / quiet | memory MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        vectors_file = str(Path(tmp) / "vectors.npy")
        np.save(vectors_file, np.asarray(embedder.embed(texts), dtype=np.float32))
        del embedder
        results: dict[tuple[int, str], dict[str, float]] = {}
        context = multiprocessing.get_context("spawn")
        for size in sizes:
            for engine in ENGINES:
                queue = context.Queue()
                proc = context.Process(target=_measure, args=(engine, size, vectors_file, queue))
                proc.start()
                r = results[(size, engine)] = queue.get(timeout=3600)
                proc.join(60)
                lines.append(f"| {size:,} | {engine} | {r['upserts_s']:,.0f} | {r['reopen_s']:.2f} | {r['p50']:.1f} / "
                             f"{r['p95']:.1f} | {r['w_p50']:.1f} / {r['w_p95']:.1f} | {r['w_p95'] / r['p95']:.2f}× | "
                             f"{r['mib']:,.0f} |")
    edge = results[(sizes[-1], ENGINES[1])]
    old = results[(sizes[-1], ENGINES[0])]
    lines += [
        "",
        f"At {sizes[-1]:,} entries Qdrant Edge upserts {edge['upserts_s'] / old['upserts_s']:.1f}× faster, reopens "
        f"{old['reopen_s'] / edge['reopen_s']:.0f}× faster, and its p95 is {old['p95'] / edge['p95']:.1f}× lower quiet and "
        f"{old['w_p95'] / edge['w_p95']:.1f}× lower while writing.",
        f"Goals at {sizes[-1]:,} (Edge): hybrid p95 ≤ {GOAL_P95_MS:.0f} ms with the query embedding: "
        f"{_met(edge['p95'] <= GOAL_P95_MS)} ({edge['p95']:.1f} ms); reopen ≤ {GOAL_REOPEN_S:.0f} s: "
        f"{_met(edge['reopen_s'] <= GOAL_REOPEN_S)} ({edge['reopen_s']:.2f} s); p95 while writing ≤ "
        f"{GOAL_WRITING_RATIO}× quiet: {_met(edge['w_p95'] <= GOAL_WRITING_RATIO * edge['p95'])} "
        f"({edge['w_p95'] / edge['p95']:.2f}×).",
    ]
    return "\n".join(lines)


def _met(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


if __name__ == "__main__":
    import sys

    print(run(tuple(int(n) for n in sys.argv[1:]) or SIZES))
