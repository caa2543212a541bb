"""Queue ``lightmem.compress`` (GPU workers): compress sessions in batches, cut topics, buffer per user."""

from __future__ import annotations

from typing import Any

from celery import Task

from workers import flow
from workers.app import app, get_pipeline
from workers.messages import CompressPayload, decode
from workers.tasks import run_stage, send


@app.task(bind=True, name="lightmem.compress.sessions")
def compress_sessions(self: Task, raw: Any) -> dict[str, int]:
    """Compress every message of the payload's sessions together; buffer each user's topic segments."""
    return run_stage(self, raw, None, lambda: flow.compress_sessions(get_pipeline(), decode(CompressPayload, raw), send))
