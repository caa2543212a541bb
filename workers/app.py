"""The Celery application, built from ``DistributedSettings``, and the pipeline's composition root.

Start a worker per role with ``lightmem worker compress|extract|store|update`` (or
``celery -A workers.app worker -Q lightmem.extract ...``). Only JSON crosses the broker.
"""

from __future__ import annotations

import os
from datetime import timedelta
from functools import lru_cache
from typing import Any

from celery import Celery
from celery.schedules import crontab
from celery.signals import after_setup_logger, worker_init
from kombu.entity import Exchange, Queue

from lightmem_core.config import configure_logging
from workers import logs, names
from workers.parts import WorkerParts
from workers.settings import QUEUES, DistributedSettings, get_settings

TASK_MODULES = ["workers.tasks.compress", "workers.tasks.extract", "workers.tasks.store", "workers.tasks.update"]


def build_parts(settings: DistributedSettings) -> WorkerParts:
    """The composition root of a worker process, on ``lightmem_core.factory``."""
    return WorkerParts(settings)


@lru_cache(maxsize=1)
def get_parts() -> WorkerParts:
    """This process's parts: models load once per process, on first use."""
    return build_parts(get_settings())


def route_for(name: str, settings: DistributedSettings) -> str:
    """The queue of a task (``workers.names``); an unknown task name raises ``names.UnknownTask``."""
    return settings.queue(names.role_of(name, settings.embedded_store))


def beat_schedule(settings: DistributedSettings) -> dict[str, dict[str, Any]]:
    """The nightly update (crontab, or every ``update_interval_s``) and the idle-buffer flush."""
    if settings.update_interval_s:
        update: Any = timedelta(seconds=settings.update_interval_s)
    else:
        minute, hour, day_of_month, month_of_year, day_of_week = settings.update_crontab.split()
        update = crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year,
                         day_of_week=day_of_week)
    return {
        "lightmem-nightly-update": {"task": names.UPDATE_NIGHTLY, "schedule": update},
        "lightmem-flush-idle": {"task": names.UPDATE_FLUSH_IDLE, "schedule": timedelta(seconds=settings.idle_check_s)},
    }


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)  # type: ignore[no-untyped-call]


def _ssl_options(url: str, settings: DistributedSettings) -> dict[str, Any] | None:
    return {"ssl_cert_reqs": settings.redis_ssl_cert_reqs} if url.startswith("rediss://") else None


def make_app(settings: DistributedSettings) -> Celery:
    """A Celery application configured from ``settings``: JSON only, late acks, one task prefetched."""
    app = Celery("lightmem", broker=settings.redis_url, backend=settings.backend_url, include=TASK_MODULES)
    timeouts = {"socket_connect_timeout": settings.redis_connect_timeout_s, "socket_timeout": settings.redis_socket_timeout_s}
    app.conf.update(
        accept_content=["json"], task_serializer="json", result_serializer="json", result_accept_content=["json"],
        task_queues=[_queue(n) for n in map(settings.queue, QUEUES)],
        task_default_queue=settings.queue("compress"),
        task_routes=(lambda name, args, kwargs, options, task=None, **kw: {"queue": route_for(name, settings)},),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        # A dead worker's messages go back to their queues after the visibility timeout; every worker
        # looks for them each sixth of it (live workers keep theirs fresh: workers.transport). The look
        # holds a mutex in Redis for milliseconds; kombu lets it expire after 5 minutes, so a worker
        # killed or stopped while holding it kept every killed worker's messages away that long.
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s,
                                  "unacked_restore_interval": max(1, settings.visibility_timeout_s // 6),
                                  "unacked_restore_throttle": 1,
                                  "unacked_mutex_expire": max(2, settings.visibility_timeout_s // 6), **timeouts},
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        redis_socket_connect_timeout=settings.redis_connect_timeout_s,
        redis_socket_timeout=settings.redis_socket_timeout_s,
        broker_connection_timeout=settings.redis_connect_timeout_s,
        broker_connection_retry_on_startup=True,
        # kombu's Redis transport, except that an unreadable queue item becomes a dead letter.
        broker_transport="workers.transport:Transport",
        result_expires=settings.result_expires_s,
        result_extended=False,  # extended results would keep the arguments (user text) in Redis
        worker_send_task_events=True,
        task_send_sent_event=settings.task_sent_events,
        task_track_started=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        timezone="UTC",
        enable_utc=True,
        beat_schedule=beat_schedule(settings),
        lightmem_max_payload_bytes=settings.max_payload_bytes,  # workers.messages.send checks it
    )
    if (ssl := _ssl_options(settings.redis_url, settings)) is not None:
        app.conf.broker_use_ssl = ssl
    if (ssl := _ssl_options(settings.backend_url, settings)) is not None:
        app.conf.redis_backend_use_ssl = ssl
    return app


def _configure_logging(**_: Any) -> None:
    """LightMem's ``logging`` option sets the workers' ``lightmem_core`` logger as it does in the library
    (level and log file); Celery's own console handler prints it, so no second console handler. Celery's
    lines about rejected messages lose the message body (``workers.logs``)."""
    logs.install()
    config = get_settings().memory_cfg.logging
    if config is not None:
        configure_logging(config.model_copy(update={"console_enabled": False}))


after_setup_logger.connect(_configure_logging)


def _lower_priority(**_: Any) -> None:
    """Workers yield the CPU to the producers on a shared host (``worker_nice``): enqueue latency is what
    an application waits on, while a worker's batch is not hurried by a few milliseconds."""
    if (nice := get_settings().worker_nice) and hasattr(os, "nice"):
        os.nice(nice)


worker_init.connect(_lower_priority)


app = make_app(get_settings())
