"""A scripted OpenAI-compatible HTTP server for tests, benchmarks and dry runs without an API key.

Serves ``POST /v1/chat/completions`` and ``POST /v1/embeddings`` on 127.0.0.1. Each chat request
takes the next scripted ``Step`` if there is one (given content, usage or not, a delay, HTTP 429
with ``Retry-After``, 500, a broken body); otherwise it answers automatically from the request:
extraction prompts get one fact per message shown, citing that message's reference (plus keywords
and topic summaries when the prompt asks for them; and, like a vision model, one fact per image sent
as an ``image_url`` content part after its ``Image m3.1:`` label, naming the image's size and main
colour, which it reads from the data URL; an image part it cannot decode gets HTTP 400, as OpenAI answers), update prompts get ``ignore`` (or, with
``update_actions="mixed"``, a decision derived from the target's text, so that runs are
repeatable), batched update prompts one such decision per target, anything else ``OK``. Every
request is recorded, and ``max_in_flight`` is the most chat requests it was answering at once.

``POST /control`` changes a running server from another process (tests of worker processes):
``{"steps": [{"status": 500}, ...]}`` queues steps, ``{"fail_marker": "word"}`` answers every
chat request whose prompt contains ``word`` with invalid JSON (or, with ``"fail_status": 500``,
with that HTTP status) until it is set to ``null``, and
``{"update_actions": "mixed"}`` switches the update answers, ``{"delay_s": 0.5}`` sets the delay of
unscripted answers, and ``{"faults": {"rate": 0.2, "seed": 7, "kinds": ["429", "500", "timeout",
"broken_json"], "timeout_s": 5}}`` answers that share of unscripted chat requests with a fault drawn
from ``kinds`` (``timeout``: the answer comes after ``timeout_s``; ``null`` turns faults off). It
answers the current settings, with ``faults_served`` counted per kind, ``answered`` (chat requests
answered with 200) and ``repeated`` (those whose exact model and messages had been answered with 200
before: the calls a reply cache would have saved).

Like OpenAI's automatic prompt caching and vLLM's prefix caching, the server reports
``usage.prompt_tokens_details.cached_tokens``: the tokens of the longest run of leading messages that
an earlier request to the same model began with (the fixed system prompt, once it was seen).

In a test::

    with ScriptedLLMServer() as llm:
        llm.script(Step(status=429, retry_after="1"), Step(content='{"facts": []}'))
        ...  # configure base_url=llm.base_url

As a process: ``lightmem scripted-llm --port 8011 [--delay-s 1.0]`` (or ``python -m producers.scripted_llm``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import random
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lightmem_core.embedders.hashing import HashingEmbedder
from lightmem_core.llm.base import content_text
from lightmem_core.llm.openai_compat import count_prompt_tokens
from lightmem_core.tokens import count_tokens
from producers.scripted_graph import graph_reply

_LINE = re.compile(r"^\[(m\d+)\] \S+ \S+ \S+ ([^:]+): (.*)$")
_TOPIC = re.compile(r"^Topic (-?\d+):$")


@dataclass
class Step:
    """How to answer one chat request. ``content=None`` means: the automatic answer."""

    content: str | None = None
    status: int = 200
    usage: bool = True
    delay_s: float = 0.0
    retry_after: str | None = None
    raw_body: str | None = None


class Faults:
    """A share of chat requests answered with a fault, drawn from a seeded generator (repeatable counts)."""

    KINDS = ("429", "500", "timeout", "broken_json")

    def __init__(self, rate: float, seed: int = 0, kinds: list[str] | None = None, timeout_s: float = 5.0) -> None:
        if not 0 <= rate <= 1:
            raise ValueError(f"rate: expected 0..1, got {rate}")
        self.kinds = list(kinds or self.KINDS)
        if unknown := set(self.kinds) - set(self.KINDS):
            raise ValueError(f"kinds: unknown {sorted(unknown)}; expected some of {list(self.KINDS)}")
        self.rate, self.timeout_s, self._rng = rate, timeout_s, random.Random(seed)

    def draw(self) -> str | None:
        """The fault for the next request, or None for a normal answer."""
        return self._rng.choice(self.kinds) if self._rng.random() < self.rate else None

    def step(self, kind: str, delay_s: float) -> Step:
        if kind == "429":
            return Step(status=429, retry_after="0.2")
        if kind == "500":
            return Step(status=500)
        if kind == "timeout":
            return Step(delay_s=self.timeout_s)
        return Step(content="{scripted: broken json", delay_s=delay_s)


_WHEN = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} \w*"  # "2025-03-01 10:00 Sat", as the update prompt shows times
_TARGET = re.compile(rf"^Target \[(\S+)\] {_WHEN}: (.*)$", re.MULTILINE)
_CANDIDATE = re.compile(rf"^\[(c\d+)\] {_WHEN}: (.*)$", re.MULTILINE)


def auto_reply(body: dict[str, Any], update_actions: str = "ignore") -> str:
    """A plausible answer to a LightMem prompt, derived from the request alone."""
    messages = body.get("messages", [])
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    user = "\n".join(content_text(m) for m in messages if m["role"] == "user")
    if "how the people in it relate" in system:  # extraction_mode event: the relational call
        return json.dumps({"facts": _relations(user)})
    if '"source_ids"' in system:
        reply = _extraction(user, '"keywords"' in system, '"summaries"' in system)
        if '"relations"' in system:  # graph_mem: entities and relations from fixed sentence patterns
            reply.update(graph_reply(user))
        reply["facts"] += [{"text": text, "source_ids": [ref]} for ref, text in image_facts(messages)]
        return json.dumps(reply)
    if '"decisions"' in system:
        return json.dumps({"decisions": [{"target": ref, **_decide(ref, target, block, update_actions)}
                                         for ref, target, block in _targets(user)]})
    if '"action"' in system:
        return json.dumps(_update(user) if update_actions == "mixed" else
                          {"action": "ignore", "reason": "scripted: nothing to change"})
    return "OK"


def _targets(user: str) -> list[tuple[str, str, str]]:
    """A batched update prompt's targets: (ref, text, the block with its candidates)."""
    starts = list(_TARGET.finditer(user))
    ends = [m.start() for m in starts[1:]] + [len(user)]
    return [(m.group(1), m.group(2), user[m.start() : end]) for m, end in zip(starts, ends, strict=True)]


