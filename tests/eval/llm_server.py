"""A tiny scripted OpenAI-compatible chat server for the answer/judge mechanics.

``reply(messages) -> str`` decides each answer; ``fail_first`` requests get HTTP 500 first, so the
real ``openai`` client's retry path runs too.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[list[dict[str, str]]], str]


@contextmanager
def scripted_llm(reply: Reply, fail_first: int = 0) -> Iterator[dict[str, Any]]:
    """Serve on 127.0.0.1; yields ``{"base_url", "requests"}``."""
    state: dict[str, Any] = {"requests": [], "failures_left": fail_first}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                state["requests"].append(body)
                fail = state["failures_left"] > 0
                state["failures_left"] -= 1 if fail else 0
            if fail:
                self._send(500, {"error": {"message": "scripted failure"}})
                return
            text = reply(body["messages"])
            self._send(200, {
                "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
            })

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"base_url": f"http://127.0.0.1:{server.server_address[1]}/v1", "requests": state["requests"]}
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
