"""Queue ``lightmem.update``: the nightly fan-out (beat), the per-user offline update, idle flushes.

With an embedded Qdrant folder the per-user update runs on ``lightmem.store`` (see ``workers.app``).
"""

from __future__ import annotations

from typing import Any

from celery import Task

from workers import flow
from workers.app import app, get_pipeline
from workers.messages import UpdatePayload, decode
from workers.tasks import run_stage, send, user_of


@app.task(bind=True, name="lightmem.update.nightly")
def nightly(self: Task) -> list[str]:
    """One update task per user with entries stored since that user's watermark."""
    return run_stage(self, None, None, lambda: flow.fan_out_updates(get_pipeline(), send))


@app.task(bind=True, name="lightmem.update.user")
def update_user(self: Task, raw: Any) -> dict[str, int]:
    """Build the user's update queue, apply the decisions, move the watermark."""
    return run_stage(self, raw, user_of(raw), lambda: flow.update_user(get_pipeline(), decode(UpdatePayload, raw)))


@app.task(bind=True, name="lightmem.update.flush_idle")
def flush_idle(self: Task) -> list[str]:
    """Drain the buffers of users idle longer than ``idle_flush_s``."""
    return run_stage(self, None, None, lambda: flow.flush_idle(get_pipeline(), send))