def _decide(ref: str, target: str, block: str, update_actions: str) -> dict[str, Any]:
    if update_actions != "mixed":
        return {"action": "ignore", "reason": "scripted: nothing to change"}
    return _update(block)


def _update(user: str) -> dict[str, Any]:
    """A decision that depends on the target's text only: the same request always gets the same answer."""
    target = _TARGET.search(user)
    candidates = _CANDIDATE.findall(user)
    if target is None or not candidates:
        return {"action": "ignore", "reason": "scripted: nothing to compare"}
    choice = int(hashlib.sha1(target.group(2).encode("utf-8")).hexdigest(), 16) % 3
    if choice == 0:
        return {"action": "update", "new_text": f"{target.group(2)} (confirmed by {candidates[0][0]})",
                "reason": "scripted: a newer memory confirms it"}
    if choice == 1:
        return {"action": "delete", "merge_into": candidates[-1][0], "reason": "scripted: a newer memory replaces it"}
    return {"action": "ignore", "reason": "scripted: both stay true"}


_RELATIONAL_CUES = {"thank": "thanked the others", "congrat": "congratulated the others", "proud": "expressed pride",
                    "?": "showed interest by asking"}


def _relations(user: str) -> list[dict[str, Any]]:
    """A relational reply: one exchange per message that thanks, congratulates, says it is proud or asks."""
    found = []
    for line in user.splitlines():
        if m := _LINE.match(line):
            ref, speaker, text = m.groups()
            cue = next((what for word, what in _RELATIONAL_CUES.items() if word in text.lower()), None)
            if cue is not None:
                found.append({"text": f"{speaker} {cue}: {' '.join(text.split()[:20])}", "source_ids": [ref]})
    return found


def _extraction(user: str, keywords: bool, summaries: bool) -> dict[str, Any]:
    facts: list[dict[str, Any]] = []
    firsts: dict[int, str] = {}
    topic = 0
    for line in user.splitlines():
        if m := _TOPIC.match(line):
            topic = int(m.group(1))
            continue
        if not (m := _LINE.match(line)):
            continue
        ref, speaker, text = m.groups()
        words = text.split()
        fact: dict[str, Any] = {"text": f"{speaker} said: {' '.join(words[:40])}", "source_ids": [ref]}
        if keywords:
            fact["keywords"] = sorted({w.strip(".,!?").lower() for w in words if len(w) > 5})[:3]
            fact["category"] = "conversation"
        facts.append(fact)
        firsts.setdefault(topic, " ".join(words[:12]))
    reply: dict[str, Any] = {"facts": facts}
    if summaries:
        reply["summaries"] = [{"topic_id": t, "summary": f"Talk about {s}"} for t, s in firsts.items()]
    return reply


_IMAGE_LABEL = re.compile(r"^Image (m\d+)\.\d+:$")


def image_parts(messages: list[Any]) -> list[tuple[str, str]]:
    """(label, URL) of every ``image_url`` part of the user messages, the label being the text part before it."""
    found: list[tuple[str, str]] = []
    for m in messages:
        if m.get("role") != "user" or isinstance(m.get("content"), str):
            continue
        label = ""
        for part in m.get("content") or []:
            if part.get("type") == "text":
                label = str(part.get("text", "")).strip()
            elif part.get("type") == "image_url":
                found.append((label, str((part.get("image_url") or {}).get("url", ""))))
    return found


