"""The pipeline's stages as plain typed functions, shared by ``LightMemory`` and the Celery workers."""

from __future__ import annotations

from collections.abc import Callable

from lightmem_core.bm25 import BM25Encoder
from lightmem_core.compressors.base import Compressor
from lightmem_core.embedders.base import Embedder
from lightmem_core.models import MemoryEntry, Message
from lightmem_core.segmenters.base import Segmenter
from lightmem_core.stores.base import MemoryStore

TokenCounter = Callable[[str], int]


def count_message_tokens(messages: list[Message], count: TokenCounter) -> list[Message]:
    """Copies of ``messages`` with ``tokens_original`` filled in."""
    return [m.model_copy(update={"tokens_original": count(m.content)}) for m in messages]


def compress_messages(messages: list[Message], compressor: Compressor | None, roles: set[str]) -> list[Message]:
    """Compress the messages of ``roles`` in one batched call; the original text stays in ``content``."""
    chosen = [i for i, m in enumerate(messages) if m.role in roles]
    if compressor is None or not chosen:
        return list(messages)
    groups = [f"{messages[i].user_id}\x1f{messages[i].session_id}" for i in chosen]
    results = compressor.compress([messages[i].content for i in chosen], groups)
    out = list(messages)
    for i, result in zip(chosen, results, strict=True):
        out[i] = out[i].model_copy(update={"compressed": result.text, "tokens_compressed": result.tokens_after})
    return out


def split_sessions(messages: list[Message]) -> list[list[Message]]:
    """Group messages by session, each group in (time, turn) order, groups by their first message."""
    groups: dict[str, list[Message]] = {}
    for m in messages:
        groups.setdefault(m.session_id, []).append(m)
    ordered = [sorted(g, key=lambda m: m.order_key) for g in groups.values()]
    return sorted(ordered, key=lambda g: g[0].order_key)


def cut_topics(session_messages: list[Message], segmenter: Segmenter | None) -> list[list[Message]]:
    """Cut one session's messages at the segmenter's boundaries (one segment without a segmenter)."""
    if segmenter is None or len(session_messages) < 2:
        return [session_messages] if session_messages else []
    cuts = [b for b in segmenter.boundaries(session_messages) if 0 < b < len(session_messages)]
    edges = [0, *sorted(set(cuts)), len(session_messages)]
    return [session_messages[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]


def extraction_tokens(messages: list[Message], roles: set[str], count: TokenCounter) -> int:
    """Tokens that extraction will see: the (compressed) text of the messages of ``roles``."""
    return sum(m.tokens_compressed if m.tokens_compressed is not None else count(m.text) for m in messages if m.role in roles)


def index_entries(
    entries: list[MemoryEntry],
    store: MemoryStore,
    embedder: Embedder | None,
    bm25: BM25Encoder | None,
) -> None:
    """Embed (batched) and upsert entries with the vectors the index strategy asks for."""
    if not entries:
        return
    texts = [e.memory for e in entries]
    dense = embedder.embed(texts) if embedder is not None else None
    sparse = [bm25.encode_document(t) for t in texts] if bm25 is not None else None
    store.upsert(entries, dense, sparse)
