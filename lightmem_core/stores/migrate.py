"""One-time copy of a folder written by the previous version (qdrant-client local mode) into Qdrant Edge.

Local mode keeps ``<path>/meta.json`` and ``<path>/collection/<name>/storage.sqlite``; Edge cannot read
them. On the first open of such a folder every point (id, both vectors, payload) is copied into a new
shard built under a temporary name and renamed into place only when complete and counted, so a crash
mid-way leaves nothing half-written: the next open starts the copy again. The old files are left where
they are, as a backup.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import qdrant_edge as edge
from tqdm import tqdm

from lightmem_core.errors import StoreError
from lightmem_core.stores.layout import DENSE, SPARSE, create_shard, shard_dir

log = logging.getLogger(__name__)
_PAGE = 512


def local_mode_collections(path: Path) -> set[str]:
    """The collections a qdrant-client local-mode folder holds (none when it is not one)."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return set()
    return set(meta.get("collections", {})) if isinstance(meta, dict) else set()


def migrate_local_mode(path: Path, collection: str, dims: int, on_disk: bool = False, progress: bool = True) -> int:
    """Copy ``collection`` from the local-mode folder at ``path`` into ``path/edge/collection``.

    Returns the points copied (0 when there is nothing to migrate)."""
    from qdrant_client import QdrantClient, models


    if collection not in local_mode_collections(path):
        return 0
    target = shard_dir(path, collection)
    partial = target.with_name(target.name + ".migrating")
    shutil.rmtree(partial, ignore_errors=True)  # a copy cut short by a crash starts again
    try:
        client = QdrantClient(path=str(path))
    except RuntimeError as exc:
        raise StoreError(f"cannot open {path} to migrate it: {exc}") from exc
    try:
        vectors = client.get_collection(collection).config.params.vectors
        have = vectors.get(DENSE).size if isinstance(vectors, dict) and vectors.get(DENSE) else None  # type: ignore[union-attr]
        if have != dims:
            raise StoreError(f"collection {collection!r} in {path} has dense size {have}, the embedder gives {dims}")
        total = client.count(collection, exact=True).count
        partial.parent.mkdir(parents=True, exist_ok=True)
        shard = create_shard(partial, dims, on_disk)
        copied = 0
        offset: Any = None
        with tqdm(total=total, desc=f"migrating {collection} to Qdrant Edge", unit="entry", disable=not progress) as bar:
            while True:
                page, offset = client.scroll(collection, limit=_PAGE, offset=offset, with_payload=True, with_vectors=True)
                points = []
                for p in page:
                    vec = p.vector if isinstance(p.vector, dict) else {}
                    vector: dict[str, Any] = {}
                    if isinstance(vec.get(DENSE), list):
                        vector[DENSE] = vec[DENSE]
                    sp = vec.get(SPARSE)
                    if isinstance(sp, models.SparseVector):
                        vector[SPARSE] = edge.SparseVector(list(sp.indices), list(sp.values))
                    points.append(edge.Point(str(p.id), vector, p.payload or {}))
                if points:
                    shard.update(edge.UpdateOperation.upsert_points(points))
                copied += len(points)
                bar.update(len(points))
                if offset is None:
                    break
        counted = shard.count(edge.CountRequest(exact=True))
        shard.flush()
        shard.close()
        if counted != total:
            raise StoreError(f"migration of {collection!r} copied {counted} of {total} points; the old folder is untouched")
    finally:
        client.close()
    partial.rename(target)
    log.info("migrated %d entries of collection %s from qdrant-client local mode into Qdrant Edge at %s; "
             "the old files in %s stay as a backup", copied, collection, target, path)
    return copied
