"""Searches answered by the process that owns the embedded store, beside its index batches.

In embedded mode only one process may open the store folder: the store worker. Searches used to be
Celery tasks on its solo queue and waited behind index batches (up to 7.9 s during ingestion). Now the
store worker also keeps a desk: a few reader threads that take requests from a Redis list and answer
them on the shard while index batches write to it (Qdrant Edge reads do not wait for writes). The desk
has its own query embedder, so a search never waits for a batch being embedded either.

The protocol, on plain Redis:

- the asker stores the request under ``P:desk:req:<id>`` with a time to live of its timeout
  (``LIGHTMEM_SEARCH_TIMEOUT_S``), pushes ``<id>`` on ``P:desk``, and waits on ``P:desk:reply:<id>``;
- a reader pops an id and takes the request (read and delete). A request gone by then timed out, or its
  asker gave up and deleted it: it is skipped. So a search the desk could not answer in time is never
  run later, and no query text stays in Redis after its timeout;
- the answer (memories) waits under the reply key for ``LIGHTMEM_REPLY_TTL_S`` at most, read once.

With a Qdrant server there is no desk: every process searches the server directly.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lightmem_core import errors, factory, forget
from lightmem_core.history import HistoryStore
from lightmem_core.models import RetrievedMemory
from lightmem_core.retrieval import Retriever
from workers.names import Keys
from workers.parts import WorkerParts

log = logging.getLogger(__name__)
_POLL_S = 1.0  # each blocking read is short: under the socket timeout, and stop() is noticed quickly
_QUEUE_TTL_S = 3600  # an abandoned desk list (no store worker for an hour) goes away
_BATCH = 8  # requests a reader takes at once (their queries embedded together)


DeskKind = Literal["search", "entries", "get", "delete", "delete_user", "history", "ping"]


class DeskRequest(BaseModel):
    """What the store owner is asked: a search (``query``), a user's ``entries``, one entry (``get``,
    ``delete``, its ``history``: ``entry_id``), every entry of a user (``delete_user``), or a ``ping``
    (readiness: is anyone answering?)."""

    model_config = ConfigDict(extra="forbid")
    kind: DeskKind
    user_id: str = ""
    query: str | None = None
    limit: int = Field(10, ge=1, le=1000)
    strategy: str | None = None
    filters: dict[str, Any] | None = None
    entry_id: str | None = Field(None, min_length=1)
    graph_hops: int = Field(0, ge=0, le=2)  # graph_mem: fuse in the entries linked through named entities

    @model_validator(mode="after")
    def _fields_of_kind(self) -> DeskRequest:
        if self.kind != "ping" and not self.user_id:
            raise ValueError("user_id: expected a non-empty string")
        if self.kind in ("get", "delete", "history") and not self.entry_id:
            raise ValueError("entry_id: expected a non-empty string")
        return self

    @classmethod
    def checked(cls, **fields: Any) -> DeskRequest:
        """Validated at the asker: ``InvalidInput`` (a ``ValueError``) names the field."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            raise errors.InvalidInput(_first_error(exc)) from None


def hit_view(hit: RetrievedMemory) -> dict[str, Any]:
    """One search result as the desk and the direct path return it: the entry's text and its original
    messages (speaker, time, content)."""
    e = hit.entry
    return {"id": hit.id, "score": hit.score, "memory": hit.memory, "time_stamp": hit.time_stamp.isoformat(),
            "weekday": hit.weekday, "speaker": e.speaker, "session_id": e.session_id, "topic_id": e.topic_id,
            "source_ids": list(e.source_ids), "sources": [m.model_dump(mode="json") for m in hit.sources],
            "kind": e.kind, "image_url": e.image_url}


def answer(retriever: Retriever, request: DeskRequest) -> list[dict[str, Any]]:
    """The answer to one request, the same whoever runs it (desk thread or a direct search)."""
    if request.kind in _ENTRY_KINDS:
        return _ENTRY_KINDS[request.kind](retriever, request)
    if request.kind == "entries":
        return [e.model_dump(mode="json") for e in retriever.store.list_entries(request.user_id)]
    hits = retriever.retrieve(request.user_id, request.query or "", request.limit, request.filters, request.strategy,
                              graph_hops=request.graph_hops)
    return [hit_view(h) for h in hits]


def _history(retriever: Retriever) -> HistoryStore:
    if retriever.history is None:
        raise errors.StoreError("this process has no history store to record or read changes")
    return retriever.history


def _ping(rt: Retriever, rq: DeskRequest) -> list[dict[str, Any]]:
    rt.store.count()  # the store answers a read (a Qdrant server is reachable)
    return []


