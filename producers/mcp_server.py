"""``lightmem mcp``: the memory as MCP tools (the official ``mcp`` SDK's ``MCPServer``, formerly FastMCP),
over stdio or streamable HTTP.

Tools: ``add_memory`` (enqueue a session), ``search_memory``, ``list_memories``, ``delete_memory``,
``memory_status`` and ``memory_history``. Each takes an optional ``user_id``; without one the tool acts
for ``LIGHTMEM_MCP_USER_ID``. Scoping is the HTTP API's (``producers.access``): over HTTP each request's
key (``Authorization: Bearer``) gives the scope; over stdio, ``LIGHTMEM_MCP_API_KEY`` does (needed when
API keys are configured). Without any key configured, the HTTP transport listens on 127.0.0.1 only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from lightmem_core.errors import LightMemError, NotFound, Unauthenticated
from producers import access
from producers.api.schemas import Strategy, Turn
from producers.sdk import MemoryProducer
from workers.launch import is_loopback
from workers.settings import DistributedSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

INSTRUCTIONS = """Long-term memory of a user's conversations. add_memory stores a conversation (it becomes
searchable within seconds to minutes: memory_status says when); search_memory finds what the user said
before; list_memories, delete_memory and memory_history manage single memories."""


class MemoryTools:
    """The tools' bodies, on one producer, for callers of one scope (stdio) or each request's (HTTP)."""

    def __init__(self, producer: MemoryProducer, settings: DistributedSettings, stdio_scope: access.Scope) -> None:
        self.producer, self.settings, self.stdio_scope = producer, settings, stdio_scope

    def scope_of(self, ctx: Context | None) -> access.Scope:
        """Over HTTP the scope of the request's key; over stdio the server's."""
        try:
            request = ctx.request_context.request if ctx is not None else None
        except ValueError:  # no request context: called outside a request
            request = None
        if not isinstance(request, Request):
            return self.stdio_scope
        return access.scope_for(self.settings.api_keys, _presented_key(request.headers.get("authorization"),
                                                                       request.headers.get("x-api-key")))

    def user(self, ctx: Context | None, user_id: str | None) -> str:
        """The user a call is about (its argument, else the configured one), once its scope allows it."""
        chosen = user_id or self.settings.mcp_user_id
        if not chosen:
            raise ToolError("user_id: required (no LIGHTMEM_MCP_USER_ID is configured for this server)")
        return self.scope_of(ctx).check(chosen)

    def add(self, ctx: Context | None, messages: list[Turn], user_id: str | None, session_id: str | None,
            time_stamp: str | None) -> dict[str, Any]:
        user = self.user(ctx, user_id)
        session = {"turns": [m.model_dump(exclude_none=True) for m in messages], "session_id": session_id,
                   "time_stamp": time_stamp}
        tracking_id = self.producer.enqueue_session(user, {k: v for k, v in session.items() if v is not None})
        self.producer.flush(user)  # an agent expects what it adds to become searchable, not to wait for more turns
        return {"tracking_id": tracking_id, "user_id": user, "state": "queued"}

    def status(self, ctx: Context | None, tracking_id: str | None, user_id: str | None) -> dict[str, Any]:
        if tracking_id is None:
            return self.producer.user_status(self.user(ctx, user_id))
        found = self.producer.status(tracking_id)
        if found.get("state", "unknown") == "unknown" or not self.scope_of(ctx).allows(str(found.get("user_id", ""))):
            raise NotFound(f"tracking id {tracking_id!r}: unknown (or expired after 7 days)")
        return {"tracking_id": tracking_id, **found}


def _presented_key(authorization: str | None, header_key: str | None) -> str | None:
    scheme, _, credentials = (authorization or "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else header_key


def _guarded(call: Callable[[], T]) -> T:
    """Our errors reach the model as the tool's error text (``ToolError``), never as a crash."""
    try:
        return call()
    except LightMemError as exc:
        raise ToolError(" ".join(str(exc).split())) from exc


