"""Calls of ``add_memory`` accepted but not compressed yet: ``LightMemory``'s background ingestion.

Why: on a CPU, compressing sessions and embedding their turns one session at a time costs about a
quarter more than the same sessions in one pass (4 LoCoMo conversations, 99 sessions: 40 s session by
session, 31 s at 32 sessions a pass). An application adds one session (or one turn) at a time, so
``add_memory`` keeps the call here and returns; ``LightMemory``'s ingest thread takes the queued calls
of every user at once (``take``, up to a number of sessions), compresses them in one batched call and
embeds their turns in another, then buffers each call in order exactly as ``add_memory`` would have.

Nothing is lost: a call is written to the history (``buffers``, kind ``inbox``) before ``add_memory``
returns and leaves it in the transaction that buffers it (``finish``), so the calls of a program that
stopped are taken first when the history is opened again. A pass that fails puts its calls back at
the head and holds their users (``hold``) until a caller takes the error (``take_error``): the error is
raised once, to the next method that waits for the user, and the calls are tried again after that.
A call that fails for good (any error but a ``TransientError``) would fail again every time, so it
leaves the inbox for the failed calls (``fail``: kind ``inbox_failed``, and a record in the history's
failures, purpose ``ingest``), the user's later calls go on, and ``requeue_failed`` (through
``LightMemory.retry_failed``) takes it back once the cause is gone.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lightmem_core.history import HistoryStore
from lightmem_core.history.base import Connection
from lightmem_core.models import Message

INBOX = "inbox"  # the kind of the history's buffer rows that hold queued calls
FAILED_CALLS = "inbox_failed"  # calls that failed for good, kept for ``requeue_failed``
FAILURE_PURPOSE = "ingest"  # their records in the history's failures


@dataclass
class QueuedCall:
    """One ``add_memory`` call: its new messages (validated, in order) and how to buffer them."""

    key: str  # orders the calls of every user, across restarts too
    user_id: str
    messages: list[Message] = field(default_factory=list)
    force_segment: bool = False
    skipped_empty: int = 0
    flush: bool = False  # ``flush(wait=False)``: no messages; the user's buffers are flushed at this place

    @property
    def sessions(self) -> int:
        return len({m.session_id for m in self.messages}) or 1

    def payload(self) -> dict[str, Any]:
        return {"messages": [m.model_dump(mode="json") for m in self.messages], "force_segment": self.force_segment,
                "skipped_empty": self.skipped_empty, "flush": self.flush}

    @classmethod
    def from_payload(cls, key: str, user_id: str, payload: dict[str, Any]) -> QueuedCall:
        return cls(key=key, user_id=user_id, messages=[Message.model_validate(m) for m in payload["messages"]],
                   force_segment=bool(payload["force_segment"]), skipped_empty=int(payload["skipped_empty"]),
                   flush=bool(payload.get("flush", False)))  # calls queued before flushes were queued have none


class Inbox:
    """The queued calls of every user, oldest first, mirrored in the history. Thread-safe."""

    def __init__(self, history: HistoryStore) -> None:
        self.history = history
        self._cond = threading.Condition()
        self._order = itertools.count()
        left = [QueuedCall.from_payload(key, user, payload)
                for user in history.buffer_users(INBOX) for key, payload in history.buffer_items(user, INBOX)]
        self._queued: list[QueuedCall] = sorted(left, key=lambda c: c.key)  # left by an earlier run: first
        self._taken: list[QueuedCall] = []
        self._errors: dict[str, BaseException] = {}
        self._closed = False

    def new_key(self) -> str:
        return f"{time.time_ns():020d}-{next(self._order):08d}"

    def put(self, call: QueuedCall) -> None:
        """Keep ``call`` in the history, then queue it (behind the user's earlier calls)."""
        with self.history.transaction() as conn:
            self.history.buffer_put(conn, call.user_id, INBOX, call.key, call.payload())
        with self._cond:
            self._queued.append(call)
            self._cond.notify_all()

    def take(self, max_sessions: int) -> list[QueuedCall] | None:
        """The oldest queued calls of the users not held, at least one and up to ``max_sessions``
        sessions in all; waits for one. ``None`` once closed."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                ready = [c for c in self._queued if c.user_id not in self._errors]
                if ready:
                    break
                self._cond.wait()
            taken: list[QueuedCall] = []
            sessions = 0
            for call in ready:
                if taken and sessions + call.sessions > max_sessions:
                    break
                taken.append(call)
                sessions += call.sessions
            self._queued = [c for c in self._queued if c not in taken]
            self._taken += taken
            return taken

    def finish(self, conn: Connection, call: QueuedCall) -> None:
        """``call`` is buffered: it leaves the history in ``conn``'s transaction (the one that buffers it)."""
        self.history.buffer_remove(conn, call.user_id, INBOX, [call.key])
        with self._cond:
            self._taken = [c for c in self._taken if c is not call]
            self._cond.notify_all()

    def hold(self, calls: Iterable[QueuedCall], users: Iterable[str], error: BaseException) -> None:
        """A pass failed: ``calls`` (taken, not buffered) go back to the head in order, and ``users`` wait
        until a caller takes the error."""
        with self._cond:
            back = [c for c in calls if any(c is t for t in self._taken)]
            self._taken = [c for c in self._taken if all(c is not b for b in back)]
            self._queued = sorted(back + self._queued, key=lambda c: c.key)
            for user in users:
                self._errors.setdefault(user, error)
            self._cond.notify_all()

    def fail(self, call: QueuedCall, reason: str) -> None:
        """``call`` (taken) failed for good: it leaves the inbox for the failed calls, and the failure is
        recorded (message ids and the reason, no text), in one transaction."""
        with self.history.transaction() as conn:
            self.history.buffer_remove(conn, call.user_id, INBOX, [call.key])
            self.history.buffer_put(conn, call.user_id, FAILED_CALLS, call.key, call.payload())
            self.history.record_failure(call.user_id, FAILURE_PURPOSE, {"call": call.key,
                                        "message_ids": [m.id for m in call.messages]}, None, reason)
        with self._cond:
            self._taken = [c for c in self._taken if c is not call]
            self._cond.notify_all()

    def requeue_failed(self, user_id: str) -> int:
        """The user's failed calls go back to the inbox, in their old places (their keys), and their
        failures are resolved; returns how many."""
        failed = self._failed_calls(user_id)
        if not failed:
            return 0
        keys = {call.key for call in failed}
        with self.history.transaction() as conn:
            self.history.buffer_remove(conn, user_id, FAILED_CALLS, sorted(keys))
            for call in failed:
                self.history.buffer_put(conn, user_id, INBOX, call.key, call.payload())
            for failure in self.history.failures(user_id):
                if failure["purpose"] == FAILURE_PURPOSE and json.loads(failure["payload"]).get("call") in keys:
                    self.history.resolve_failure(conn, failure["id"])
        with self._cond:
            self._queued = sorted(failed + self._queued, key=lambda c: c.key)
            self._cond.notify_all()
        return len(failed)

    def drop_user(self, user_id: str) -> bool:
        """Forget the user's queued calls and the error that holds them (the user is being deleted; their
        history rows go with the user's buffers). ``False``, dropping nothing, while one of the user's calls
        is being buffered: wait for it and try again."""
        with self._cond:
            if any(c.user_id == user_id for c in self._taken):
                return False
            self._queued = [c for c in self._queued if c.user_id != user_id]
            self._errors.pop(user_id, None)
            self._cond.notify_all()
            return True

    def take_error(self, user_id: str | None) -> BaseException | None:
        """The error that holds ``user_id`` (or any user), if one does; the user's calls are tried again."""
        with self._cond:
            users = [user_id] if user_id is not None else sorted(self._errors)
            for user in users:
                if user in self._errors:
                    self._cond.notify_all()
                    return self._errors.pop(user)
            return None

    def settled(self, user_id: str | None) -> bool:
        """Nothing of ``user_id`` (or of anyone) is queued or being buffered, unless an error holds it."""
        with self._cond:
            return not [c for c in [*self._queued, *self._taken]
                        if (user_id is None or c.user_id == user_id) and c.user_id not in self._errors]

    def pending(self, user_id: str) -> int:
        """The user's calls not buffered yet."""
        with self._cond:
            return sum(c.user_id == user_id for c in [*self._queued, *self._taken])

    def queued_ids(self, user_id: str) -> set[str]:
        """Ids of the user's messages waiting here (a message is new once, whatever calls bring it)."""
        with self._cond:
            return {m.id for c in [*self._queued, *self._taken] if c.user_id == user_id for m in c.messages}

    def next_turn_index(self, user_id: str, session_id: str) -> int:
        """The first turn index after the session's messages waiting here or failed (0 when none)."""
        failed = self._failed_calls(user_id)  # their turns are taken too, for when they come back
        with self._cond:
            return max((m.turn_index + 1 for c in [*self._queued, *self._taken, *failed] if c.user_id == user_id
                        for m in c.messages if m.session_id == session_id), default=0)

    def _failed_calls(self, user_id: str) -> list[QueuedCall]:
        return [QueuedCall.from_payload(key, user_id, payload)
                for key, payload in self.history.buffer_items(user_id, FAILED_CALLS)]

    def close(self) -> None:
        """``take`` returns ``None`` from now on; what is queued stays in the history for the next run."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