def _get(rt: Retriever, rq: DeskRequest) -> list[dict[str, Any]]:
    return [forget.get_entry(rt.store, rq.user_id, rq.entry_id or "").model_dump(mode="json")]


def _delete(rt: Retriever, rq: DeskRequest) -> list[dict[str, Any]]:
    return [forget.delete_entry(rt.store, _history(rt), rq.user_id, rq.entry_id or "").model_dump(mode="json")]


def _delete_user(rt: Retriever, rq: DeskRequest) -> list[dict[str, Any]]:
    return [{"entries_deleted": forget.delete_user(rt.store, _history(rt), rq.user_id, rt.summaries)}]


def _entry_history(rt: Retriever, rq: DeskRequest) -> list[dict[str, Any]]:
    return forget.entry_history(_history(rt), rq.user_id, rq.entry_id or "")


_ENTRY_KINDS: dict[str, Callable[[Retriever, DeskRequest], list[dict[str, Any]]]] = {
    "ping": _ping, "get": _get, "delete": _delete, "delete_user": _delete_user, "history": _entry_history,
}


# --- the asker's side -------------------------------------------------------------------------------
def ask(r: redis.Redis, keys: Keys, request: DeskRequest, timeout_s: float) -> list[dict[str, Any]]:
    """Hand ``request`` to the store worker's desk and wait up to ``timeout_s`` for the answer.

    Raises ``SearchTimeout`` when nobody answered in time (the request is withdrawn: it will not run
    later), and the desk's own error (``InvalidInput`` for bad filters, ``StoreError``...) when it failed."""
    rid = uuid.uuid4().hex
    request_key, reply_key = keys.desk_request(rid), keys.desk_reply(rid)
    pipe = r.pipeline(transaction=True)
    pipe.set(request_key, request.model_dump_json(), px=max(1, int(timeout_s * 1000)))
    pipe.lpush(keys.desk, rid)
    pipe.expire(keys.desk, _QUEUE_TTL_S)
    pipe.execute()
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        got = r.blpop([reply_key], timeout=min(_POLL_S, max(left, 0.01)))
        if got is not None:
            return _unwrap(json.loads(got[1]))
    if r.delete(request_key) == 0 and (got := r.blpop([reply_key], timeout=0.5)) is not None:
        return _unwrap(json.loads(got[1]))  # taken at the last moment: its answer is on the way
    raise errors.SearchTimeout(f"no store worker answered within {timeout_s:g} s (LIGHTMEM_SEARCH_TIMEOUT_S): "
                               "is `lightmem worker store` running? The search was withdrawn.")


def _unwrap(reply: dict[str, Any]) -> list[dict[str, Any]]:
    if "error" in reply:
        kind = getattr(errors, str(reply["error"].get("code")), None)
        cls = kind if isinstance(kind, type) and issubclass(kind, errors.LightMemError) else errors.StoreError
        raise cls(str(reply["error"].get("message")))
    data: list[dict[str, Any]] = reply["ok"]
    return data


