"""Queue ``lightmem.extract`` (CPU workers, many in flight): a user's next batch → entries → store."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Task

from lightmem_core import pipeline
from lightmem_core.errors import ExtractionParseError
from lightmem_core.state import Batch
from workers import names
from workers.app import get_parts
from workers.messages import DrainPayload, RetryPayload, StorePayload, decode, encode
from workers.parts import WorkerParts
from workers.tasks import StageTask, hand_on, stage_task, timed, user_of
from workers.tasks.store import store_and_update

log = logging.getLogger(__name__)


class BatchTask(StageTask):
    def release(self, parts: WorkerParts, raw: Any, task_id: str, exc: BaseException) -> None:
        """The batches this task took move to the failed batches, with the reason and the raw reply."""
        user_id = user_of(raw)
        if user_id is None:
            return
        for batch in parts.state.in_flight(user_id):
            if batch.owner == task_id:
                pipeline.fail_batch(parts.state, batch, exc)


@contextmanager
def lease_kept(parts: WorkerParts, batch: Batch) -> Iterator[None]:
    """Renew the batch's lease every third of ``batch_lease_s`` while this task works on it, so only a
    dead owner's batch is taken over."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(parts.settings.batch_lease_s / 3):
            try:
                parts.state.renew(batch)
            except Exception:  # a Redis blip: the next beat tries again
                log.warning("could not renew the lease of batch %s", batch.batch_id)

    parts.state.renew(batch)
    keeper = threading.Thread(target=beat, name=f"lease-{batch.batch_id[:8]}", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()


def extract_and_store(parts: WorkerParts, batch: Batch) -> int:
    """Extract one batch; index it here with a Qdrant server, else on the store owner's queue."""
    with lease_kept(parts, batch):
        entries = pipeline.extract_batch(batch, parts.extractor)
        stored = StorePayload(user_id=batch.user_id, batch=batch, entries=entries)
        if not parts.settings.embedded_store:
            store_and_update(parts, stored)
            return len(entries)
    # The store queue is durable (late acks, redelivery): no take-over while the batch waits there.
    parts.state.renew(batch, until=time.time() + parts.settings.queue_wait_s)
    hand_on(stored)
    return len(entries)


@stage_task(names.EXTRACT_DRAIN, BatchTask)
def drain(self: Task, raw: Any) -> int:
    """Take the user's next batch (or the one this task took before a retry) and extract it.

    Several batches of one user may be in flight at once: when more than one is ready, the next drain
    is sent before this one calls the LLM, so their waits overlap.
    """
    with timed(self):
        parts, payload = get_parts(), decode(DrainPayload, raw)
        st, s, user_id = parts.state, parts.settings, payload.user_id
        threshold = parts.spec.threshold_tokens
        if payload.force:
            st.request_flush(user_id)
        with st.lock(user_id):
            in_order = parts.spec.online_update
            batch = pipeline.take_batch(st, user_id, str(self.request.id), threshold, s.batch_lease_s,
                                        s.max_buffer_tokens, one_at_a_time=in_order)
            more = (batch is not None and not in_order
                    and pipeline.should_drain(st.info(user_id), threshold, s.max_buffer_tokens))
        if batch is None:
            return 0
        if more:
            hand_on(DrainPayload(user_id=user_id))
        return extract_and_store(parts, batch)


@stage_task(names.EXTRACT_RETRY, BatchTask)
def retry(self: Task, raw: Any) -> dict[str, int]:
    """Take the user's failed batches back into flight and extract them again; one that fails again is
    failed again (with its new reason) and the others go on."""
    with timed(self):
        parts, payload = get_parts(), decode(RetryPayload, raw)
        st, owner = parts.state, str(self.request.id)
        mine = [b for b in st.in_flight(payload.user_id) if b.owner == owner]  # taken by this task before a retry
        done = {"retried": 0, "still_failed": 0, "entries": 0}
        for batch in mine + pipeline.resume_failed(st, payload.user_id, owner):
            done["retried"] += 1
            try:
                done["entries"] += extract_and_store(parts, batch)
            except ExtractionParseError as exc:
                pipeline.fail_batch(st, batch, exc)
                st.record_failure(str(self.name), batch.user_id, f"{type(exc).__name__}: {exc}", encode(payload),
                                  raw_reply=exc.raw_reply)
                done["still_failed"] += 1
        return done
