"""The OpenAI-compatible embedder against a local HTTP server speaking the embeddings API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lightmem_core.embedders.hashing import HashingEmbedder
from lightmem_core.embedders.openai import OpenAIEmbedder
from lightmem_core.errors import ConfigError, TransientError

REFERENCE = HashingEmbedder(8)


class _Handler(BaseHTTPRequestHandler):
    requests: list[dict] = []
    fail_next = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if type(self).fail_next:
            type(self).fail_next -= 1
            self._send(503, {"error": {"message": "busy"}})
            return
        vectors = REFERENCE.embed(body["input"])
        # answer out of order: the client must sort by index
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in reversed(list(enumerate(vectors)))]
        self._send(200, {"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}})

    def _send(self, status: int, payload: dict) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.requests = []
    _Handler.fail_next = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_batches_and_keeps_input_order(server: str) -> None:
    emb = OpenAIEmbedder("text-embedding-3-small", api_key="sk-test", base_url=server, embedding_dims=8, batch_size=2)
    texts = ["alpha beta", "gamma", "delta epsilon", "zeta", "eta"]
    assert emb.embed(texts) == REFERENCE.embed(texts)
    assert [len(r["body"]["input"]) for r in _Handler.requests] == [2, 2, 1]
    assert _Handler.requests[0]["auth"] == "Bearer sk-test"


def test_server_errors_are_retried_then_transient(server: str) -> None:
    emb = OpenAIEmbedder("m", api_key="k", base_url=server, embedding_dims=8, timeout_s=5)
    _Handler.fail_next = 1
    assert len(emb.embed(["ok after one 503"])) == 1
    _Handler.fail_next = 100
    emb_no_retry = OpenAIEmbedder("m", api_key="k", base_url=server, embedding_dims=8, timeout_s=5)
    emb_no_retry._client = emb_no_retry._client.with_options(max_retries=0)
    with pytest.raises(TransientError, match="embedding endpoint failed"):
        emb_no_retry.embed(["still busy"])


def test_wrong_dimensions_and_missing_settings_are_named(server: str) -> None:
    with pytest.raises(ConfigError, match="embedding_dims"):
        OpenAIEmbedder("m", api_key="k", base_url=server, embedding_dims=None)
    with pytest.raises(ConfigError, match="model"):
        OpenAIEmbedder(None, api_key="k", base_url=server, embedding_dims=8)
    emb = OpenAIEmbedder("m", api_key="k", base_url=server, embedding_dims=16)
    with pytest.raises(ConfigError, match="returned 8 dims, configured 16"):
        emb.embed(["x"])
