"""The extraction role and its model-free backend, verbatim mode.

An extractor turns a batch of topic segments into memory entries with provenance. Verbatim mode
makes one entry per message of the roles in ``messages_use`` (after compression, when on), so the
whole pipeline runs without any LLM.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import Protocol, runtime_checkable

from lightmem_core.extraction.index_text import IndexTexts, embed_text, match_text
from lightmem_core.graph.model import GraphFacts
from lightmem_core.models import MemoryEntry, Message, TopicSegment, entry_id_for


class Extractor(Protocol):
    """Turns topic segments (one user, one batch) into memory entries."""

    def extract(self, segments: list[TopicSegment]) -> list[MemoryEntry]: ...


@runtime_checkable
class GraphExtractor(Protocol):
    """An extractor whose one call also gives the graph facts (``graph_mem``; ``None`` when off)."""

    def extract_with_graph(self, segments: list[TopicSegment]) -> tuple[list[MemoryEntry], GraphFacts | None]: ...


def entry_text(message: Message) -> str:
    """A message as a standalone memory: the speaker's name first when it is known."""
    text = message.text.strip()
    return f"{message.speaker}: {text}" if message.speaker else text


class VerbatimExtractor:
    """One entry per message of the selected roles; no LLM call."""

    def __init__(self, roles: set[str], index: IndexTexts | None = None) -> None:
        self.roles = roles
        self.index = index or IndexTexts()

    def extract(self, segments: list[TopicSegment]) -> list[MemoryEntry]:
        entries: list[MemoryEntry] = []
        for segment in segments:
            for i, message in enumerate(segment.messages):
                if message.role not in self.roles or not message.text.strip():
                    continue
                text = entry_text(message)
                entries.append(
                    MemoryEntry(
                        id=entry_id_for(segment.user_id, [message.id], text),
                        user_id=segment.user_id,
                        memory=text,
                        time_stamp=message.time_stamp,
                        topic_id=segment.topic_id,
                        session_id=segment.session_id,
                        source_ids=[message.id],
                        speaker=message.speaker or message.role,
                        match_text=match_text(message, self.index),
                        embed_text=embed_text(segment.messages, i, self.index),
                    )
                )
        return entries


def extraction_tokens(messages: list[Message], roles: AbstractSet[str], count: Callable[[str], int]) -> int:
    """Tokens that extraction will see: the (compressed) text of the messages of ``roles``."""
    return sum(m.tokens_compressed if m.tokens_compressed is not None else count(m.text) for m in messages if m.role in roles)
