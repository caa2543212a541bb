"""Queue ``lightmem.store``: the single owner of an embedded store folder (index, update).

Searches in embedded mode do not come through this queue: the same process answers them from its
search desk (``workers/search_desk.py``), beside the index batches."""

from __future__ import annotations

from typing import Any

from celery import Task

from lightmem_core import pipeline
from workers import names
from workers.app import get_parts
from workers.messages import DrainPayload, StorePayload, decode
from workers.parts import WorkerParts
from workers.tasks import StageTask, hand_on, stage_task, timed


class StoreTask(StageTask):
    def release(self, parts: WorkerParts, raw: Any, task_id: str, exc: BaseException) -> None:
        """A batch that cannot be stored moves to the failed batches (``lightmem retry`` extracts it again)."""
        try:
            payload = decode(StorePayload, raw)
        except Exception:  # undecodable: there is no batch to release
            return
        pipeline.fail_batch(parts.state, payload.batch, exc)


def store_and_update(parts: WorkerParts, payload: StorePayload) -> int:
    """Store a batch (once), run the online update when configured, and drain the user again if due."""
    st, c, s = parts.state, parts.components, parts.settings
    if pipeline.store_batch(st, c, payload.batch, payload.entries, parts.spec.roles):
        pipeline.after_store(c, parts.spec, payload.entries, parts.decider)
    if pipeline.should_drain(st.info(payload.user_id), parts.spec.threshold_tokens, s.max_buffer_tokens):
        hand_on(DrainPayload(user_id=payload.user_id))
    return len(payload.entries)


@stage_task(names.STORE_INDEX, StoreTask)
def index(self: Task, raw: Any) -> int:
    """Embed and upsert a batch's entries, record it in the history, finish the user's batch."""
    with timed(self):
        return store_and_update(get_parts(), decode(StorePayload, raw))
