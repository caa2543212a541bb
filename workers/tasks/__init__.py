"""One module per queue; each task validates its payload, calls one stage, and maps errors.

``run_stage`` is the one place where errors become queue behaviour: a ``TransientError`` is retried
(after its ``Retry-After`` when it has one, else with exponential backoff and jitter); any other
error (a ``LightMemError`` for bad data, or a bug) is recorded as a failure with the reason and the raw payload (``lightmem status``),
then re-raised so the task shows as failed in Flower; other users' tasks go on.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Task
from celery.signals import worker_ready

from lightmem_core.errors import ExtractionParseError, TransientError
from workers import metrics
from workers.app import app, get_pipeline
from workers.messages import PayloadError

T = TypeVar("T")


def send(name: str, payload: dict[str, Any]) -> None:
    """Hand work on to another queue (routes pick the queue from the task name)."""
    app.send_task(name, args=[payload])


def backoff_s(retries: int, cap_s: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, 2**retries)]."""
    return random.uniform(0, min(cap_s, 2.0**retries))


def run_stage(task: Task, raw: Any, user_id: str | None, stage: Callable[[], T], tracking_id: str | None = None) -> T:
    settings = get_pipeline().settings
    try:
        with metrics.STAGE_SECONDS.labels(str(task.name)).time():
            return stage()
    except TransientError as exc:
        countdown = exc.retry_after_s if exc.retry_after_s is not None else backoff_s(task.request.retries,
                                                                                       settings.retry_backoff_max_s)
        raise task.retry(exc=exc, countdown=countdown, max_retries=settings.max_retries) from exc
    except Exception as exc:  # LightMemError: bad data; anything else: a bug. Either way, recorded
        raw_reply = exc.raw_reply if isinstance(exc, ExtractionParseError) else None
        payload = exc.raw if isinstance(exc, PayloadError) else raw
        metrics.FAILURES.labels(str(task.name)).inc()
        get_pipeline().state.record_failure(str(task.name), user_id, f"{type(exc).__name__}: {exc}", payload,
                                            raw_reply=raw_reply, tracking_id=tracking_id)
        raise


def user_of(raw: Any) -> str | None:
    """The user id of a raw payload, for the failure record even when the payload does not decode."""
    return str(raw["user_id"]) if isinstance(raw, dict) and "user_id" in raw else None


@worker_ready.connect
def _serve_metrics(**_: Any) -> None:
    metrics.serve(get_pipeline().settings.metrics_port)
