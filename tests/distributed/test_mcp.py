"""``lightmem mcp`` as a subprocess driven by the ``mcp`` SDK's stdio client, on the session's Redis and
workers: the tools are listed, a session added through them is found by search; the scope of the
server's key holds."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from tests.distributed.conftest import Cluster

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TOOLS = {"add_memory", "search_memory", "list_memories", "delete_memory", "memory_status", "memory_history"}


async def _call(session: ClientSession, tool: str, arguments: dict[str, Any]) -> tuple[bool, Any]:
    """(is_error, the structured result or the error text)."""
    result: Any = await session.call_tool(tool, arguments)
    if result.is_error:
        return True, " ".join(getattr(block, "text", "") for block in result.content)
    return False, result.structured_content


def test_an_mcp_client_lists_the_tools_adds_a_session_and_finds_it(cluster: Cluster) -> None:
    key = "mcp-acme-key-0123456789"
    env = {**cluster.env, "LIGHTMEM_MCP_USER_ID": "acme:mcp-user", "LIGHTMEM_MCP_API_KEY": key,
           "LIGHTMEM_API_KEYS": json.dumps([{"key": key, "name": "acme", "user_prefix": "acme:"}])}
    params = StdioServerParameters(command=sys.executable, args=["-m", "producers.cli", "mcp"], env=env, cwd=ROOT)
    log_path = cluster.workdir / "logs" / "mcp.log"

    async def run() -> None:
        with log_path.open("w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                listed = await session.list_tools()
                assert {t.name for t in listed.tools} == TOOLS
                error, added = await _call(session, "add_memory", {"messages": [
                    {"role": "user", "content": "My bike is a green Bianchi I bought in Milan.",
                     "time_stamp": "2025-04-02T18:00:00Z"},
                    {"role": "assistant", "content": "A classic!"}], "session_id": "mcp-s1"})
                assert not error and added["user_id"] == "acme:mcp-user", added
                deadline = time.monotonic() + 90
                while True:
                    error, status = await _call(session, "memory_status", {"tracking_id": added["tracking_id"]})
                    assert not error and status["state"] != "failed", status
                    if status["state"] == "indexed":
                        break
                    assert time.monotonic() < deadline, status
                    await anyio.sleep(0.2)
                error, found = await _call(session, "search_memory", {"query": "what bike do I ride", "limit": 3})
                assert not error and "Bianchi" in found["results"][0]["memory"], found
                error, listed_entries = await _call(session, "list_memories", {})
                assert not error and listed_entries["entries"][0]["user_id"] == "acme:mcp-user"
                # The server's key is bound to acme:* users: another tenant's user is refused, by name or by id.
                error, text = await _call(session, "search_memory", {"query": "bike", "user_id": "globex:bob"})
                assert error and "may not touch this user" in text
                entry_id = listed_entries["entries"][0]["id"]
                error, text = await _call(session, "delete_memory", {"entry_id": entry_id, "user_id": "acme:other"})
                assert error and "no such entry of this user" in text
                error, history = await _call(session, "memory_history", {"entry_id": entry_id})
                assert not error and history["changes"][0]["action"] == "ADD"

    anyio.run(run)
    assert "Bianchi" not in log_path.read_text(), "user text in the MCP server's log at INFO"


def test_mcp_over_http_takes_each_requests_key_and_refuses_requests_without_one(cluster: Cluster) -> None:
    import httpx
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    from tests.distributed.conftest import _wait_port
    from workers.launch import free_port

    keys = {"acme": "mcp-http-acme-0123456789", "globex": "mcp-http-globex-0123456789"}
    port = free_port()
    cluster.procs.start("mcp-http", [sys.executable, "-m", "producers.cli", "mcp", "--transport", "http", "--port",
                                     str(port)], env={"LIGHTMEM_API_KEYS": json.dumps(
                                         [{"key": k, "name": n, "user_prefix": f"{n}:"} for n, k in keys.items()])})
    url = f"http://127.0.0.1:{port}/mcp"

    async def as_(name: str, calls: list[tuple[str, dict[str, Any]]]) -> list[tuple[bool, Any]]:
        headers = {"Authorization": f"Bearer {keys[name]}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http, \
                streamable_http_client(url, http_client=http) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            return [await _call(session, tool, args) for tool, args in calls]

    try:
        _wait_port(port, timeout_s=60)
        refused = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=10)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        (error, added), (denied, text) = anyio.run(as_, "acme", [
            ("add_memory", {"user_id": "acme:http", "messages": [{"role": "user", "content": "I play chess."}]}),
            ("list_memories", {"user_id": "globex:http"})])
        assert not error and added["user_id"] == "acme:http" and denied and "may not touch" in text
        [(error, text)] = anyio.run(as_, "globex", [("memory_status", {"tracking_id": added["tracking_id"]})])
        assert error and "unknown" in text  # another tenant's tracking id is not found
        [(error, status)] = anyio.run(as_, "acme", [("memory_status", {"tracking_id": added["tracking_id"]})])
        assert not error and status["user_id"] == "acme:http"
    finally:
        cluster.procs.stop_process("mcp-http")
