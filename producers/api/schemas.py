"""The HTTP API's request and response bodies (the OpenAPI schema at ``/openapi.json``).

Requests refuse unknown fields. Responses that carry entries or search results allow fields beyond
those named here, so that a richer result (more metadata on an entry) does not break old clients.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["user", "assistant", "system", "tool"]
Strategy = Literal["embedding", "context", "hybrid"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Turn(_Request):
    """One message. ``time_stamp``: ISO 8601 (a stamp without a time zone is read as UTC); turns without
    one take the session's. ``id``: a stable message id (default: from its place in the session)."""

    role: Role
    content: str = Field(max_length=200_000)
    time_stamp: str | None = None
    speaker: str | None = None
    id: str | None = Field(None, min_length=1)


class SessionIn(_Request):
    """A whole session of one user. ``flush``: extract what the user's buffers hold once this session is
    buffered, instead of waiting for more turns (or the idle flush)."""

    session_id: str | None = Field(None, min_length=1)
    time_stamp: str | None = None
    turns: list[Turn] = Field(min_length=1, max_length=10_000)
    flush: bool = False


class TurnsIn(_Request):
    """Turns that continue a session; they are numbered after the turns queued for it before."""

    session_id: str = Field(min_length=1)
    turns: list[Turn] = Field(min_length=1, max_length=10_000)
    flush: bool = False


class SearchIn(_Request):
    """``filters``: ``{"speaker": "Caroline"}`` (equality), ``{"topic_id": {"in": [1, 2]}}`` (membership),
    ``{"time_stamp": {"gte": "2025-03-01", "lt": "2025-04-01"}}`` (a range)."""

    query: str = Field(min_length=1, max_length=10_000)
    limit: int = Field(5, ge=1, le=100)
    strategy: Strategy | None = None
    filters: dict[str, Any] | None = None
    graph_hops: int = Field(0, ge=0, le=2, description="with graph_mem: add the entries linked within 1 or 2 hops "
                                                       "of the entities the query names")


class Enqueued(BaseModel):
    """Durable in Redis: ``GET /v1/status/{tracking_id}`` follows it (queued → buffered → indexed or failed)."""

    tracking_id: str
    user_id: str


class Accepted(BaseModel):
    user_id: str
    queued: Literal[True] = True


class TrackingStatus(BaseModel):
    tracking_id: str
    user_id: str
    session_id: str | None = None
    state: Literal["queued", "buffered", "indexed", "failed"]
    turns: int | None = None
    queued_at: float | None = None
    indexed_at: float | None = None
    segments: int | None = None
    segments_stored: int | None = None
    reason: str | None = None
    note: str | None = None


class FailedBatch(BaseModel):
    batch_id: str
    reason: str | None = None
    failed_at: float | None = None
    attempts: int
    turns: int


class UserStatus(BaseModel):
    user_id: str
    known: bool
    queued_items: int
    buffered_turns: int
    buffered_segments: int
    batches_in_flight: int
    failed_batches: list[FailedBatch]
    counters: dict[str, float]


class Entry(BaseModel):
    """A stored memory entry."""

    model_config = ConfigDict(extra="allow")
    id: str
    user_id: str
    memory: str
    time_stamp: str


class Entries(BaseModel):
    user_id: str
    entries: list[Entry]


class Hit(BaseModel):
    """A search result: the entry's text, its score, and (where kept) the original messages."""

    model_config = ConfigDict(extra="allow")
    id: str
    score: float
    memory: str
    time_stamp: str


class SearchOut(BaseModel):
    user_id: str
    results: list[Hit]


class Change(BaseModel):
    """One recorded change of an entry: ``ADD``, ``UPDATE`` or ``DELETE``, with the text before and after."""

    model_config = ConfigDict(extra="allow")
    entry_id: str
    user_id: str
    action: str
    old_text: str | None = None
    new_text: str | None = None
    reason: str | None = None
    created_at: float


class History(BaseModel):
    entry_id: str
    changes: list[Change]


class Deleted(BaseModel):
    user_id: str
    entry_id: str


class UserDeleted(BaseModel):
    user_id: str
    entries_deleted: int
    redis_keys_deleted: int


class Stats(BaseModel):
    """``lightmem stats``: compression ratio, entries, LLM calls and tokens per 1,000 turns, every user."""

    stats: dict[str, float]


class Check(BaseModel):
    status: Literal["ok", "failed"]
    detail: str | None = None


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, Check]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every error: a stable ``code`` (``invalid_input``, ``unauthorized``, ``forbidden``, ``not_found``,
    ``payload_too_large``, ``unavailable``, ``internal``...) and a message for a person."""

    error: ErrorDetail
