"""The collection layout both engines share, and the creation of an Edge shard with it.

A named dense vector ``dense`` (cosine) sized from the embedder, a sparse ``bm25`` vector with Qdrant's IDF
modifier, with ``index_plain_vector`` a second dense vector ``plain`` (the message alone, beside ``dense``
that may read its topic's previous turns), with ``multimodal_embedder`` an ``image`` vector (cosine) sized from the CLIP model, which only
image entries have, payload indexes on the user scope, the speaker and the numeric twins of the time fields. An embedded
folder keeps its Edge shard in ``<path>/edge/<collection>``.
"""

from __future__ import annotations

from pathlib import Path

import qdrant_edge as edge

DENSE = "dense"
PLAIN = "plain"
SPARSE = "bm25"
IMAGE = "image"
# Payload fields with an index: the user scope on every query, the speaker (speaker_match searches a named
# speaker's entries), and the numeric time twins of range filters.
PAYLOAD_INDEXES = {"user_id": edge.PayloadSchemaType.Keyword, "speaker": edge.PayloadSchemaType.Keyword,
                   "ts": edge.PayloadSchemaType.Float,
                   "created_ts": edge.PayloadSchemaType.Float, "updated_ts": edge.PayloadSchemaType.Float}


def shard_dir(path: str | Path, collection: str) -> Path:
    return Path(path) / "edge" / collection


def shard_config(dims: int, on_disk: bool = False, image_dims: int | None = None, plain: bool = False) -> edge.EdgeConfig:
    memory = edge.Memory.Cold if on_disk else None
    vectors = {DENSE: edge.EdgeVectorParams(size=dims, distance=edge.Distance.Cosine, memory=memory)}
    if plain:
        vectors[PLAIN] = edge.EdgeVectorParams(size=dims, distance=edge.Distance.Cosine, memory=memory)
    if image_dims is not None:
        vectors[IMAGE] = edge.EdgeVectorParams(size=image_dims, distance=edge.Distance.Cosine, memory=memory)
    return edge.EdgeConfig(
        vectors=vectors,
        sparse_vectors={SPARSE: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)},
    )


def add_missing_indexes(shard: edge.EdgeShard) -> edge.EdgeShard:
    """A shard written by an older version gets the payload indexes it lacks (the speaker's came later)."""
    present = set(shard.info().payload_schema)
    for field, schema in PAYLOAD_INDEXES.items():
        if field not in present:
            shard.update(edge.UpdateOperation.create_field_index(field, schema))
    return shard


def create_shard(folder: Path, dims: int, on_disk: bool = False, image_dims: int | None = None,
                 plain: bool = False) -> edge.EdgeShard:
    """A new, empty shard with the collection layout and its payload indexes."""
    shard = edge.EdgeShard.create(str(folder), shard_config(dims, on_disk, image_dims, plain))
    for field, schema in PAYLOAD_INDEXES.items():
        shard.update(edge.UpdateOperation.create_field_index(field, schema))
    return shard
