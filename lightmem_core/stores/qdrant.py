"""The Qdrant server store (``url``), through qdrant-client.

One collection per memory space with a named dense vector (``dense``, cosine) sized from the embedder
and a sparse BM25 vector (``bm25``) with Qdrant's IDF modifier, and payload indexes on the user and the
times (with ``image_dims``, the ``image`` vector of image entries too; with ``plain_vector``, a second dense
vector ``plain`` of the message alone, fused as a third list in hybrid search). Points are keyed by the entries' deterministic ids, so every upsert is idempotent. Any number of
processes on any number of hosts use one server.

qdrant-client's local mode (``path`` or ``:memory:``) speaks the same API without a server. It is no
longer the embedded engine (that is Qdrant Edge, ``lightmem_core/stores/edge.py``): it filters point by
point in Python. It remains the stand-in for a server in the store contract tests, and the format of
folders written by earlier versions, which ``lightmem_core/stores/migrate.py`` copies into Edge.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from qdrant_client import QdrantClient, models

from lightmem_core.embedders.bm25 import SparseVec
from lightmem_core.errors import StoreError
from lightmem_core.models import MemoryEntry
from lightmem_core.stores.base import SearchStrategy, check_images, checked_plain, missing_plain_warning
from lightmem_core.stores.filters import build_filter, prefetch_limit, user_condition
from lightmem_core.stores.layout import DENSE, IMAGE, PLAIN, SPARSE

log = logging.getLogger(__name__)
_UPSERT_BATCH = 256
_SCROLL_PAGE = 512


class QdrantStore:
    """Entries in one Qdrant collection; thread-safe (one client call at a time for local mode)."""

    def __init__(
        self,
        collection: str,
        dims: int,
        path: str | None = None,
        url: str | None = None,
        api_key: str | None = None,
        on_disk: bool = False,
        timeout_s: float = 10.0,
        image_dims: int | None = None,
        plain_vector: bool = False,
    ) -> None:
        self.collection = collection
        self.dims = dims
        self.image_dims = image_dims
        self.plain_vector = plain_vector  # off below when an older collection lacks the vector
        self.is_server = url is not None
        try:
            if url is not None:
                self._client = QdrantClient(url=url, api_key=api_key, timeout=int(timeout_s))
            else:
                self._client = QdrantClient(path=path) if path and path != ":memory:" else QdrantClient(location=":memory:")
        except RuntimeError as exc:  # local mode raises RuntimeError when another process holds the folder
            raise StoreError(f"cannot open Qdrant at {url or path}: {exc}") from exc
        self._on_disk = on_disk
        self._lock = threading.RLock()
        self._ensure_collection()

    # --- schema -----------------------------------------------------------------------------------
    def _ensure_collection(self) -> None:
        with self._lock:
            if self._client.collection_exists(self.collection):
                if self._check_dims() is None and self.plain_vector:
                    log.warning(missing_plain_warning(self.collection))
                    self.plain_vector = False
                return
            vectors = {DENSE: models.VectorParams(size=self.dims, distance=models.Distance.COSINE, on_disk=self._on_disk)}
            if self.plain_vector:
                vectors[PLAIN] = models.VectorParams(size=self.dims, distance=models.Distance.COSINE, on_disk=self._on_disk)
            if self.image_dims is not None:
                vectors[IMAGE] = models.VectorParams(size=self.image_dims, distance=models.Distance.COSINE,
                                                     on_disk=self._on_disk)
            self._client.create_collection(
                self.collection,
                vectors_config=vectors,
                sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            )
            if self.is_server:  # payload indexes exist only on a server; local mode warns and ignores them
                for field in ("user_id", "speaker"):
                    self._client.create_payload_index(self.collection, field, models.PayloadSchemaType.KEYWORD)
                for field in ("ts", "created_ts", "updated_ts"):
                    self._client.create_payload_index(self.collection, field, models.PayloadSchemaType.FLOAT)
            log.info("created Qdrant collection %s (%d dims)", self.collection, self.dims)

    def _check_dims(self) -> models.VectorParams | None:
        """The collection's ``plain`` vector (``None``: it has none), after checking the sizes."""
        info = self._client.get_collection(self.collection)
        vectors = info.config.params.vectors
        existing = vectors.get(DENSE) if isinstance(vectors, dict) else None
        if existing is None or existing.size != self.dims:
            have = existing.size if existing is not None else "no 'dense' vector"
            raise StoreError(f"collection {self.collection!r} has dense size {have}, the embedder gives {self.dims}")
        image = vectors.get(IMAGE) if isinstance(vectors, dict) else None
        if self.image_dims is not None and (image is None or image.size != self.image_dims):
            found = image.size if image is not None else "no 'image' vector"
            raise StoreError(f"collection {self.collection!r} has image size {found}, the multimodal embedder gives "
                             f"{self.image_dims} (a collection made without multimodal_embedder needs a new collection_name)")
        return vectors.get(PLAIN) if isinstance(vectors, dict) else None

    # --- writes -----------------------------------------------------------------------------------
    def upsert(self, entries: list[MemoryEntry], dense: list[list[float]] | None, sparse: list[SparseVec] | None,
               images: list[list[float]] | None = None, plain: list[list[float]] | None = None) -> None:
        check_images(entries, images, self.image_dims)
        plain = checked_plain(entries, dense, plain, self.dims) if self.plain_vector else None
        if dense is not None and len(dense) != len(entries):
            raise StoreError(f"{len(entries)} entries but {len(dense)} dense vectors")
        if sparse is not None and len(sparse) != len(entries):
            raise StoreError(f"{len(entries)} entries but {len(sparse)} sparse vectors")
        points = []
        for i, entry in enumerate(entries):
            vector: dict[str, Any] = {}
            if dense is not None:
                vector[DENSE] = dense[i]
            if plain is not None:
                vector[PLAIN] = plain[i]
            if sparse is not None:
                vector[SPARSE] = models.SparseVector(indices=sparse[i].indices, values=sparse[i].values)
            if images is not None:
                vector[IMAGE] = images[i]
            points.append(models.PointStruct(id=entry.id, vector=vector, payload=entry.to_payload()))
        with self._lock:
            for start in range(0, len(points), _UPSERT_BATCH):
                self._client.upsert(self.collection, points=points[start : start + _UPSERT_BATCH], wait=True)

    def delete(self, entry_ids: list[str]) -> None:
        if entry_ids:
            with self._lock:
                self._client.delete(self.collection, points_selector=models.PointIdsList(points=list(entry_ids)), wait=True)

    def delete_user(self, user_id: str) -> None:
        with self._lock:
            self._client.delete(
                self.collection,
                points_selector=models.FilterSelector(filter=models.Filter(must=[user_condition(user_id)])),
                wait=True,
            )

    def reset(self) -> None:
        with self._lock:
            if self._client.collection_exists(self.collection):
                self._client.delete_collection(self.collection)
            self._ensure_collection()

    # --- reads ------------------------------------------------------------------------------------
    def get(self, entry_ids: list[str]) -> list[MemoryEntry]:
        if not entry_ids:
            return []
        with self._lock:
            records = self._client.retrieve(self.collection, ids=list(entry_ids), with_payload=True)
        by_id = {str(r.id): MemoryEntry.from_payload(r.payload or {}) for r in records}
        return [by_id[i] for i in entry_ids if i in by_id]

    def dense_vectors(self, entry_ids: list[str]) -> dict[str, list[float]]:
        if not entry_ids:
            return {}
        with self._lock:
            records = self._client.retrieve(self.collection, ids=list(entry_ids), with_payload=False, with_vectors=[DENSE])
        out: dict[str, list[float]] = {}
        for r in records:
            vec = r.vector.get(DENSE) if isinstance(r.vector, dict) else None
            if isinstance(vec, list):
                out[str(r.id)] = [float(x) for x in vec]  # type: ignore[arg-type]
        return out

    def list_entries(self, user_id: str, since_ts: float | None = None) -> list[MemoryEntry]:
        """All of a user's entries (optionally only those created at or after ``since_ts``), oldest first."""
        flt = build_filter(user_id, {"created_at": {"gte": since_ts}} if since_ts is not None else None)
        entries: list[MemoryEntry] = []
        offset: Any = None
        with self._lock:
            while True:
                page, offset = self._client.scroll(
                    self.collection, scroll_filter=flt, limit=_SCROLL_PAGE, offset=offset, with_payload=True
                )
                entries.extend(MemoryEntry.from_payload(p.payload or {}) for p in page)
                if offset is None:
                    break
        entries.sort(key=lambda e: (e.time_stamp, e.created_at, e.id))
        return entries

    def count(self, user_id: str | None = None) -> int:
        flt = models.Filter(must=[user_condition(user_id)]) if user_id is not None else None
        with self._lock:
            return int(self._client.count(self.collection, count_filter=flt, exact=True).count)

    def search(
        self,
        user_id: str,
        strategy: SearchStrategy,
        dense: list[float] | None,
        sparse: SparseVec | None,
        limit: int,
        filters: dict[str, Any] | None = None,
    ) -> list[tuple[MemoryEntry, float]]:
        flt = build_filter(user_id, filters)
        sparse_q = models.SparseVector(indices=sparse.indices, values=sparse.values) if sparse is not None else None
        with self._lock:
            if strategy == "embedding":
                if dense is None:
                    return []
                result = self._client.query_points(self.collection, query=dense, using=DENSE, query_filter=flt, limit=limit, with_payload=True)
            elif strategy == "context":
                if sparse_q is None or not sparse_q.indices:
                    return []
                result = self._client.query_points(self.collection, query=sparse_q, using=SPARSE, query_filter=flt, limit=limit, with_payload=True)
            else:
                # Reciprocal rank fusion of both candidate lists, computed inside Qdrant.
                prefetch = [models.Prefetch(query=dense, using=DENSE, filter=flt, limit=prefetch_limit(limit))] if dense is not None else []
                if dense is not None and self.plain_vector:  # the same query vector against the message alone
                    prefetch.append(models.Prefetch(query=dense, using=PLAIN, filter=flt, limit=prefetch_limit(limit)))
                if sparse_q is not None and sparse_q.indices:
                    prefetch.append(models.Prefetch(query=sparse_q, using=SPARSE, filter=flt, limit=prefetch_limit(limit)))
                if not prefetch:
                    return []
                result = self._client.query_points(
                    self.collection, prefetch=prefetch, query=models.FusionQuery(fusion=models.Fusion.RRF),
                    query_filter=flt, limit=limit, with_payload=True,
                )
        return [(MemoryEntry.from_payload(p.payload or {}), float(p.score)) for p in result.points]

    def search_images(self, user_id: str, vector: list[float], limit: int,
                      filters: dict[str, Any] | None = None) -> list[tuple[MemoryEntry, float]]:
        """The user's image entries nearest to ``vector`` (a CLIP text or image embedding)."""
        if self.image_dims is None:
            return []
        with self._lock:
            result = self._client.query_points(self.collection, query=vector, using=IMAGE,
                                               query_filter=build_filter(user_id, filters), limit=limit, with_payload=True)
        return [(MemoryEntry.from_payload(p.payload or {}), float(p.score)) for p in result.points]

    def close(self) -> None:
        with self._lock:
            self._client.close()
