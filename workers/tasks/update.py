"""Queue ``lightmem.update``: the nightly fan-out (beat), the per-user offline update, idle flushes.

With an embedded Qdrant folder the per-user update runs on ``lightmem.store`` (``workers.names``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Task

from lightmem_core.update import offline
from workers import names
from workers.app import get_parts
from workers.messages import DrainPayload, Payload, UpdatePayload, decode
from workers.parts import WorkerParts
from workers.tasks import hand_on, stage_task, timed


@stage_task(names.UPDATE_NIGHTLY)
def nightly(self: Task) -> list[str]:
    """One update task per user with entries stored since that user's watermark."""
    with timed(self):
        st = get_parts().state
        users = st.users_with_new_entries()
        for user_id, newest in users.items():
            hand_on(UpdatePayload(user_id=user_id, watermark=newest))
            st.mark_update_sent(user_id, newest)
        return list(users)


@stage_task(names.UPDATE_USER)
def update_user(self: Task, raw: Any) -> dict[str, int]:
    """The offline update of one user: extend the update queue, decide and apply, move the watermark."""
    with timed(self):
        parts, payload = get_parts(), decode(UpdatePayload, raw)
        s, c = parts.settings, parts.components
        queued = offline.build_queue(c, payload.user_id, s.update_top_k, s.update_keep_top_n)
        counts = offline.apply_queue(c, payload.user_id, s.update_score_threshold, decider=parts.decider)
        parts.state.move_watermark(payload.user_id, payload.watermark)
        return {"queued": queued, **counts}


def flush_idle_users(parts: WorkerParts, send: Callable[[Payload], None] = hand_on) -> list[str]:
    """Flush the buffers of users idle longer than ``idle_flush_s`` (no buffer holds data forever), and
    drain the users whose batch lost its owner (a lease past ``batch_lease_s``), so another worker
    takes the batch over."""
    s = parts.settings
    idle = parts.state.idle_users(s.idle_flush_s)
    orphaned = [u for u in parts.state.stale_users(s.batch_lease_s) if u not in idle]
    for user_id in idle:
        send(DrainPayload(user_id=user_id, force=True))
    for user_id in orphaned:
        send(DrainPayload(user_id=user_id))
    return sorted(idle + orphaned)


@stage_task(names.UPDATE_FLUSH_IDLE)
def flush_idle(self: Task) -> list[str]:
    """Beat's idle check (every ``idle_check_s``): ``flush_idle_users``."""
    with timed(self):
        return flush_idle_users(get_parts())
