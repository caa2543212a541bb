"""The embedded store: a Qdrant Edge shard in a local folder (``qdrant-edge-py``, Qdrant's engine in process).

The same layout as a Qdrant server collection (``lightmem_core/stores/qdrant.py``): a named dense vector
``dense`` (cosine) sized from the embedder, a sparse ``bm25`` vector with the IDF modifier, keyword and
float payload indexes on the user and the times, the entries' deterministic ids as point ids. Hybrid
search is Qdrant's prefetch + RRF fusion, run inside the engine; with ``plain_vector`` (``index_plain_vector``)
a second dense vector ``plain`` of the message alone is one more prefetch list (a folder made without it is
searched without it). With ``image_dims`` (``multimodal_embedder``)
the shard also has the ``image`` vector, which image entries carry and ``search_images`` searches.

A folder written by the previous version (qdrant-client's
local mode: ``<path>/meta.json`` and ``<path>/collection/<collection>``) is copied into a new shard once,
on the first open (``lightmem_core/stores/migrate.py``); the old files stay as a backup.

Reads run concurrently with writes: the engine takes its own locks, so reader threads never wait behind
an upsert. Writes are serialised here so that a delete never overtakes the upsert before it. Like local
mode, one process at a time may open a folder (the engine locks its write-ahead log).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import qdrant_edge as edge
from qdrant_client import models

from lightmem_core.embedders.bm25 import SparseVec
from lightmem_core.errors import StoreError
from lightmem_core.models import MemoryEntry
from lightmem_core.stores.base import SearchStrategy, check_images, checked_plain, missing_plain_warning
from lightmem_core.stores.filters import build_filter, prefetch_limit
from lightmem_core.stores.fusion import RRF_K
from lightmem_core.stores.layout import (
    DENSE,
    IMAGE,
    PLAIN,
    SPARSE,
    add_missing_indexes,
    create_shard,
    shard_dir,
)
from lightmem_core.stores.migrate import migrate_local_mode

log = logging.getLogger(__name__)
_UPSERT_BATCH = 512
_SCROLL_PAGE = 1024
CONFIG_FILE = "edge_config.json"  # written by the engine beside its segments


def edge_point(entry: MemoryEntry, dense: list[float] | None, sparse: SparseVec | None,
               image: list[float] | None = None, plain: list[float] | None = None) -> edge.Point:
    vector: dict[str, Any] = {}
    if dense is not None:
        vector[DENSE] = [float(x) for x in dense]
    if plain is not None:
        vector[PLAIN] = [float(x) for x in plain]
    if image is not None:
        vector[IMAGE] = [float(x) for x in image]
    if sparse is not None:
        vector[SPARSE] = edge.SparseVector(list(sparse.indices), [float(v) for v in sparse.values])
    return edge.Point(entry.id, vector, entry.to_payload())


def edge_filter(flt: models.Filter) -> edge.Filter:
    """The filter language's Qdrant ``Filter`` (``filters.build_filter``: one validation) in the engine's types."""
    conditions: list[Any] = []
    for cond in flt.must or []:
        if not isinstance(cond, models.FieldCondition):
            raise StoreError(f"unsupported filter condition {type(cond).__name__}")
        if isinstance(cond.match, models.MatchValue):
            conditions.append(edge.FieldCondition(key=cond.key, match=edge.MatchValue(cond.match.value)))
        elif isinstance(cond.match, models.MatchAny):
            conditions.append(edge.FieldCondition(key=cond.key, match=edge.MatchAny(list(cond.match.any))))  # type: ignore[arg-type]
        elif isinstance(cond.range, models.Range):
            r = cond.range
            conditions.append(edge.FieldCondition(key=cond.key, range=edge.RangeFloat(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt)))
        else:
            raise StoreError(f"unsupported filter on {cond.key!r}")
    return edge.Filter(must=conditions)


def _payload(point: Any) -> dict[str, Any]:
    payload = point.payload
    return payload if isinstance(payload, dict) else {}


class EdgeStore:
    """Entries in one Qdrant Edge shard; thread-safe, with reads concurrent to writes."""

    is_server = False

    def __init__(self, collection: str, dims: int, path: str | None = None, on_disk: bool = False,
                 image_dims: int | None = None, plain_vector: bool = False) -> None:
        self.collection = collection
        self.dims = dims
        self.image_dims = image_dims
        self.plain_vector = plain_vector  # off below when an older folder lacks the vector
        self._on_disk = on_disk
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        if not path or path == ":memory:":  # no folder asked for: a scratch one that goes away on close
            self._scratch = tempfile.TemporaryDirectory(prefix="lightmem-edge-")
            path = self._scratch.name
        self.path = Path(path)
        self.folder = shard_dir(self.path, collection)
        self._write_lock = threading.Lock()
        self._closed = False
        try:
            if not self.folder.exists():
                migrate_local_mode(self.path, collection, dims, on_disk)
            self._shard = self._open()
        except StoreError:
            self._cleanup()
            raise

    def _open(self) -> edge.EdgeShard:
        try:
            if (self.folder / CONFIG_FILE).exists():
                vectors = self._check_dims()
                if self.plain_vector and PLAIN not in vectors:
                    log.warning(missing_plain_warning(self.collection))
                    self.plain_vector = False
                return add_missing_indexes(edge.EdgeShard.load(str(self.folder)))
            self.folder.mkdir(parents=True, exist_ok=True)
            shard = create_shard(self.folder, self.dims, self._on_disk, self.image_dims, self.plain_vector)
            log.info("created Qdrant Edge shard %s (%d dims)", self.folder, self.dims)
            return shard
        except StoreError:
            raise
        except Exception as exc:  # the engine raises a bare Exception, e.g. when another process holds the WAL
            why = "another process has it open (one process per folder)" if "WouldBlock" in str(exc) else str(exc)
            raise StoreError(f"cannot open the embedded store at {self.folder}: {why}") from exc

    def _check_dims(self) -> dict[str, Any]:
        """The folder's named vectors, after checking their sizes against the embedders'."""
        try:
            vectors: Any = json.loads((self.folder / CONFIG_FILE).read_text())["vectors"]
            have: Any = vectors[DENSE]["size"]
        except (OSError, ValueError, KeyError, TypeError):
            vectors, have = {}, "no 'dense' vector"
        if have != self.dims:
            raise StoreError(f"collection {self.collection!r} has dense size {have}, the embedder gives {self.dims}")
        if self.image_dims is not None:
            image: Any = (vectors.get(IMAGE) or {}).get("size", "no 'image' vector")
            if image != self.image_dims:
                raise StoreError(f"collection {self.collection!r} has image size {image}, the multimodal embedder gives "
                                 f"{self.image_dims} (a collection made without multimodal_embedder needs a new "
                                 "collection_name)")
        return vectors if isinstance(vectors, dict) else {}

    # --- writes -----------------------------------------------------------------------------------
    def upsert(self, entries: list[MemoryEntry], dense: list[list[float]] | None, sparse: list[SparseVec] | None,
               images: list[list[float]] | None = None, plain: list[list[float]] | None = None) -> None:
        if dense is not None and len(dense) != len(entries):
            raise StoreError(f"{len(entries)} entries but {len(dense)} dense vectors")
        if sparse is not None and len(sparse) != len(entries):
            raise StoreError(f"{len(entries)} entries but {len(sparse)} sparse vectors")
        if dense is not None and any(len(v) != self.dims for v in dense):
            raise StoreError(f"a dense vector's size is not the collection's {self.dims}")
        check_images(entries, images, self.image_dims)
        plain = checked_plain(entries, dense, plain, self.dims) if self.plain_vector else None
        points = [edge_point(e, dense[i] if dense is not None else None, sparse[i] if sparse is not None else None,
                             images[i] if images is not None else None, plain[i] if plain is not None else None)
                  for i, e in enumerate(entries)]
        with self._write_lock:
            for start in range(0, len(points), _UPSERT_BATCH):
                self._shard.update(edge.UpdateOperation.upsert_points(points[start : start + _UPSERT_BATCH]))

    def delete(self, entry_ids: list[str]) -> None:
        if entry_ids:
            with self._write_lock:
                self._shard.update(edge.UpdateOperation.delete_points(list(entry_ids)))

    def delete_user(self, user_id: str) -> None:
        with self._write_lock:
            self._shard.update(edge.UpdateOperation.delete_points_by_filter(edge_filter(build_filter(user_id, None))))

    def reset(self) -> None:
        with self._write_lock:
            self._shard.update(edge.UpdateOperation.delete_points_by_filter(edge.Filter(must=[])))

    def flush(self) -> None:
        self._shard.flush()

    # --- reads ------------------------------------------------------------------------------------
    def _scroll(self, flt: edge.Filter | None, with_payload: bool = True, with_vector: Any = False) -> list[Any]:
        records: list[Any] = []
        offset: Any = None
        while True:
            page, offset = self._shard.scroll(edge.ScrollRequest(offset=offset, limit=_SCROLL_PAGE, filter=flt,
                                                                 with_payload=with_payload, with_vector=with_vector))
            records.extend(page)
            if offset is None:
                return records

    def get(self, entry_ids: list[str]) -> list[MemoryEntry]:
        if not entry_ids:
            return []
        records = self._shard.retrieve(list(entry_ids), with_payload=True, with_vector=False)
        by_id = {str(r.id): MemoryEntry.from_payload(_payload(r)) for r in records}
        return [by_id[i] for i in entry_ids if i in by_id]

    def dense_vectors(self, entry_ids: list[str]) -> dict[str, list[float]]:
        if not entry_ids:
            return {}
        out: dict[str, list[float]] = {}
        for r in self._shard.retrieve(list(entry_ids), with_payload=False, with_vector=[DENSE]):
            vec = r.vector.get(DENSE) if isinstance(r.vector, dict) else None
            if isinstance(vec, list):
                out[str(r.id)] = [float(x) for x in vec]  # type: ignore[arg-type]  # dense: a list of floats
        return out

    def list_entries(self, user_id: str, since_ts: float | None = None) -> list[MemoryEntry]:
        """All of a user's entries (optionally only those created at or after ``since_ts``), oldest first."""
        flt = edge_filter(build_filter(user_id, {"created_at": {"gte": since_ts}} if since_ts is not None else None))
        entries = [MemoryEntry.from_payload(_payload(r)) for r in self._scroll(flt)]
        entries.sort(key=lambda e: (e.time_stamp, e.created_at, e.id))
        return entries

    def count(self, user_id: str | None = None) -> int:
        flt = edge_filter(build_filter(user_id, None)) if user_id is not None else None
        return int(self._shard.count(edge.CountRequest(exact=True, filter=flt)))

    def search(
        self,
        user_id: str,
        strategy: SearchStrategy,
        dense: list[float] | None,
        sparse: SparseVec | None,
        limit: int,
        filters: dict[str, Any] | None = None,
    ) -> list[tuple[MemoryEntry, float]]:
        flt = edge_filter(build_filter(user_id, filters))
        sparse_q = edge.SparseVector(list(sparse.indices), [float(v) for v in sparse.values]) if sparse and sparse.indices else None
        if strategy == "embedding":
            if dense is None:
                return []
            request = edge.QueryRequest(limit=limit, query=edge.Query.Nearest(dense, using=DENSE), filter=flt, with_payload=True)
        elif strategy == "context":
            if sparse_q is None:
                return []
            request = edge.QueryRequest(limit=limit, query=edge.Query.Nearest(sparse_q, using=SPARSE), filter=flt, with_payload=True)
        else:
            prefetches = []
            if dense is not None:
                prefetches.append(edge.Prefetch(limit=prefetch_limit(limit), query=edge.Query.Nearest(dense, using=DENSE), filter=flt))
                if self.plain_vector:  # the same query vector against the message alone
                    prefetches.append(edge.Prefetch(limit=prefetch_limit(limit), query=edge.Query.Nearest(dense, using=PLAIN),
                                                    filter=flt))
            if sparse_q is not None:
                prefetches.append(edge.Prefetch(limit=prefetch_limit(limit), query=edge.Query.Nearest(sparse_q, using=SPARSE), filter=flt))
            if not prefetches:
                return []
            request = edge.QueryRequest(limit=limit, prefetches=prefetches, query=edge.Fusion.Rrf(k=RRF_K),  # type: ignore[arg-type]  # the stub misses Fusion's variants
                                        filter=flt,
                                        with_payload=True)
        return [(MemoryEntry.from_payload(_payload(p)), float(p.score)) for p in self._shard.query(request)]

    def search_images(self, user_id: str, vector: list[float], limit: int,
                      filters: dict[str, Any] | None = None) -> list[tuple[MemoryEntry, float]]:
        """The user's image entries nearest to ``vector`` (a CLIP text or image embedding)."""
        if self.image_dims is None:
            return []
        request = edge.QueryRequest(limit=limit, query=edge.Query.Nearest(vector, using=IMAGE),
                                    filter=edge_filter(build_filter(user_id, filters)), with_payload=True)
        return [(MemoryEntry.from_payload(_payload(p)), float(p.score)) for p in self._shard.query(request)]

    def close(self) -> None:
        """Flush and release the folder; closing again does nothing."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._shard.flush()
                self._shard.close()
            finally:
                self._cleanup()

    def _cleanup(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch.name, ignore_errors=True)
            self._scratch.cleanup()
            self._scratch = None
