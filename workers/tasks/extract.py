"""Queue ``lightmem.extract`` (CPU workers, many in flight): buffered segments → entries → store."""

from __future__ import annotations

from typing import Any

from celery import Task

from workers import flow
from workers.app import app, get_pipeline
from workers.messages import DrainPayload, decode, encode
from workers.tasks import run_stage, send, user_of


@app.task(bind=True, name="lightmem.extract.drain")
def drain(self: Task, raw: Any) -> int:
    """Extract the user's buffered segments; index here with a Qdrant server, else on the store queue."""

    def stage() -> int:
        pipe, payload = get_pipeline(), decode(DrainPayload, raw)
        batch = flow.drain_user(pipe, payload.user_id, payload.force, str(self.request.id), send)
        if batch is None:
            return 0
        if pipe.settings.embedded_store:
            send(flow.STORE, encode(batch))
        else:
            flow.store_batch(pipe, batch, send)
        return len(batch.entries)

    return run_stage(self, raw, user_of(raw), stage)
