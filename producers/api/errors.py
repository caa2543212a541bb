"""Every error as a JSON body ``{"error": {"code": ..., "message": ...}}``, one status per error class.

Bad input is 422 and names the field; a missing or unknown key 401, a user outside the key's scope 403;
an unknown tracking id or entry 404; a search nobody answered in time, or Redis away, 503 with
``Retry-After``. Anything else is 500 with no detail: its type is logged, its text only at DEBUG
(it may quote user text).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lightmem_core import errors
from producers.api.schemas import ErrorBody
from workers.messages import PayloadTooLarge

log = logging.getLogger(__name__)

# Checked in order: a subclass before its base.
_STATUS: list[tuple[type[BaseException], int, str]] = [
    (PayloadTooLarge, 413, "payload_too_large"),
    (errors.InvalidInput, 422, "invalid_input"),
    (errors.Unauthenticated, 401, "unauthorized"),
    (errors.AccessDenied, 403, "forbidden"),
    (errors.NotFound, 404, "not_found"),
    (errors.TransientError, 503, "unavailable"),
]
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description} for status, description in [
        (401, "No API key, or an unknown one"), (403, "The key may not touch this user"),
        (404, "No such tracking id or entry for this user"), (422, "Bad input; the message names the field"),
        (503, "The store or Redis did not answer in time; retry after Retry-After seconds"),
    ]
}


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    detail: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        detail["field"] = field
    return JSONResponse({"error": detail}, status_code=status, headers=headers)


def _field_of(message: str) -> str | None:
    """The field an ``InvalidInput`` names (its messages start with ``field: reason``)."""
    head, sep, _ = message.partition(":")
    return head if sep and " " not in head.strip() else None


async def _lightmem_error(request: Request, exc: Exception) -> JSONResponse:
    for cls, status, code in _STATUS:
        if isinstance(exc, cls):
            message = " ".join(str(exc).split())
            headers = None
            if status == 401:
                headers = {"WWW-Authenticate": "Bearer"}
            elif status == 503:
                wait = getattr(exc, "retry_after_s", None) or 1.0
                headers = {"Retry-After": str(max(1, math.ceil(wait)))}
            return error_response(status, code, message, _field_of(message) if status == 422 else None, headers)
    return await _unexpected(request, exc)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
    log.debug("the failure", exc_info=exc)
    return error_response(500, "internal", f"the server failed ({type(exc).__name__}); see its log")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ())]
    if first.get("type") == "json_invalid":  # its location is a character position in the body
        loc = ["body"]
    elif loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:] or loc
    field = ".".join(loc) or "request"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return error_response(422, "invalid_input", f"{field}: {first.get('msg', 'invalid')}{more}", field)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error" if exc.status_code < 500 else "internal")
    return error_response(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))


class _CatchAll:
    """Any other exception becomes a 500 error body here, instead of Starlette's plain-text page and a
    logged traceback (whose text may quote user input)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:  # too late for an error body
                raise
            response = await _unexpected(Request(scope), exc)
            await response(scope, receive, send)


def install(app: FastAPI) -> None:
    """The handlers that turn every failure into an error body."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(errors.LightMemError, _lightmem_error)
    app.add_middleware(_CatchAll)
