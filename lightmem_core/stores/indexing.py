"""Indexing: embed entries (batched) and upsert them with the vectors the index strategy asks for; with
``index_plain_vector``, the ``plain`` vector of the message alone beside the contextual ``dense`` one; with
``multimodal_embedder``, the image entries of a batch's messages with their ``image`` vectors."""

from __future__ import annotations

import logging
from collections.abc import Set as AbstractSet

from lightmem_core.embedders.base import Embedder, ImageEmbedder
from lightmem_core.embedders.bm25 import BM25Encoder
from lightmem_core.images import image_bytes, reference
from lightmem_core.models import MemoryEntry, TopicSegment, stable_id
from lightmem_core.stores.base import MemoryStore

log = logging.getLogger(__name__)
Vectors = tuple[list[list[float]] | None, list[list[float]] | None]  # dense and plain, one per entry (or None)


def index_entries(
    entries: list[MemoryEntry],
    store: MemoryStore,
    embedder: Embedder | None,
    bm25: BM25Encoder | None,
    images: list[list[float]] | None = None,
    vectors: Vectors | None = None,
) -> None:
    """Embed (batched) and upsert entries with the vectors the index strategy asks for (and ``images``,
    one image vector per entry, when given). ``vectors``: the entries' ``dense_vectors``, embedded
    before (``vectors_by_group``), so that nothing is embedded here."""
    if not entries:
        return
    dense, plain = vectors if vectors is not None else dense_vectors(entries, embedder, store.plain_vector)
    sparse = [bm25.encode_document(e.match_text or e.memory) for e in entries] if bm25 is not None else None
    if images is None and plain is None:
        store.upsert(entries, dense, sparse)
    else:
        store.upsert(entries, dense, sparse, images, plain)


def plain_text(entry: MemoryEntry) -> str:
    """The message alone: BM25's text (the original message with its speaker) or the entry's own, which is
    what ``embed_text`` would be without context turns."""
    return entry.match_text or entry.memory


def dense_vectors(entries: list[MemoryEntry], embedder: Embedder | None, with_plain: bool) -> Vectors:
    """The ``dense`` vectors (``embed_text``: with context) and, when ``with_plain``, the ``plain`` ones, in one
    embedding call that embeds a plain text only where it differs from the dense one."""
    if embedder is None:
        return None, None
    texts = [e.embed_text or e.memory for e in entries]
    differ = [i for i, e in enumerate(entries) if plain_text(e) != texts[i]] if with_plain else []
    vectors = embedder.embed(texts + [plain_text(entries[i]) for i in differ])
    dense = vectors[: len(entries)]
    if not with_plain:
        return dense, None
    plain = list(dense)
    for k, i in enumerate(differ):
        plain[i] = vectors[len(entries) + k]
    return dense, plain


def vectors_by_group(groups: list[list[MemoryEntry]], embedder: Embedder | None, with_plain: bool) -> list[Vectors]:
    """``dense_vectors`` of several groups of entries (several batches) in one embedding call, split back by
    group. Why: on a CPU one call embeds faster than the same texts in calls of one batch's entries
    (docs/performance.md: 2,000 LoCoMo entries, two threads, 13.2 s in one call against 17.6 s in calls of 37)."""
    dense, plain = dense_vectors([e for group in groups for e in group], embedder, with_plain)
    out: list[Vectors] = []
    start = 0
    for group in groups:
        end = start + len(group)
        out.append((dense[start:end] if dense is not None else None, plain[start:end] if plain is not None else None))
        start = end
    return out


def image_entries(segments: list[TopicSegment], roles: AbstractSet[str]) -> list[tuple[MemoryEntry, str | None]]:
    """One entry per image of the messages of ``roles``, whose provenance is its message, with the image's
    URL. Its text is the caption (kept as text), so text search finds it as well as image search."""
    out: list[tuple[MemoryEntry, str | None]] = []
    for segment in segments:
        for m in segment.messages:
            if m.role not in roles:
                continue
            who = m.speaker or m.role
            for k, image in enumerate(m.images):
                said = m.content.strip()
                text = (f"{who} shared an image: {image.caption}" if image.caption
                        else f"{who} shared an image with the message: {said}" if said else f"{who} shared an image")
                entry = MemoryEntry(
                    id=stable_id("image", m.user_id, m.id, str(k)), user_id=m.user_id, memory=text,
                    time_stamp=m.time_stamp, topic_id=segment.topic_id, session_id=segment.session_id,
                    source_ids=[m.id], speaker=who, kind="image", image_url=reference(image.url) if image.url else None,
                )
                out.append((entry, image.url))
    return out


def index_images(segments: list[TopicSegment], roles: AbstractSet[str], store: MemoryStore, embedder: Embedder | None,
                 bm25: BM25Encoder | None, image_embedder: ImageEmbedder) -> int:
    """Upsert the image entries of a batch: text vectors of their captions, and the ``image`` vector of
    every image whose bytes are here (inline or a local file; a remote URL is kept by reference only).
    Returns the number of image entries."""
    found = image_entries(segments, roles)
    embeddable: list[tuple[MemoryEntry, bytes]] = []
    by_reference: list[MemoryEntry] = []
    for entry, url in found:
        try:
            data = image_bytes(url) if url else None
        except (OSError, ValueError) as exc:  # checked at ingest; a file removed since costs its vector only
            log.warning("image of entry %s not embedded: %s", entry.id, type(exc).__name__)
            data = None
        if data is None:
            by_reference.append(entry)
        else:
            embeddable.append((entry, data))
    if embeddable:
        entries = [e for e, _ in embeddable]
        index_entries(entries, store, embedder, bm25, images=image_embedder.embed_images([d for _, d in embeddable]))
    index_entries(by_reference, store, embedder, bm25)
    return len(found)
