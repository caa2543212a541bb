"""``PipelineState`` in the history database: the library's state, in one process.

Buffers and batches are rows of the history's ``buffers`` table (kinds ``sensory``, ``short_term``,
``batches``, ``failed``); seen ids have their own table. Every method runs in a transaction, and
joins the caller's when there is one, so ``add_memory`` keeps all or nothing of a call.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import AbstractContextManager
from typing import Any

from lightmem_core.history import GLOBAL_SCOPE, HistoryStore
from lightmem_core.models import Message
from lightmem_core.state import Batch, BufferedSegment, BufferInfo

SENSORY, SHORT_TERM, IN_FLIGHT, FAILED = "sensory", "short_term", "batches", "failed"
FAILURE_PURPOSE = "extraction"


class SQLiteState:
    """The state interface over a ``HistoryStore``."""

    def __init__(self, history: HistoryStore) -> None:
        self.history = history
        self._lock = threading.RLock()

    def lock(self, user_id: str) -> AbstractContextManager[Any]:
        return self._lock

    # --- seen ids and the sensory buffer ----------------------------------------------------------
    def unseen(self, user_id: str, ids: list[str]) -> set[str]:
        waiting = {k for k, _ in self.history.buffer_items(user_id, SENSORY)}
        return set(ids) - self.history.seen_ids(user_id, ids) - waiting

    def sensory(self, user_id: str) -> list[Message]:
        return [Message.model_validate(p) for _, p in self.history.buffer_items(user_id, SENSORY)]

    def keep_sensory(self, user_id: str, remaining: list[Message]) -> None:
        stay = {m.id for m in remaining}
        with self.history.transaction() as conn:
            gone = [k for k, _ in self.history.buffer_items(user_id, SENSORY) if k not in stay]
            self.history.buffer_remove(conn, user_id, SENSORY, gone)
            for m in remaining:
                self.history.buffer_put(conn, user_id, SENSORY, m.id, m.model_dump(mode="json"))

    # --- short-term buffer ------------------------------------------------------------------------
    def append(self, user_id: str, segment: BufferedSegment) -> bool:
        ids = [m.id for m in segment.messages]
        with self.history.transaction() as conn:
            seen = self.history.seen_ids(user_id, ids)
            if self.history.buffer_has(user_id, SHORT_TERM, segment.key) or seen >= set(ids):
                return False
            self.history.buffer_put(conn, user_id, SHORT_TERM, segment.key, segment.model_dump(mode="json"))
            self.history.mark_seen(conn, user_id, ids)
            self.history.set_counter(conn, user_id, "last_append", time.time())
        return True

    def buffered(self, user_id: str) -> list[BufferedSegment]:
        items = sorted(self.history.buffer_items(user_id, SHORT_TERM))
        return [BufferedSegment.model_validate(p) for _, p in items]

    def info(self, user_id: str) -> BufferInfo:
        segments = self.buffered(user_id)
        return BufferInfo(tokens=sum(s.tokens for s in segments), segments=len(segments),
                          turns=sum(len(s.messages) for s in segments),
                          flush=bool(self.history.counter(user_id, "flush")),
                          batches_in_flight=len(self.history.buffer_items(user_id, IN_FLIGHT)),
                          last_append=self.history.counter(user_id, "last_append"))

    def request_flush(self, user_id: str) -> None:
        with self.history.transaction() as conn:
            self.history.set_counter(conn, user_id, "flush", 1)

    # --- batches ----------------------------------------------------------------------------------
    def next_topic_ids(self, user_id: str, count: int) -> int:
        with self.history.transaction() as conn:
            first = int(self.history.counter(user_id, "topic_id")) + 1
            self.history.set_counter(conn, user_id, "topic_id", first + count - 1)
        return first

    def start_batch(self, batch: Batch, keys: list[str], clear_flush: bool) -> None:
        with self.history.transaction() as conn:
            self.history.buffer_put(conn, batch.user_id, IN_FLIGHT, batch.batch_id, batch.model_dump(mode="json"))
            self.history.buffer_remove(conn, batch.user_id, SHORT_TERM, keys)
            if clear_flush:
                self.history.set_counter(conn, batch.user_id, "flush", 0)

    def in_flight(self, user_id: str) -> list[Batch]:
        return [Batch.model_validate(p) for _, p in self.history.buffer_items(user_id, IN_FLIGHT)]

    def claim(self, batch: Batch, owner: str) -> Batch:
        claimed = batch.model_copy(update={"owner": owner, "taken_at": time.time()})
        with self.history.transaction() as conn:
            self.history.buffer_replace(conn, batch.user_id, IN_FLIGHT, batch.batch_id, claimed.model_dump(mode="json"))
        return claimed

    def finish_batch(self, batch: Batch) -> bool:
        with self.history.transaction() as conn:
            if not self.history.buffer_has(batch.user_id, IN_FLIGHT, batch.batch_id):
                return False
            self.history.buffer_remove(conn, batch.user_id, IN_FLIGHT, [batch.batch_id])
        return True

    def fail_batch(self, user_id: str, batch_id: str, reason: str, raw_reply: str | None) -> Batch | None:
        found = dict(self.history.buffer_items(user_id, IN_FLIGHT)).get(batch_id)
        if found is None:
            return None
        failed = Batch.model_validate(found).model_copy(update={"reason": reason, "raw_reply": raw_reply,
                                                                 "failed_at": time.time()})
        with self.history.transaction() as conn:
            self.history.buffer_remove(conn, user_id, IN_FLIGHT, [batch_id])
            self.history.buffer_put(conn, user_id, FAILED, batch_id, failed.model_dump(mode="json"))
            self.history.record_failure(user_id, FAILURE_PURPOSE, _failure_payload(failed), raw_reply, reason)
        return failed

    def failed(self, user_id: str) -> list[Batch]:
        return [Batch.model_validate(p) for _, p in self.history.buffer_items(user_id, FAILED)]

    def resume_failed(self, user_id: str, batch_id: str, owner: str) -> Batch | None:
        found = dict(self.history.buffer_items(user_id, FAILED)).get(batch_id)
        if found is None:
            return None
        old = Batch.model_validate(found)
        batch = old.model_copy(update={"owner": owner, "taken_at": time.time(), "attempts": old.attempts + 1,
                                       "reason": None, "raw_reply": None, "failed_at": None})
        with self.history.transaction() as conn:
            self.history.buffer_remove(conn, user_id, FAILED, [batch_id])
            self.history.buffer_put(conn, user_id, IN_FLIGHT, batch_id, batch.model_dump(mode="json"))
            for failure in self.history.failures(user_id):
                if failure["purpose"] == FAILURE_PURPOSE and json.loads(failure["payload"]).get("batch_id") == batch_id:
                    self.history.resolve_failure(conn, failure["id"])
        return batch

    # --- accounting -------------------------------------------------------------------------------
    def observe(self, user_id: str, amounts: dict[str, float]) -> None:
        """Nothing to add: in one process the history's counters are the live view."""

    def counters(self, user_id: str | None = None) -> dict[str, float]:
        return self.history.counters(user_id if user_id is not None else GLOBAL_SCOPE)


def _failure_payload(batch: Batch) -> dict[str, Any]:
    return {"batch_id": batch.batch_id, "segment_keys": [f"topic-{s.topic_id}" for s in batch.segments],
            "message_ids": [m.id for m in batch.messages]}
