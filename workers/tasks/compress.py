"""Queue ``lightmem.compress`` (GPU workers): compress sessions in batches, cut topics, buffer per user."""

from __future__ import annotations

from typing import Any

from celery import Task

from lightmem_core import pipeline
from lightmem_core.errors import LightMemError
from workers import names
from workers.app import get_parts
from workers.messages import CompressPayload, DrainPayload, decode, encode
from workers.parts import WorkerParts
from workers.tasks import StageTask, hand_on, stage_task, timed


class CompressTask(StageTask):
    def release(self, parts: WorkerParts, raw: Any, task_id: str, exc: BaseException) -> None:
        """Tracked items of a payload that failed for good are failed, so they hold back no drain."""
        sessions = raw.get("sessions") if isinstance(raw, dict) else None
        for item in sessions if isinstance(sessions, list) else []:
            if isinstance(item, dict) and {"tracking_id", "user_id"} <= set(item):
                parts.state.item_buffered(str(item["tracking_id"]), str(item["user_id"]), [],
                                          failed=f"{type(exc).__name__}: {exc}")


@stage_task(names.COMPRESS_SESSIONS, CompressTask)
def compress_sessions(self: Task, raw: Any) -> dict[str, int]:
    """Compress every new message of the payload's sessions in one batched call and embed their turns
    in another (each queued item ends a sensory chunk), buffer each user's topic segments, and ask for
    a drain where one is due."""
    with timed(self):
        parts, payload = get_parts(), decode(CompressPayload, raw)
        st, spec = parts.state, parts.spec
        ready = pipeline.prepare_calls(st, [item.messages for item in payload.sessions], parts.count_tokens,
                                       parts.compressor, parts.segmenter, spec.roles)
        done = {"sessions": 0, "segments": 0, "failed": 0}
        for item, messages in zip(payload.sessions, ready, strict=True):
            try:
                with st.lock(item.user_id):
                    keys = pipeline.buffer_messages(st, item.user_id, messages, parts.segmenter, spec,
                                                    parts.count_tokens, force=True, tracking_id=item.tracking_id)
                    if keys and item.skipped_empty:
                        st.observe(item.user_id, {"messages_skipped_empty": item.skipped_empty})
                    st.item_buffered(item.tracking_id, item.user_id, keys)
                done["segments"] += len(keys)
                done["sessions"] += 1
            except LightMemError as exc:  # this session fails; the others go on
                reason = f"{type(exc).__name__}: {exc}"
                st.record_failure(str(self.name), item.user_id, reason, encode(item), tracking_id=item.tracking_id)
                st.item_buffered(item.tracking_id, item.user_id, [], failed=reason)
                done["failed"] += 1
        s = parts.settings
        for user_id in sorted({item.user_id for item in payload.sessions}):
            if pipeline.should_drain(st.info(user_id), spec.threshold_tokens, s.max_buffer_tokens):
                hand_on(DrainPayload(user_id=user_id))
        return done