def build_server(tools: MemoryTools) -> MCPServer:
    """The MCP server with the six memory tools."""
    server = MCPServer("lightmem", instructions=INSTRUCTIONS)

    @server.tool()
    def add_memory(messages: list[Turn], ctx: Context, user_id: str | None = None, session_id: str | None = None,
                   time_stamp: str | None = None) -> dict[str, Any]:
        """Store a conversation (a session of messages with role and content) in the user's long-term
        memory. Returns a tracking id for memory_status."""
        return _guarded(lambda: tools.add(ctx, messages, user_id, session_id, time_stamp))

    @server.tool()
    def search_memory(query: str, ctx: Context, user_id: str | None = None, limit: int = 5,
                      strategy: Strategy | None = None, filters: dict[str, Any] | None = None) -> dict[str, Any]:
        """Find the user's memories nearest to a query; each result has the memory, its time and score."""
        def run() -> dict[str, Any]:
            user = tools.user(ctx, user_id)
            return {"user_id": user, "results": tools.producer.search(user, query, limit, filters, strategy)}
        return _guarded(run)

    @server.tool()
    def list_memories(ctx: Context, user_id: str | None = None) -> dict[str, Any]:
        """Every memory of the user, oldest first."""
        def run() -> dict[str, Any]:
            user = tools.user(ctx, user_id)
            return {"user_id": user, "entries": tools.producer.entries(user)}
        return _guarded(run)

    @server.tool()
    def delete_memory(entry_id: str, ctx: Context, user_id: str | None = None) -> dict[str, Any]:
        """Delete one memory of the user (its history keeps the deletion)."""
        def run() -> dict[str, Any]:
            user = tools.user(ctx, user_id)
            tools.producer.delete_entry(user, entry_id)
            return {"user_id": user, "deleted": entry_id}
        return _guarded(run)

    @server.tool()
    def memory_status(ctx: Context, tracking_id: str | None = None, user_id: str | None = None) -> dict[str, Any]:
        """The state of an added conversation (queued, buffered, indexed or failed), or without a tracking
        id the user's pipeline: buffered turns, batches in flight, failures."""
        return _guarded(lambda: tools.status(ctx, tracking_id, user_id))

    @server.tool()
    def memory_history(entry_id: str, ctx: Context, user_id: str | None = None) -> dict[str, Any]:
        """Every change of one memory (added, updated, deleted), oldest first."""
        def run() -> dict[str, Any]:
            user = tools.user(ctx, user_id)
            return {"entry_id": entry_id, "changes": tools.producer.entry_history(user, entry_id)}
        return _guarded(run)

    return server


class _KeyGate:
    """Streamable HTTP: a request without a valid key (when keys are configured) is refused with 401."""

    def __init__(self, app: ASGIApp, settings: DistributedSettings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            try:
                access.scope_for(self.settings.api_keys, _presented_key(request.headers.get("authorization"),
                                                                        request.headers.get("x-api-key")))
            except LightMemError as exc:
                body = {"error": {"code": "unauthorized", "message": str(exc)}}
                await JSONResponse(body, 401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


def serve(settings: DistributedSettings, transport: Literal["stdio", "http"], host: str | None = None,
          port: int | None = None) -> int:
    """Run the MCP server in the foreground (stdio: until the client closes it)."""
    stdio_scope = access.LOCAL
    if transport == "stdio" and settings.api_keys:
        key = settings.mcp_api_key.get_secret_value() if settings.mcp_api_key else None
        if key is None:
            raise Unauthenticated("LIGHTMEM_MCP_API_KEY: API keys are configured (LIGHTMEM_API_KEYS); "
                                         "the MCP server over stdio acts with one of them")
        stdio_scope = access.scope_for(settings.api_keys, key)
    if transport == "stdio" and settings.mcp_user_id:
        stdio_scope.check(settings.mcp_user_id)
    producer = MemoryProducer(settings)
    server = build_server(MemoryTools(producer, settings, stdio_scope))
    try:
        if transport == "stdio":
            server.run("stdio")
        else:
            _serve_http(server, settings, host or settings.api_host, port or settings.api_port)
    finally:
        producer.close()
    return 0


def _serve_http(server: MCPServer, settings: DistributedSettings, host: str, port: int) -> None:
    import uvicorn

    if not settings.api_keys:
        if not is_loopback(host):
            log.warning("not listening on %s: no API key is configured (LIGHTMEM_API_KEYS)", host)
        host = "127.0.0.1"
        log.warning("no API key configured (LIGHTMEM_API_KEYS): MCP over HTTP listens on 127.0.0.1 only")
    app = _KeyGate(server.streamable_http_app(host=host), settings)
    log.info("MCP over streamable HTTP at http://%s:%d/mcp", host, port)
    uvicorn.run(app, host=host, port=port, log_level="info")
