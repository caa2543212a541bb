"""Token counting and pre-compression of messages: the first stage, one batched call per ingest."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Set as AbstractSet

from lightmem_core.models import Message
from lightmem_core.sensory.compressors.base import Compressor

TokenCounter = Callable[[str], int]


def count_message_tokens(messages: list[Message], count: TokenCounter) -> list[Message]:
    """Copies of ``messages`` with ``tokens_original`` filled in."""
    return [m.model_copy(update={"tokens_original": count(m.content)}) for m in messages]


def compress_messages(messages: list[Message], compressor: Compressor | None, roles: AbstractSet[str]) -> list[Message]:
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
