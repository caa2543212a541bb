"""Contract tests for the store, run once per backend location (in-memory and embedded folder)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from lightmem_core.embedders import HashingEmbedder
from lightmem_core.embedders.bm25 import BM25Encoder
from lightmem_core.errors import InvalidInput, StoreError
from lightmem_core.models import MemoryEntry, entry_id_for
from lightmem_core.stores import QdrantStore

EMB = HashingEmbedder(32)
BM25 = BM25Encoder()


def _entry(user: str, text: str, day: int) -> MemoryEntry:
    return MemoryEntry(id=entry_id_for(user, [f"{user}-{day}"], text), user_id=user, memory=text,
                       time_stamp=datetime(2025, 1, day, tzinfo=UTC), source_ids=[f"{user}-{day}"], speaker="user")


def _put(store: QdrantStore, entries: list[MemoryEntry]) -> None:
    texts = [e.memory for e in entries]
    store.upsert(entries, EMB.embed(texts), [BM25.encode_document(t) for t in texts])


@pytest.fixture(params=["memory", "folder"])
def store(request, tmp_path: Path):
    path = ":memory:" if request.param == "memory" else str(tmp_path / "q")
    s = QdrantStore("c", EMB.dims, path=path)
    yield s
    s.close()


def test_upsert_is_idempotent_and_scoped_by_user(store: QdrantStore) -> None:
    entries = [_entry("alice", "alice likes green tea", 1), _entry("bob", "bob likes black coffee", 2)]
    _put(store, entries)
    _put(store, entries)
    assert store.count() == 2 and store.count("alice") == 1
    assert [e.memory for e in store.list_entries("alice")] == ["alice likes green tea"]
    for strategy in ("embedding", "context", "hybrid"):
        hits = store.search("alice", strategy, EMB.embed(["coffee tea"])[0], BM25.encode_query("coffee tea"), 10)
        assert {e.user_id for e, _ in hits} == {"alice"}, strategy


def test_get_delete_and_delete_user(store: QdrantStore) -> None:
    a1, a2, b1 = _entry("alice", "one", 1), _entry("alice", "two", 2), _entry("bob", "three", 3)
    _put(store, [a1, a2, b1])
    assert [e.id for e in store.get([a2.id, a1.id])] == [a2.id, a1.id]
    store.delete([a1.id])
    assert store.get([a1.id]) == []
    store.delete_user("alice")
    assert store.count("alice") == 0 and store.count("bob") == 1


def test_filters_equality_in_and_time_ranges(store: QdrantStore) -> None:
    entries = [_entry("alice", f"note number {d}", d) for d in range(1, 6)]
    _put(store, entries)
    q = EMB.embed(["note number"])[0]
    hits = store.search("alice", "embedding", q, None, 10, {"time_stamp": {"gte": "2025-01-02", "lt": "2025-01-04"}})
    assert sorted(e.time_stamp.day for e, _ in hits) == [2, 3]
    hits = store.search("alice", "embedding", q, None, 10, {"source_ids": {"in": ["alice-5", "alice-1"]}})
    assert sorted(e.time_stamp.day for e, _ in hits) == [1, 5]
    hits = store.search("alice", "embedding", q, None, 10, {"speaker": "user", "time_stamp": {"gt": "2025-01-04"}})
    assert [e.time_stamp.day for e, _ in hits] == [5]
    with pytest.raises(InvalidInput, match="unknown operator"):
        store.search("alice", "embedding", q, None, 10, {"time_stamp": {"after": 1}})
    with pytest.raises(InvalidInput, match="user scope"):
        store.search("alice", "embedding", q, None, 10, {"user_id": "bob"})


def test_reopening_a_folder_keeps_its_entries(tmp_path: Path) -> None:
    path = str(tmp_path / "q")
    first = QdrantStore("c", EMB.dims, path=path)
    _put(first, [_entry("alice", "kept across restarts", 1)])
    first.close()
    second = QdrantStore("c", EMB.dims, path=path)
    assert [e.memory for e in second.list_entries("alice")] == ["kept across restarts"]
    second.close()
    with pytest.raises(StoreError, match="dense size 32"):
        QdrantStore("c", 16, path=path)


def test_dense_vectors_round_trip(store: QdrantStore) -> None:
    e = _entry("alice", "vector please", 1)
    _put(store, [e])
    vec = store.dense_vectors([e.id])[e.id]
    assert pytest.approx(vec, abs=1e-5) == EMB.embed(["vector please"])[0]


def test_embedded_mirror_ranks_exactly_like_qdrant(tmp_path: Path) -> None:
    """The in-process mirror of embedded mode must give Qdrant's own results, scores included.

    The data is built without ties (random dense vectors, a distinct length per document), since
    Qdrant leaves the order of equal scores unspecified.
    """
    import random
    import zlib

    def vec(text: str) -> list[float]:
        r = random.Random(zlib.crc32(text.encode()))
        return [r.gauss(0, 1) for _ in range(EMB.dims)]

    rng = random.Random(3)
    words = "apple river engine violin garden planet coffee mountain silver rocket winter harbor".split()
    entries = []
    for i in range(160):
        user = "alice" if i % 3 else "bob"
        text = " ".join(rng.sample(words, rng.randint(1, 4)) + [f"filler{i}x{k}" for k in range(5 * i)])
        entries.append(_entry(user, text, 1 + i % 28).model_copy(update={"id": entry_id_for(user, [str(i)], text)}))
    plain = QdrantStore("c", EMB.dims, path=":memory:", mirror=False)
    mirrored = QdrantStore("c", EMB.dims, path=str(tmp_path / "m"))

    def put(s: QdrantStore, batch: list[MemoryEntry]) -> None:
        s.upsert(batch, [vec(e.memory) for e in batch], [BM25.encode_document(e.memory) for e in batch])

    for s in (plain, mirrored):
        put(s, entries[:80])
    mirrored.search("alice", "embedding", vec("x"), None, 1)  # loads the mirror from the folder
    for s in (plain, mirrored):
        put(s, entries[80:])  # later writes reach the mirror too
        s.delete([entries[1].id])
    for query in ("apple river", "violin coffee winter", "rocket", "harbor garden"):
        dense, sparse = vec(query), BM25.encode_query(query)
        for strategy in ("embedding", "context", "hybrid"):
            for filters in (None, {"time_stamp": {"gte": "2025-01-05", "lt": "2025-01-20"}}):
                want = [(e.id, round(sc, 4)) for e, sc in plain.search("alice", strategy, dense, sparse, 10, filters)]
                got = [(e.id, round(sc, 4)) for e, sc in mirrored.search("alice", strategy, dense, sparse, 10, filters)]
                assert want and got == want, (query, strategy, filters)
    plain.close()
    mirrored.close()
