"""One module per queue; each task decodes its payload, calls ``lightmem_core.pipeline`` stages over
the Redis state, and hands work on with ``send``.

One retry layer per concern: the LLM client retries within a call; a task retries a
``TransientError`` (Redis or Qdrant unreachable, an LLM outage past the client's budget) with
Celery's ``autoretry_for``, exponential backoff and full jitter, up to ``max_retries``. When the
retries run out, or for any other error, ``StageTask.on_failure`` records the failure (reason, raw
payload, raw reply) where ``lightmem status`` shows it, and releases what the task held: a batch it
took is moved to the failed batches, where ``lightmem retry`` finds it. Nothing stays in flight.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from celery import Task
from celery.signals import celeryd_after_setup, task_rejected, task_unknown, worker_ready, worker_shutdown

from lightmem_core.errors import ExtractionParseError, TransientError
from workers import metrics, search_desk
from workers.app import app, get_parts
from workers.messages import Payload, PayloadError, send
from workers.parts import WorkerParts
from workers.preflight import run_preflight
from workers.settings import get_settings

log = logging.getLogger(__name__)


def retry_options() -> dict[str, Any]:
    """Celery's own retry for transient errors, from the settings."""
    settings = get_settings()
    return {"autoretry_for": (TransientError,), "retry_backoff": True, "retry_jitter": True,
            "retry_backoff_max": settings.retry_backoff_max_s, "max_retries": settings.max_retries}


class StageTask(Task):  # type: ignore[misc]  # Celery's Task is untyped
    """Base of every pipeline task: failures are recorded and what the task held is released."""

    def on_failure(self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                   einfo: Any) -> None:
        raw = args[0] if args else None
        try:
            parts = get_parts()
            metrics.FAILURES.labels(str(self.name)).inc()
            payload = exc.raw if isinstance(exc, PayloadError) else raw
            raw_reply = exc.raw_reply if isinstance(exc, ExtractionParseError) else None
            reason = f"{type(exc).__name__}: {exc}"
            parts.state.record_failure(str(self.name), user_of(raw), reason, payload, raw_reply=raw_reply)
            if (poison := self.poison_reason(exc, args, kwargs)) is not None:
                parts.state.dead_letter(json.dumps({"args": list(args), "kwargs": kwargs}, default=str), poison,
                                        {"task": str(self.name), "id": task_id})
            self.release(parts, raw, task_id, exc)
        except Exception:  # Redis itself may be what failed; the task's messages stay in the log
            log.exception("could not record the failure of task %s (%s)", self.name, task_id)

    def poison_reason(self, exc: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """Why the message itself is unusable (wrong schema, wrong arity), or None for a failure of the work."""
        if isinstance(exc, PayloadError):
            return f"wrong schema: {exc}"
        try:
            inspect.signature(self.run).bind(*args, **kwargs)
        except TypeError as wrong:
            return f"wrong arguments for {self.name}: {wrong}"
        return None

    def release(self, parts: WorkerParts, raw: Any, task_id: str, exc: BaseException) -> None:
        """Give up what this task holds (batches in flight, tracked items); nothing by default."""


F = TypeVar("F", bound=Callable[..., Any])


def stage_task(name: str, base: type[StageTask] = StageTask) -> Callable[[F], F]:
    """``app.task`` with the pipeline's options: bound, the failure-recording base, the retry policy."""
    return cast(Callable[[F], F], app.task(bind=True, base=base, name=name, **retry_options()))


def user_of(raw: Any) -> str | None:
    """The user id of a raw payload, for the failure record even when the payload does not decode."""
    return str(raw["user_id"]) if isinstance(raw, dict) and "user_id" in raw else None


def hand_on(payload: Payload) -> None:
    """Send work on to the task that takes ``payload``."""
    send(app, payload)


@contextmanager
def timed(task: Task) -> Iterator[None]:
    with metrics.STAGE_SECONDS.labels(str(task.name)).time():
        yield


def _dead_letter(message: Any = None, exc: BaseException | None = None, name: str | None = None,
                 **_: Any) -> None:
    """A message that no task takes (an unregistered task name, an unknown format) goes to the
    dead-letter list with its raw body and the reason; the worker takes the next one."""
    reason = (f"unregistered task {name!r}" if name else f"{type(exc).__name__}: {exc}" if exc
              else "not a task message")
    body = getattr(message, "body", b"")
    raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    try:
        get_parts().state.dead_letter(raw, reason, dict(getattr(message, "headers", None) or {}))
    except Exception:  # Redis itself may be what failed; Celery has rejected the message either way
        log.exception("could not keep a dead letter (%s)", reason)


task_unknown.connect(_dead_letter)
task_rejected.connect(_dead_letter)


def _serve_metrics(**_: Any) -> None:
    parts = get_parts()
    metrics.serve(parts.settings.metrics_port, parts.queue_depths)


worker_ready.connect(_serve_metrics)
celeryd_after_setup.connect(run_preflight)  # before "ready": a broken configuration stops the worker
celeryd_after_setup.connect(search_desk.start_for_worker)  # after the preflight (signals run in order)
worker_shutdown.connect(search_desk.stop_for_worker)