def image_facts(messages: list[Any]) -> list[tuple[str, str]]:
    """(reference, fact) for each labelled image: what a vision model could say, read from the pixels."""
    from PIL import Image, ImageStat

    facts = []
    for label, url in image_parts(messages):
        if not (m := _IMAGE_LABEL.match(label)) or not url.startswith("data:"):
            continue
        with Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2]))) as img:
            rgb = img.convert("RGB")
            r, g, b = ImageStat.Stat(rgb).mean
            size = rgb.size
        colour = max((("red", r), ("green", g), ("blue", b)), key=lambda kv: kv[1])[0]
        facts.append((m.group(1), f"The image shared in {m.group(1)} is {size[0]}x{size[1]} pixels, mostly {colour}."))
    return facts


def bad_image(body: dict[str, Any]) -> str | None:
    """Why an ``image_url`` part of the request cannot be read (an http URL is taken as it is), or None."""
    from PIL import Image

    for _, url in image_parts(body.get("messages", [])):
        if url.startswith(("http://", "https://")):
            continue
        try:
            with Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2], validate=True))) as img:
                img.verify()
        except Exception:  # whatever the decoder raises: the request is refused, as OpenAI refuses it
            return "Invalid image data."
    return None


def _digest(model: Any, messages: list[Any]) -> str:
    return hashlib.sha256(json.dumps([model, messages], sort_keys=True).encode("utf-8")).hexdigest()


def _purpose(body: dict[str, Any]) -> str:
    messages = body.get("messages", [])
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    kind = "extraction" if '"source_ids"' in system else "update" if '"action"' in system else "other"
    return f"{kind}_repair" if any(m["role"] == "assistant" for m in messages) else kind


