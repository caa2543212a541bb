"""Queue ``lightmem.store``: the single owner of an embedded Qdrant folder (index, search, update)."""

from __future__ import annotations

from typing import Any

from celery import Task

from workers import flow
from workers.app import app, get_pipeline
from workers.messages import DrainPayload, SearchPayload, StorePayload, decode
from workers.tasks import run_stage, send, user_of


@app.task(bind=True, name="lightmem.store.index")
def index(self: Task, raw: Any) -> int:
    """Embed and upsert a batch's entries, record it in the history, clear the user's batch."""
    return run_stage(self, raw, user_of(raw), lambda: flow.store_batch(get_pipeline(), decode(StorePayload, raw), send))


@app.task(bind=True, name="lightmem.store.search")
def search(self: Task, raw: Any) -> list[dict[str, Any]]:
    """Retrieval for ``lightmem search`` and the demo, answered by the process that owns the store."""
    return run_stage(self, raw, user_of(raw), lambda: flow.search(get_pipeline(), decode(SearchPayload, raw)))


@app.task(bind=True, name="lightmem.store.entries")
def entries(self: Task, raw: Any) -> list[dict[str, Any]]:
    """Every entry of one user (``{"v": 1, "user_id": ...}``), from the process that owns the store."""
    return run_stage(self, raw, user_of(raw), lambda: flow.list_entries(get_pipeline(), decode(DrainPayload, raw).user_id))
