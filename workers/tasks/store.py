"""Queue ``lightmem.store``: the single owner of an embedded Qdrant folder (index, search, update)."""

from __future__ import annotations

from typing import Any

from celery import Task

from lightmem_core import pipeline, retrieval
from workers import names
from workers.app import get_parts
from workers.messages import DrainPayload, EntriesPayload, SearchPayload, StorePayload, decode
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


def reply(task: Task, parts: WorkerParts, data: list[dict[str, Any]]) -> dict[str, Any]:
    """Leave ``data`` (memories) under a key that expires; the task's result, logs and events carry
    only its place and size."""
    key = parts.state.keys.reply(str(task.request.id))
    parts.state.put_reply(key, data, parts.settings.reply_ttl_s)
    return {"reply_key": key, "count": len(data)}


@stage_task(names.STORE_SEARCH)
def search(self: Task, raw: Any) -> dict[str, Any]:
    """Retrieval as ``LightMemory.retrieve`` does it, answered by the process that owns the store."""
    with timed(self):
        parts, payload = get_parts(), decode(SearchPayload, raw)
        c, strategy = parts.components, parts.spec.retrieve_strategy
        hits = retrieval.search(c, strategy, payload.user_id, retrieval.query_vectors(c, strategy, payload.query),
                                payload.limit)
        return reply(self, parts, [{"id": e.id, "score": s, "memory": e.memory,
                                    "time_stamp": e.time_stamp.isoformat(), "weekday": e.weekday} for e, s in hits])


@stage_task(names.STORE_ENTRIES)
def entries(self: Task, raw: Any) -> dict[str, Any]:
    """Every entry of one user, from the process that owns the store."""
    with timed(self):
        parts, payload = get_parts(), decode(EntriesPayload, raw)
        return reply(self, parts, [e.model_dump(mode="json") for e in parts.components.store.list_entries(payload.user_id)])
