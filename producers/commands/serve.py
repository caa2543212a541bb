"""``lightmem api`` and ``lightmem mcp``: the HTTP API and the MCP server, in the foreground."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    api = subparsers.add_parser(
        "api", help="serve the HTTP API (/v1, OpenAPI docs at /docs); keys from LIGHTMEM_API_KEYS")
    api.add_argument("--host", default=None,
                     help="address to listen on (default LIGHTMEM_API_HOST, 127.0.0.1); without an API key "
                          "configured it is always 127.0.0.1")
    api.add_argument("--port", type=int, default=None, help="port (default LIGHTMEM_API_PORT, 8000)")
    api.add_argument("--forwarded-allow-ips", default=None, metavar="IPS",
                     help="proxies whose X-Forwarded-For/-Proto headers are trusted, comma-separated "
                          "(default: uvicorn's, $FORWARDED_ALLOW_IPS or 127.0.0.1)")
    api.add_argument("--no-proxy-headers", action="store_true",
                     help="ignore X-Forwarded-* headers even from trusted proxies")
    api.set_defaults(func=_api)
    mcp = subparsers.add_parser(
        "mcp", help="serve the memory as MCP tools over stdio (for a desktop client) or streamable HTTP")
    mcp.add_argument("--transport", choices=["stdio", "http"], default="stdio",
                     help="stdio (default: the client starts this command) or http (streamable HTTP at /mcp)")
    mcp.add_argument("--host", default=None, help="http: address to listen on (default LIGHTMEM_API_HOST)")
    mcp.add_argument("--port", type=int, default=None, help="http: port (default LIGHTMEM_API_PORT, 8000)")
    mcp.set_defaults(func=_mcp)


def _api(args: argparse.Namespace) -> int:
    from producers.api.app import serve
    from workers.settings import get_settings

    return serve(get_settings(), args.host, args.port, args.forwarded_allow_ips, not args.no_proxy_headers)


def _mcp(args: argparse.Namespace) -> int:
    from producers.mcp_server import serve
    from workers.settings import get_settings

    return serve(get_settings(), args.transport, args.host, args.port)
