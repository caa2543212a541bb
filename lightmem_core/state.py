"""The state interface the pipeline's stages are written against, and the batch it moves around.

Two implementations: ``lightmem_core.sqlite_state.SQLiteState`` (the library, in the history
database) and ``workers.redis_state.RedisState`` (the workers, in the broker's Redis). A stage never
knows which one it talks to, so both drivers cut, buffer, batch, fail and retry alike.

What the state holds per user:

- the **seen** message ids (appends are guarded by them, so a task that runs twice appends once);
- the **sensory buffer**: messages waiting for enough text to cut topic segments;
- the **short-term buffer**: topic segments waiting for extraction, in (session time, turn) order;
- **batches in flight**: segments taken for extraction, with their topic ids, owned by one run
  (a re-run of the same owner, or anyone after the lease, takes the batch again);
- **failed batches**: batches whose extraction or storing failed for good, with the reason and the
  raw reply, until ``retry_failed`` takes them back into flight;
- live counters beside the history's record (what ``lightmem stats`` reads), and the user's lock.
"""

from __future__ import annotations

import time
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, Field

from lightmem_core.graph.model import GraphFacts
from lightmem_core.models import Message, TopicSegment

_TS_OFFSET_MS = 10**14  # keys sort as text: shift times so that pre-1970 stamps stay positive


def segment_key(segment: list[Message]) -> str:
    """A key that sorts as the segment's (session time, turn index), unique by its first message id."""
    first = segment[0]
    ts_ms = int(round(first.time_stamp.timestamp() * 1000)) + _TS_OFFSET_MS
    return f"{ts_ms:016d}|{first.turn_index:07d}|{first.id}"


def earliest_key(messages: list[Message]) -> str:
    """The smallest key any segment cut from ``messages`` can have: a queued item's place in the buffer."""
    return min(segment_key([m]) for m in messages)


class BufferedSegment(BaseModel):
    """One topic segment in the short-term buffer, before it has a topic id."""

    key: str
    session_id: str
    tokens: int
    messages: list[Message]
    tracking_id: str | None = None


class Batch(BaseModel):
    """Segments taken together for one extraction call, with their topic ids fixed."""

    batch_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    user_id: str
    owner: str
    taken_at: float = Field(default_factory=time.time)
    segments: list[TopicSegment]
    tracking: dict[str, str] = Field(default_factory=dict)  # segment key -> producer's tracking id
    tokens: int = 0
    # graph_mem: the graph facts of its extraction call, carried with the batch to ``store_batch`` (through
    # the store queue too); None before extraction and without graph_mem.
    graph: GraphFacts | None = None
    attempts: int = 1
    reason: str | None = None  # set while the batch is failed
    raw_reply: str | None = None
    failed_at: float | None = None

    @property
    def messages(self) -> list[Message]:
        return [m for s in self.segments for m in s.messages]


@dataclass(frozen=True)
class BufferInfo:
    """What a drain decision needs to know about one user's buffers."""

    tokens: int = 0
    segments: int = 0
    turns: int = 0
    flush: bool = False
    pending_items: int = 0  # queued input not buffered yet (workers only): drains wait for it
    # With pending items: the earliest key that input may still add ("" when unknown), and the tokens
    # buffered before it, which no queued input can come before and so may be drained already.
    pending_from: str = ""
    tokens_before_pending: int = 0
    batches_in_flight: int = 0
    last_append: float = 0.0


class PipelineState(Protocol):
    """Per-user pipeline state. Every method is safe to call twice with the same arguments."""

    def lock(self, user_id: str) -> AbstractContextManager[Any]:
        """The user's lock: buffer changes and batch taking of one user never interleave."""
        ...

    # --- seen ids and the sensory buffer ----------------------------------------------------------
    def unseen(self, user_id: str, ids: list[str]) -> set[str]:
        """Those of ``ids`` that this user never buffered and that do not wait in the sensory buffer."""
        ...

    def sensory(self, user_id: str) -> list[Message]:
        ...

    def keep_sensory(self, user_id: str, remaining: list[Message]) -> None:
        """Replace the sensory buffer with ``remaining`` (in order)."""
        ...

    # --- short-term buffer ------------------------------------------------------------------------
    def append(self, user_id: str, segment: BufferedSegment) -> bool:
        """Buffer a segment and mark its ids seen; ``False`` when it (or every one of its messages) was
        buffered before."""
        ...

    def buffered(self, user_id: str) -> list[BufferedSegment]:
        """The short-term buffer in key order."""
        ...

    def info(self, user_id: str) -> BufferInfo:
        ...

    def request_flush(self, user_id: str) -> None:
        ...

    # --- batches ----------------------------------------------------------------------------------
    def next_topic_ids(self, user_id: str, count: int) -> int:
        """Reserve ``count`` topic ids; returns the first."""
        ...

    def start_batch(self, batch: Batch, keys: list[str], clear_flush: bool) -> None:
        """Atomically move the segments ``keys`` from the buffer into ``batch`` (in flight)."""
        ...

    def in_flight(self, user_id: str) -> list[Batch]:
        ...

    def claim(self, batch: Batch, owner: str) -> Batch:
        """Hand an in-flight batch to ``owner`` (a re-run, or a take-over after the lease)."""
        ...

    def finish_batch(self, batch: Batch) -> bool:
        """The batch is stored: it leaves the flight. ``False`` when a previous run already finished it."""
        ...

    def fail_batch(self, user_id: str, batch_id: str, reason: str, raw_reply: str | None) -> Batch | None:
        """Move an in-flight batch to the failed batches with the reason; ``None`` if it is not in flight."""
        ...

    def failed(self, user_id: str) -> list[Batch]:
        ...

    def resume_failed(self, user_id: str, batch_id: str, owner: str) -> Batch | None:
        """Move a failed batch back into flight for ``owner``; ``None`` if it is no longer failed."""
        ...

    # --- accounting -------------------------------------------------------------------------------
    def observe(self, user_id: str, amounts: dict[str, float]) -> None:
        """Add to the live counters of the user and of all users (the history keeps the record itself)."""
        ...

    def counters(self, user_id: str | None = None) -> dict[str, float]:
        """The live counters of one user, or of all users."""
        ...