class ScriptedLLMServer:
    """The server; use as a context manager or call ``start``/``stop``."""

    def __init__(self, port: int = 0, delay_s: float = 0.0, usage: bool = True,
                 responder: Callable[[dict[str, Any]], str | None] | None = None) -> None:
        self.delay_s, self.usage = delay_s, usage
        # Answers unscripted requests from the body; returning None falls back to ``auto_reply``.
        self.responder = responder
        self.fail_marker: str | None = None  # chat requests containing it fail: invalid JSON, or fail_status
        self.fail_status: int | None = None
        self.update_actions = "ignore"
        self.faults: Faults | None = None
        self.faults_served: dict[str, int] = {}
        self.requests: list[dict[str, Any]] = []  # chat request bodies, in arrival order
        self.statuses: list[int] = []  # the status answered to each chat request
        self.answered: set[str] = set()  # digests of the (model, messages) answered with 200
        self.repeated = 0  # 200 answers to a (model, messages) answered with 200 before
        self.in_flight = 0  # chat requests being answered now
        self.max_in_flight = 0  # the most at once since start (or since it was set to 0)
        self._prefixes: set[str] = set()  # digests of the leading message runs of every request seen
        self._steps: deque[Step] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._embedder = HashingEmbedder(64)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def script(self, *steps: Step) -> None:
        """Queue answers for the next chat requests, in order."""
        with self._lock:
            self._steps.extend(steps)

    def pending(self) -> int:
        """Scripted steps not used yet."""
        with self._lock:
            return len(self._steps)

    def start(self) -> ScriptedLLMServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="scripted-llm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> ScriptedLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next(self, body: dict[str, Any]) -> Step:
        with self._lock:
            self.requests.append(body)
            if self._steps:
                step = self._steps.popleft()
            elif self.faults is not None and (kind := self.faults.draw()) is not None:
                self.faults_served[kind] = self.faults_served.get(kind, 0) + 1
                step = self.faults.step(kind, self.delay_s)
            else:
                step = Step(usage=self.usage, delay_s=self.delay_s)
            self.statuses.append(step.status)
            return step

    def purposes(self) -> list[str]:
        """What each chat request was: extraction, repair (a second try after an invalid reply), update or other."""
        return [_purpose(body) for body in list(self.requests)]

    def chat(self, body: dict[str, Any]) -> tuple[int, dict[str, str], str]:
        """Status, headers and body for one chat request."""
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self._answer(body)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, str], str]:
        step = self._next(body)
        marked = bool(self.fail_marker) and str(self.fail_marker) in json.dumps(body.get("messages", []))
        if marked and self.fail_status is not None:
            return self.fail_status, {}, json.dumps({"error": {"message": f"scripted HTTP {self.fail_status}"}})
        if step.delay_s:
            self._stopping.wait(step.delay_s)
        headers = {"Retry-After": step.retry_after} if step.retry_after is not None else {}
        if step.raw_body is not None:
            return step.status, headers, step.raw_body
        if step.status != 200:
            return step.status, headers, json.dumps({"error": {"message": f"scripted HTTP {step.status}"}})
        if (why := bad_image(body)) is not None:
            return 400, {}, json.dumps({"error": {"message": why, "type": "invalid_request_error"}})
        text = step.content
        if text is None and marked:
            text = "{scripted: not json"
        if text is None and self.responder is not None:
            text = self.responder(body)
        if text is None:
            text = auto_reply(body, self.update_actions)
        reply: dict[str, Any] = {
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": 0, "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        }
        cached = self._seen_prefix_tokens(body)
        if step.usage:
            prompt, completion = count_prompt_tokens(body.get("messages", [])), count_tokens(text)
            reply["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                              "prompt_tokens_details": {"cached_tokens": cached}}
        return 200, headers, json.dumps(reply)

    def _seen_prefix_tokens(self, body: dict[str, Any]) -> int:
        """Count an answered request, and the tokens of its longest leading run of messages seen before."""
        messages = list(body.get("messages", []))
        digests = [_digest(body.get("model"), messages[:n]) for n in range(1, len(messages) + 1)]
        with self._lock:
            if digests and digests[-1] in self.answered:
                self.repeated += 1
            self.answered.update(digests[-1:])
            seen = 0
            while seen < len(digests) and digests[seen] in self._prefixes:
                seen += 1
            self._prefixes.update(digests)
        return sum(count_tokens(str(m.get("content", ""))) + 4 for m in messages[:seen])

    def embeddings(self, body: dict[str, Any]) -> tuple[int, dict[str, str], str]:
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(self._embedder.embed(texts))]
        return 200, {}, json.dumps({"object": "list", "data": data, "model": body.get("model"),
                                    "usage": {"prompt_tokens": 0, "total_tokens": 0}})

    def control(self, body: dict[str, Any]) -> tuple[int, dict[str, str], str]:
        """Change the running server (see the module's doc); answers the current settings."""
        if "steps" in body:
            self.script(*(Step(**step) for step in body["steps"]))
        if "fail_marker" in body:
            self.fail_marker = body["fail_marker"]
            self.fail_status = body.get("fail_status")
        if "delay_s" in body:
            self.delay_s = float(body["delay_s"])
        if "faults" in body:
            try:
                self.faults = Faults(**body["faults"]) if body["faults"] else None
            except (TypeError, ValueError) as exc:
                return 400, {}, json.dumps({"error": {"message": f"faults: {exc}"}})
        if "update_actions" in body:
            if body["update_actions"] not in ("ignore", "mixed"):
                return 400, {}, json.dumps({"error": {"message": "update_actions: expected 'ignore' or 'mixed'"}})
            self.update_actions = body["update_actions"]
        state = {"pending_steps": self.pending(), "fail_marker": self.fail_marker, "fail_status": self.fail_status,
                 "update_actions": self.update_actions, "requests": len(self.requests), "delay_s": self.delay_s,
                 "faults_served": dict(self.faults_served), "answered": len(self.answered) + self.repeated,
                 "repeated": self.repeated, "max_in_flight": self.max_in_flight}
        return 200, {}, json.dumps(state)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: avoid the 40 ms delayed ACK

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                found = self.path.endswith("/models")
                data = json.dumps({"object": "list", "data": [{"id": "scripted", "object": "model"}]} if found
                                  else {"error": {"message": "not found"}}).encode("utf-8")
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                    if self.path.endswith("/chat/completions"):
                        status, headers, payload = server.chat(body)
                    elif self.path.endswith("/embeddings"):
                        status, headers, payload = server.embeddings(body)
                    elif self.path == "/control":
                        status, headers, payload = server.control(body)
                    else:
                        status, headers, payload = 404, {}, json.dumps({"error": {"message": "not found"}})
                    data = payload.encode("utf-8")
                    self.send_response(status)
                    for key, value in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError, ValueError, KeyError, OSError):
                    # A client that gave up on a hung reply, or a malformed request: nothing to answer.
                    self.close_connection = True

        return Handler


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port, printed)")
    parser.add_argument("--delay-s", type=float, default=0.0, help="answer each chat request after this delay")
    parser.add_argument("--no-usage", action="store_true", help="leave usage out of replies")
    parser.add_argument("--update-actions", choices=["ignore", "mixed"], default="ignore",
                        help="update prompts: always ignore, or a repeatable mix of update/delete/ignore")


def serve(args: argparse.Namespace) -> int:
    """Serve in automatic mode until interrupted; prints the base URL to configure."""
    server = ScriptedLLMServer(port=args.port, delay_s=args.delay_s, usage=not args.no_usage)
    server.update_actions = args.update_actions
    print(server.base_url, flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Scripted OpenAI-compatible server (automatic answers).")
    add_arguments(parser)
    serve(parser.parse_args(argv))


if __name__ == "__main__":
    main()