# --- the store worker's side ------------------------------------------------------------------------
class SearchDesk:
    """Reader threads in the store owner's process; started after its preflight, stopped with the worker."""

    def __init__(self, parts: WorkerParts, threads: int) -> None:
        self.parts = parts
        self.keys = parts.state.keys
        self.r = parts.state.r
        self.threads = threads
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        # Its own query embedder: the batch embedder is busy with index batches, and a tokenizer must not
        # be shared between threads. The desk's threads share this one, one query at a time.
        embedder = factory.build_embedder(parts.config)
        self._embedder: _DeskEmbedder | _NoEmbedder = _DeskEmbedder(embedder) if embedder else _NoEmbedder()
        self.retriever = Retriever.of(parts.components, parts.spec.retrieve_strategy,
                                      embedder=self._embedder if isinstance(self._embedder, _DeskEmbedder) else None,
                                      graph=parts.spec.graph_mem)

    def start(self) -> None:
        for n in range(self.threads):
            thread = threading.Thread(target=self._serve, name=f"lightmem-desk-{n}", daemon=True)
            thread.start()
            self._workers.append(thread)
        log.info("search desk: %d reader thread(s) answer searches beside index batches", self.threads)

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(timeout_s)

    def _serve(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self.serve_one(_POLL_S)
                failing = False
            except redis.RedisError as exc:  # Redis restarting: wait, then go on
                if not failing:
                    log.warning("search desk: Redis unavailable (%s); retrying", type(exc).__name__)
                failing = True
                self._stop.wait(1.0)

    def serve_one(self, block_s: float) -> bool:
        """Take the requests waiting (up to ``_BATCH``; waiting up to ``block_s`` for the first) and answer
        them; False when none came or all had expired. The queries of the searches taken together are
        embedded in one forward pass: under many concurrent searches that halves the CPU per query."""
        got = self.r.brpop([self.keys.desk], timeout=block_s)
        if got is None:
            return False
        more = self.r.rpop(self.keys.desk, _BATCH - 1) or []
        rids = [x.decode() if isinstance(x, bytes) else str(x) for x in [got[1], *more]]
        pipe = self.r.pipeline(transaction=True)
        for rid in rids:
            pipe.get(self.keys.desk_request(rid))
            pipe.delete(self.keys.desk_request(rid))
        raws = pipe.execute()[::2]
        taken = [(rid, raw) for rid, raw in zip(rids, raws, strict=True) if raw is not None]
        if len(taken) < len(rids):  # their askers gave up: never run a search late
            self.r.hincrby(self.keys.stats, "searches_expired", len(rids) - len(taken))
        if not taken:
            return False
        started = time.perf_counter()
        requests = [self._parse(raw) for _, raw in taken]
        self._embedder.prepare([r.query for r in requests if isinstance(r, DeskRequest) and r.kind == "search" and r.query])
        try:
            replies = [self._answer(r) for r in requests]
        finally:
            self._embedder.forget()
        pipe = self.r.pipeline(transaction=True)
        for (rid, _), reply in zip(taken, replies, strict=True):
            pipe.lpush(self.keys.desk_reply(rid), json.dumps(reply))
            pipe.expire(self.keys.desk_reply(rid), max(1, int(self.parts.settings.reply_ttl_s)))
        pipe.hincrby(self.keys.stats, "searches_answered", len(taken))
        pipe.execute()
        log.debug("search desk: %d answered in %.1f ms", len(taken), (time.perf_counter() - started) * 1000)
        return True

    @staticmethod
    def _parse(raw: bytes) -> DeskRequest | dict[str, Any]:
        try:
            return DeskRequest.model_validate_json(raw)
        except ValidationError as exc:
            return {"error": {"code": "InvalidInput", "message": _first_error(exc)}}

    def _answer(self, request: DeskRequest | dict[str, Any]) -> dict[str, Any]:
        if isinstance(request, dict):  # it did not parse: the reply is its error
            return request
        try:
            return {"ok": answer(self.retriever, request)}
        except errors.LightMemError as exc:
            return {"error": {"code": type(exc).__name__, "message": str(exc)}}
        except Exception as exc:  # a bug must not kill the reader: the asker gets the error's type
            log.exception("search desk: %s answering a request", type(exc).__name__)
            return {"error": {"code": "StoreError", "message": f"the store worker failed: {type(exc).__name__}"}}


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    if not first["loc"]:  # a check across fields: its message names the field
        return str(first["msg"]).removeprefix("Value error, ")
    return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"


class _DeskEmbedder:
    """The desk's query embedder. Its threads share one model, one call at a time (a tokenizer must not be
    used by two threads at once), and a thread embeds the queries of the requests it took together in one
    forward pass (``prepare``), then answers each from them."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._ready = threading.local()
        self.dims: int = inner.dims

    def prepare(self, texts: list[str]) -> None:
        unique = list(dict.fromkeys(texts))
        if unique:
            with self._lock:
                vectors: list[list[float]] = self._inner.embed(unique)
            self._ready.vectors = dict(zip(unique, vectors, strict=True))

    def forget(self) -> None:
        self._ready.vectors = {}

    def embed(self, texts: list[str]) -> list[list[float]]:
        ready: dict[str, list[float]] = getattr(self._ready, "vectors", {})
        missing = [t for t in texts if t not in ready]
        if missing:
            with self._lock:
                ready = {**ready, **dict(zip(missing, self._inner.embed(missing), strict=True))}
        return [ready[t] for t in texts]


class _NoEmbedder:
    """Nothing is indexed densely: nothing to prepare."""

    def prepare(self, texts: list[str]) -> None:
        pass

    def forget(self) -> None:
        pass


_running: list[SearchDesk] = []


def start_for_worker(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """``celeryd_after_setup`` (after the preflight): the worker that owns an embedded store opens its desk."""
    from workers.app import get_parts
    from workers.preflight import roles_of

    parts = get_parts()
    queues = list(instance.app.amqp.queues.consume_from) if instance is not None else []
    if parts.settings.embedded_store and "store" in roles_of(queues, parts):
        desk = SearchDesk(parts, parts.settings.search_threads)
        desk.start()
        _running.append(desk)


def stop_for_worker(**_: Any) -> None:
    """``worker_shutdown``: readers finish the request in hand."""
    while _running:
        _running.pop().stop()
