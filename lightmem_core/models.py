"""The data model: messages, sessions, topic segments, memory entries and retrieval results.

All models are JSON-serialisable Pydantic models, so the same objects travel through Redis queues,
live in the SQLite history store and become Qdrant payloads.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lightmem_core.timeparse import parse_time, weekday_name

Role = Literal["user", "assistant", "system", "tool"]
ROLES: tuple[str, ...] = ("user", "assistant", "system", "tool")

# Fixed namespace so that entry and message ids are the same on every machine and every run.
_ID_NAMESPACE = uuid.UUID("6f1c2a52-4d0e-4f57-9d0b-5b1f3c3e8a10")


def utc_now() -> datetime:
    return datetime.now(tz=UTC)


def stable_id(*parts: str) -> str:
    """A deterministic UUID (as string) from the given parts; Qdrant accepts it as a point id."""
    return str(uuid.uuid5(_ID_NAMESPACE, "\x1f".join(parts)))


def message_id_for(user_id: str, session_id: str, turn_index: int) -> str:
    """The id given to a message that arrives without one: its place in the user's session."""
    return stable_id("msg", user_id, session_id, str(turn_index))


def entry_id_for(user_id: str, source_ids: list[str], text: str) -> str:
    """Deterministic entry id: the same facts from the same messages always get the same id."""
    digest = hashlib.sha1(text.strip().encode("utf-8")).hexdigest()
    return stable_id("entry", user_id, *sorted(source_ids), digest)


class ImagePart(BaseModel):
    """An image a message carries (``lightmem_core/images.py`` validates it at ingest).

    ``url`` is a ``data:image/...;base64,`` URL (the bytes travel with the message), a local file path
    (by reference: every worker must see the file), an ``http(s)://`` URL (by reference; sent to a vision
    model as it is, never fetched here), or ``None`` when only a caption is known. ``caption`` (LoCoMo's
    ``blip_caption``) is kept as text.
    """

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    caption: str | None = None


class Message(BaseModel):
    """One conversation turn, as validated at the edge.

    ``content`` is the original text and is never changed; ``compressed`` holds the
    pre-compressed text when a compressor ran.
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    user_id: str
    session_id: str
    turn_index: int = Field(ge=0)
    role: Role
    content: str
    time_stamp: datetime
    speaker: str | None = None
    images: list[ImagePart] = Field(default_factory=list)
    compressed: str | None = None
    tokens_original: int = 0
    tokens_compressed: int | None = None

    @field_validator("time_stamp", mode="before")
    @classmethod
    def _parse_time(cls, value: object) -> datetime:
        return parse_time(value)

    @property
    def text(self) -> str:
        """The text that later stages use: the compressed form when there is one."""
        return self.compressed if self.compressed is not None else self.content

    @property
    def order_key(self) -> tuple[float, int]:
        """Messages of one user are applied in (session time, turn index) order."""
        return (self.time_stamp.timestamp(), self.turn_index)


class Session(BaseModel):
    """A user's session: an id, a time stamp and its turns in order."""

    model_config = ConfigDict(extra="forbid")

    user_id: str
    session_id: str
    time_stamp: datetime
    messages: list[Message]

    @field_validator("time_stamp", mode="before")
    @classmethod
    def _parse_time(cls, value: object) -> datetime:
        return parse_time(value)


class TopicSegment(BaseModel):
    """Consecutive messages of one session about one topic; never crosses a session boundary."""

    model_config = ConfigDict(extra="forbid")

    user_id: str
    session_id: str
    topic_id: int
    messages: list[Message]

    @property
    def message_ids(self) -> list[str]:
        return [m.id for m in self.messages]


class MemoryEntry(BaseModel):
    """One long-term memory: a fact with its provenance, times and optional metadata."""

    model_config = ConfigDict(extra="forbid")

    id: str
    user_id: str
    memory: str
    time_stamp: datetime
    weekday: str = ""
    topic_id: int = 0
    session_id: str = ""
    source_ids: list[str] = Field(default_factory=list)
    speaker: str | None = None
    keywords: list[str] = Field(default_factory=list)
    category: str | None = None
    summary: str | None = None
    # "image": an image of a message (``multimodal_embedder``), never changed by an update; ``image_url``
    # is its reference (a path, an http URL, or ``sha256:<digest>`` for inline bytes, embedded, not kept).
    kind: Literal["fact", "image"] = "fact"
    image_url: str | None = None
    # What the vectors are made from when it is not ``memory`` (verbatim entries, see
    # lightmem_core/extraction/index_text.py): BM25 from ``match_text`` (the original message), the dense
    # vector from ``embed_text`` (the message with its topic's previous turns). Never returned; an update
    # that rewrites ``memory`` clears them.
    match_text: str | None = None
    embed_text: str | None = None
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)

    @field_validator("time_stamp", "created_at", "updated_at", mode="before")
    @classmethod
    def _parse_time(cls, value: object) -> datetime:
        return parse_time(value)

    def model_post_init(self, __context: Any) -> None:
        if not self.weekday:
            self.weekday = weekday_name(self.time_stamp)

    def to_payload(self) -> dict[str, Any]:
        """The Qdrant payload: JSON values plus numeric times for range filters."""
        payload = self.model_dump(mode="json")
        payload["ts"] = self.time_stamp.timestamp()
        payload["created_ts"] = self.created_at.timestamp()
        payload["updated_ts"] = self.updated_at.timestamp()
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> MemoryEntry:
        fields = {k: v for k, v in payload.items() if k in cls.model_fields}
        return cls.model_validate(fields)


class SourceMessage(BaseModel):
    """An original message behind an entry, as the history store keeps it."""

    id: str
    session_id: str
    role: str
    speaker: str | None = None
    content: str
    time_stamp: datetime


class RetrievedMemory(BaseModel):
    """A retrieval result: the entry, its score, and the original messages it comes from."""

    id: str
    score: float
    memory: str
    time_stamp: datetime
    weekday: str
    entry: MemoryEntry
    sources: list[SourceMessage] = Field(default_factory=list)

    def as_line(self) -> str:
        """LightMem's plain-string form: ``2025-01-10 Fri: text``."""
        return f"{self.time_stamp.date().isoformat()} {self.weekday}: {self.memory}"
