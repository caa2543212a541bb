"""``/healthz`` and ``/readyz`` for load balancers; no key needed, no user data in either.

``/healthz`` is 200 while the process serves requests. ``/readyz`` is 200 when this process can do its
work: Redis answers, and the store answers a read (in embedded mode the store worker's desk, within
``LIGHTMEM_API_READY_TIMEOUT_S``; with a Qdrant server the server itself). Otherwise 503, naming what
failed.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from lightmem_core.errors import SearchTimeout
from producers.api.schemas import Check, Health, Readiness
from producers.sdk import MemoryProducer

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is alive."""
    return Health()


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "Not ready"}})
def readyz(request: Request) -> JSONResponse:
    """Redis and the store answer."""
    producer: MemoryProducer = request.app.state.producer
    checks = {"redis": _redis(producer), "store": _store(producer, request.app.state.settings.api_ready_timeout_s)}
    ready = all(c.status == "ok" for c in checks.values())
    body = Readiness(status="ready" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=200 if ready else 503,
                        headers=None if ready else {"Retry-After": "5"})


def _redis(producer: MemoryProducer) -> Check:
    try:
        producer.state.r.ping()
    except Exception as exc:  # any failure means not ready; the reason is its type, never a URL with a password
        return Check(status="failed", detail=f"Redis does not answer ({type(exc).__name__})")
    return Check(status="ok")


def _store(producer: MemoryProducer, timeout_s: float) -> Check:
    try:
        producer.ping_store(timeout_s)
    except SearchTimeout:
        return Check(status="failed", detail=f"no store worker answered within {timeout_s:g} s")
    except Exception as exc:  # a LightMemError, or a Qdrant server's client's own error
        return Check(status="failed", detail=f"the store does not answer ({type(exc).__name__})")
    return Check(status="ok")
