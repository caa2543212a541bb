"""The FastAPI application of ``lightmem api``, and the uvicorn server that runs it.

One ``MemoryProducer`` per process serves every request (its Redis pool and Celery producer are
thread-safe; routes are plain functions run on uvicorn's thread pool). In embedded mode searches go to
the store worker's desk; with a Qdrant server this process searches the server itself, and any number
of API processes run side by side.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from producers.api import errors, health, routes
from producers.sdk import MemoryProducer
from workers.launch import is_loopback
from workers.settings import DistributedSettings, get_settings

log = logging.getLogger(__name__)

DESCRIPTION = """Long-term memory for LLM applications (LightMem's pipeline on Celery, Redis and Qdrant).

Enqueue sessions or turns (durable when the call answers; follow them with their tracking id), search a
user's memories, list, read and delete them, read an entry's history, delete a user. Every `/v1` call
carries an API key (`Authorization: Bearer <key>` or `X-API-Key`) bound to some users, and names the user
it is about in the `user_id` query parameter. Errors are `{"error": {"code": ..., "message": ...}}`."""


def create_app(settings: DistributedSettings | None = None, producer: MemoryProducer | None = None) -> FastAPI:
    """The application; its producer is built at start-up (or the one given is used, and not closed)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = producer is None
        app.state.producer = producer or MemoryProducer(settings)
        try:
            yield
        finally:
            if own:
                app.state.producer.close()

    app = FastAPI(title="LightMem", version="1", description=DESCRIPTION, lifespan=lifespan,
                  max_body_size=2 * settings.max_payload_bytes)
    app.state.settings = settings
    errors.install(app)
    app.include_router(health.router)
    app.include_router(routes.router)
    return app


def serve(settings: DistributedSettings, host: str | None = None, port: int | None = None,
          forwarded_allow_ips: str | None = None, proxy_headers: bool = True) -> int:
    """Run the API in the foreground until Ctrl-C. Without an API key it listens on 127.0.0.1 only."""
    import uvicorn

    host = host or settings.api_host
    if not settings.api_keys:
        if not is_loopback(host):
            log.warning("not listening on %s: no API key is configured (LIGHTMEM_API_KEYS)", host)
        host = "127.0.0.1"
        log.warning("no API key configured (LIGHTMEM_API_KEYS): listening on 127.0.0.1 only, and every local "
                    "caller may touch every user")
    else:
        log.info("%d API key(s) configured; every /v1 request needs one", len(settings.api_keys))
    uvicorn.run(create_app(settings), host=host, port=port or settings.api_port, proxy_headers=proxy_headers,
                forwarded_allow_ips=forwarded_allow_ips, log_level="info")
    return 0
