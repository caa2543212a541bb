"""The producer client: what an application calls to hand conversation turns to the pipeline.

>>> producer = MemoryProducer()
>>> tracking_id = producer.enqueue_session("alice", {"session_id": "s1", "time_stamp": "2025-01-10",
...                                                   "turns": [{"role": "user", "content": "Hi"}]})
>>> producer.status(tracking_id)["state"]        # queued → buffered → indexed (or failed, with a reason)

Input is validated (``lightmem_core.ingest.normalize_messages``) before anything is queued: bad
input raises ``ValueError`` naming the field. When ``enqueue_*`` returns, the work is in the broker's
Redis list (durable with Redis's append-only file; ``redis_wait_replicas`` also waits for replicas).
Redis refusing connections (a restart): each call retries for ``producer_retry_s`` (5 s), then raises
``TransientError``; Redis not answering: ``TransientError`` after ``redis_socket_timeout_s``; never a hang.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis
from kombu.common import maybe_declare
from redis.backoff import NoBackoff
from redis.retry import Retry
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from lightmem_core import factory
from lightmem_core.errors import ConfigError, InvalidInput, TransientError
from lightmem_core.ingest import normalize_messages
from lightmem_core.retrieval import Retriever
from lightmem_core.state import earliest_key
from workers import names
from workers.messages import (
    CompressPayload,
    DrainPayload,
    RetryPayload,
    SessionItem,
    UpdatePayload,
    checked,
    send,
)
from workers.parts import state_for
from workers.search_desk import DeskRequest, answer, ask
from workers.settings import DistributedSettings, get_settings

log = logging.getLogger(__name__)


class MemoryProducer:
    """Enqueue sessions and turns into Redis; ask for their state; flush; search through the workers."""

    def __init__(self, settings: DistributedSettings | None = None, warm_up: bool = True) -> None:
        from workers.app import make_app  # the app is configured from the same settings

        self.settings = settings or get_settings()
        self.app = make_app(self.settings)
        self.state = state_for(self.settings)
        self._direct: Retriever | None = None
        # One immediate retry replaces a pooled connection that a Redis restart closed; waiting out an
        # outage is ``_redis``'s window alone (redis-py's default would add its own backoff to it).
        self.state.r.set_retry(Retry(NoBackoff(), 1))
        if warm_up:
            self.warm_up()

    def warm_up(self) -> None:
        """Open the Redis and broker connections and build Celery's producer now, best effort: the
        first send otherwise pays them (about 100 ms, which was the whole enqueue p99 of a fleet of
        short-lived producers). An unreachable Redis is reported by the first real call instead."""
        try:
            _ = self.app.backend  # imports and builds the result backend
            with self.app.producer_or_acquire() as producer:  # the broker connection and the producer pool
                for queue in self.app.amqp.queues.values():
                    maybe_declare(queue, producer.channel, retry=False)  # type: ignore[no-untyped-call]
            self.state.r.ping()
        except Exception as exc:  # the first real call says what is wrong, with the right error class
            log.debug("producer warm-up skipped: %s", exc)

    # --- enqueue ----------------------------------------------------------------------------------
    def enqueue_session(self, user_id: str, session: Any, session_id: str | None = None) -> str:
        """Queue one whole session; returns its tracking id. ``session`` is a dict with ``turns`` (or
        ``messages``), ``session_id`` and ``time_stamp`` (given to turns without one), a loaded dataset
        session, or a list of message dicts with ``session_id`` given here."""
        return self.enqueue_sessions([(user_id, session, session_id)])[0]

    def enqueue_sessions(self, sessions: Iterable[tuple[str, Any, str | None]]) -> list[str]:
        """Queue several sessions (of any users) as one batch for the compress stage; all or nothing."""
        if isinstance(sessions, str | bytes | Mapping) or not isinstance(sessions, Iterable):
            raise InvalidInput(f"sessions: expected (user_id, session, session_id) triples, got {type(sessions).__name__}")
        triples = list(sessions)
        for i, triple in enumerate(triples):
            if not isinstance(triple, tuple | list) or len(triple) != 3:
                raise InvalidInput(f"sessions[{i}]: expected a (user_id, session, session_id) triple")
        items = [_session_item(user_id, session, sid) for user_id, session, sid in triples]
        if not items:
            raise InvalidInput("sessions: expected at least one session")
        self._send(items)
        return [item.tracking_id for item in items]

    def enqueue_turns(self, user_id: str, session_id: str, turns: Sequence[Mapping[str, Any]]) -> str:
        """Queue turns that continue a session; turns without an id are numbered after those queued before."""
        if not isinstance(session_id, str) or not session_id.strip():
            raise InvalidInput(f"session_id: expected a non-empty string, got {session_id!r}")
        if isinstance(turns, str | bytes | Mapping) or not isinstance(turns, Sequence):
            raise InvalidInput(f"turns: expected a list of message dicts, got {type(turns).__name__}")
        batch = normalize_messages(list(turns), user_id, session_id, lambda sid: 0)  # validate before counting
        if not batch.messages:
            raise InvalidInput("turns: no turn with content")
        start = self._redis(lambda: int(self.state.r.incrby(self.state.k(user_id, f"turns:{session_id}"), len(turns))))
        batch = normalize_messages(list(turns), user_id, session_id, lambda sid: start - len(turns))
        item = SessionItem(tracking_id=uuid.uuid4().hex, user_id=user_id, session_id=session_id,
                           messages=batch.messages, skipped_empty=len(batch.skipped_empty))
        self._send([item])
        return item.tracking_id

    def _send(self, items: list[SessionItem]) -> None:
        payload = CompressPayload(sessions=items)
        checked(self.app, payload)  # over max_payload_bytes: PayloadTooLarge (a ValueError), nothing tracked

        def track() -> None:
            pipe = self.state.r.pipeline()
            for item in items:
                self.state.track_queued(pipe, item.tracking_id, item.user_id, item.session_id, len(item.messages),
                                        first_key=earliest_key(item.messages))
            pipe.execute()

        self._redis(track)
        try:
            # No result wanted (states are tracked in Redis): Celery would otherwise subscribe to each
            # task's result channel, one more round trip per call and a subscription left behind.
            send(self.app, payload, retry=True, retry_policy=self._send_retry_policy(), ignore_result=True)
        except Exception as exc:  # kombu raises several classes; none of them may leave a stale tracking entry
            reason = f"not queued: {exc}"
            for item in items:
                self._redis(lambda item=item: self.state.untrack(item.tracking_id, item.user_id, reason))
            raise TransientError(f"could not queue on {self._where()}: {exc}") from exc
        if self.settings.redis_wait_replicas:
            self._redis(lambda: self.state.r.wait(self.settings.redis_wait_replicas,
                                                  int(self.settings.redis_socket_timeout_s * 1000)))

    def flush(self, user_id: str) -> None:
        """Extract whatever the user's buffers hold once the user's queued input is buffered."""
        self._redis(lambda: self.state.request_flush(user_id))
        send(self.app, DrainPayload(user_id=user_id, force=True), ignore_result=True)

    def retry_failed(self, user_ids: Sequence[str] | None = None) -> list[str]:
        """Extract again the failed batches of ``user_ids`` (default: every user that has some); returns
        the users given a retry task. ``lightmem retry`` calls this."""
        users = list(user_ids) if user_ids is not None else self._redis(
            lambda: [u for u in self.state.users() if self.state.failed(u)])
        for user_id in users:
            send(self.app, RetryPayload(user_id=user_id), ignore_result=True)
        return users

    # --- observe ----------------------------------------------------------------------------------
    def status(self, tracking_id: str | None = None) -> dict[str, Any]:
        """One tracked item's state, or the overview: backlog per queue, buffered turns, failures."""
        if tracking_id is not None:
            found: dict[str, Any] = self._redis(lambda: self.state.tracking(tracking_id))
            return found or {"state": "unknown"}
        overview: dict[str, Any] = self._redis(self._overview)
        return overview

    def _overview(self) -> dict[str, Any]:
        r, st = self.state.r, self.state
        backlog = {self.settings.queue(q): int(r.llen(self.settings.queue(q)))
                   for q in ("compress", "extract", "store", "update")}
        users = st.users()
        buffers = {u: st.info(u) for u in users}
        failed = {u: len(st.failed(u)) for u in users}
        return {
            "backlog": backlog,
            "buffered_turns": sum(b.turns for b in buffers.values()),
            "buffered_users": sorted(u for u, b in buffers.items() if b.segments or b.batches_in_flight),
            "batches_in_flight": sum(b.batches_in_flight for b in buffers.values()),
            "failed_batches": sum(failed.values()),
            "users_with_failed_batches": sorted(u for u, n in failed.items() if n),
            "in_flight": sum(b.pending_items for b in buffers.values()),
            "failures": int(st.stats().get("failures", 0)),
            "recent_failures": st.failures(10),
            "dead_letters": int(st.stats().get("dead_letters", 0)),
            "recent_dead_letters": st.dead_letters(5),
        }

    def knows_user(self, user_id: str) -> bool:
        """Whether anything was ever enqueued for ``user_id``."""
        return bool(self._redis(lambda: self.state.r.sismember(self.state.keys.users, user_id)))

    def wait_indexed(self, tracking_ids: Sequence[str], timeout_s: float = 300.0, poll_s: float = 0.2) -> dict[str, str]:
        """Block until every tracked item is indexed or failed; returns id → state. Raises on timeout."""
        deadline = time.monotonic() + timeout_s
        states: dict[str, str] = {}
        asking = list(dict.fromkeys(tracking_ids))
        while True:
            self._ask_states(asking, states)
            asking = [tid for tid in asking if states.get(tid) != "indexed"]  # indexed stays indexed; failed may be retried
            if all(states.get(tid) == "failed" for tid in asking):
                return {tid: states[tid] for tid in tracking_ids}
            if time.monotonic() > deadline:
                waiting = sum(states.get(tid) != "failed" for tid in asking)
                raise TimeoutError(f"{waiting} of {len(tracking_ids)} items not indexed after {timeout_s:.0f} s")
            time.sleep(poll_s)

    def _ask_states(self, asking: list[str], states: dict[str, str], chunk: int = 64) -> None:
        """Read the states of ``asking`` into ``states``, oldest first, a chunk at a time, and stop at the first
        chunk with an item still on its way: items are indexed about in the order they were sent, so a poll
        reads a chunk or two instead of every item waited for (a wait on 10,000 items read them all 5 times a
        second)."""
        for start in range(0, len(asking), chunk):
            part = asking[start:start + chunk]
            pipe = self.state.r.pipeline()
            for tid in part:
                pipe.hget(self.state.keys.track(tid), "state")
            read = {tid: (s.decode() if s else "unknown") for tid, s in zip(part, pipe.execute(), strict=True)}
            states.update(read)
            if any(state not in ("indexed", "failed") for state in read.values()):
                return

    def search(self, user_id: str, query: str, limit: int | None = None, filters: dict[str, Any] | None = None,
               strategy: str | None = None, timeout_s: float | None = None, graph_hops: int = 0) -> list[dict[str, Any]]:
        """The ``limit`` memories of ``user_id`` nearest to ``query`` (``strategy``: embedding, context or
        hybrid; default the configured one), with ``filters`` in the store's filter language. ``limit``
        defaults to ``context_retriever.configs.top_k`` when configured, else 5.

        Embedded store: the store worker's search desk answers, beside its index batches; nobody answering
        within ``timeout_s`` (default ``LIGHTMEM_SEARCH_TIMEOUT_S``) raises ``SearchTimeout``. Qdrant
        server: this process searches the server itself (it loads the query embedder on first use).
        ``graph_hops`` (1 or 2, with ``graph_mem``) fuses in the entries linked through the entities the
        query names."""
        if limit is None:
            context = self.settings.memory_cfg.context_retriever
            limit = (context.configs.top_k if context is not None else None) or 5
        return self._ask(DeskRequest.checked(kind="search", user_id=user_id, query=query, limit=limit, strategy=strategy,
                                     filters=filters, graph_hops=graph_hops), timeout_s)

    def entries(self, user_id: str, timeout_s: float | None = None) -> list[dict[str, Any]]:
        """Every entry of a user (as ``search`` reaches the store)."""
        return self._ask(DeskRequest.checked(kind="entries", user_id=user_id), timeout_s)

    def get_entry(self, user_id: str, entry_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        """One entry of ``user_id``; ``NotFound`` when it does not exist or is another user's."""
        return self._ask(DeskRequest.checked(kind="get", user_id=user_id, entry_id=entry_id), timeout_s)[0]

    def delete_entry(self, user_id: str, entry_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        """Delete one entry of ``user_id`` (the change is recorded in its history); the deleted entry.
        ``NotFound`` when it does not exist or is another user's."""
        return self._ask(DeskRequest.checked(kind="delete", user_id=user_id, entry_id=entry_id), timeout_s)[0]

    def entry_history(self, user_id: str, entry_id: str, timeout_s: float | None = None) -> list[dict[str, Any]]:
        """Every recorded change of one entry of ``user_id``, oldest first (kept after a delete)."""
        return self._ask(DeskRequest.checked(kind="history", user_id=user_id, entry_id=entry_id), timeout_s)

    def delete_user(self, user_id: str, timeout_s: float | None = None) -> dict[str, int]:
        """Forget ``user_id``: its buffers and bookkeeping in Redis, then its entries, messages and
        sessions. Input still in flight at that moment (queued, or being extracted) may land afterwards:
        delete again once ``user_status`` shows none. Returns the entries and Redis keys removed."""
        request = DeskRequest.checked(kind="delete_user", user_id=user_id)
        keys = int(self._redis(lambda: self.state.forget_user(user_id)))
        deleted = self._ask(request, timeout_s)[0]
        return {"entries_deleted": int(deleted["entries_deleted"]), "redis_keys_deleted": keys}

    def user_status(self, user_id: str) -> dict[str, Any]:
        """One user's pipeline: queued items not yet buffered, buffered turns, batches in flight, failed
        batches with their reasons, and the user's counters."""
        def read() -> dict[str, Any]:
            info = self.state.info(user_id)
            failed = [{"batch_id": b.batch_id, "reason": b.reason, "failed_at": b.failed_at, "attempts": b.attempts,
                       "turns": len(b.messages)} for b in self.state.failed(user_id)]
            return {"user_id": user_id, "known": bool(self.state.r.sismember(self.state.keys.users, user_id)),
                    "queued_items": info.pending_items, "buffered_turns": info.turns,
                    "buffered_segments": info.segments, "batches_in_flight": info.batches_in_flight,
                    "failed_batches": failed, "counters": self.state.counters(user_id)}
        status: dict[str, Any] = self._redis(read)
        return status

    def update_user(self, user_id: str) -> None:
        """Queue the offline update of ``user_id`` now (up to its newest stored entry), as beat does nightly."""
        if not isinstance(user_id, str) or not user_id:
            raise InvalidInput("user_id: expected a non-empty string")
        newest = self._redis(lambda: self.state.r.hget(self.state.keys.entries_ts, user_id))
        watermark = float(newest) if newest is not None else time.time()
        send(self.app, UpdatePayload(user_id=user_id, watermark=watermark), ignore_result=True)

    def ping_store(self, timeout_s: float) -> None:
        """Return when the store answers (the store worker's desk in embedded mode, else the Qdrant server);
        ``SearchTimeout`` or another ``LightMemError`` when it does not."""
        self._ask(DeskRequest.checked(kind="ping"), timeout_s)

    def _ask(self, request: DeskRequest, timeout_s: float | None) -> list[dict[str, Any]]:
        if not self.settings.embedded_store:
            return answer(self._retriever(), request)
        wait = self.settings.search_timeout_s if timeout_s is None else timeout_s
        return self._redis(lambda: ask(self.state.r, self.state.keys, request, wait))  # type: ignore[no-any-return]

    def _retriever(self) -> Retriever:
        """The query encoders and a client of the Qdrant server, built once, on the first direct search."""
        if self._direct is None:
            self._direct = factory.build_retriever(self.settings.memory_cfg)
        return self._direct

    def update_now(self) -> list[str]:
        """Run the nightly fan-out now; returns the users given an update (waits for the fan-out only)."""
        return list(self.app.send_task(names.UPDATE_NIGHTLY).get(timeout=60))

    def close(self) -> None:
        self.state.r.close()
        self.app.close()

    # --- helpers ----------------------------------------------------------------------------------
    def _where(self) -> str:
        url = redis.connection.parse_url(self.settings.redis_url)  # type: ignore[no-untyped-call]
        return f"Redis at {url.get('host') or url.get('path')}:{url.get('port', '')}"

    def _send_retry_policy(self) -> dict[str, float]:
        """kombu's publish retries, spread over the same window as ``_redis``'s."""
        step = 0.25
        return {"max_retries": max(1, int(self.settings.producer_retry_s / step)), "interval_start": 0.05,
                "interval_step": step, "interval_max": step}

    def _redis(self, call: Any) -> Any:
        """Run ``call``, again while Redis refuses connections (for ``producer_retry_s``); Redis's failures
        become errors that tell the three cases apart."""
        s = self.settings
        refused = retry_if_exception(lambda e: isinstance(e, redis.ConnectionError)
                                     and not isinstance(e, redis.AuthenticationError | redis.TimeoutError))
        try:
            for attempt in Retrying(retry=refused, stop=stop_after_delay(s.producer_retry_s), reraise=True,
                                    wait=wait_exponential(multiplier=0.05, max=0.5)):
                with attempt:
                    return call()
            raise AssertionError("unreachable: tenacity returns or raises")
        except redis.AuthenticationError as exc:  # a ConnectionError too: checked first
            raise ConfigError(f"{self._where()}: authentication failed (check the password in "
                              f"LIGHTMEM_REDIS_URL): {exc}") from exc
        except redis.TimeoutError as exc:
            raise TransientError(f"{self._where()} accepted the connection but is not answering "
                                 f"(no reply within {s.redis_socket_timeout_s:g} s): {exc}") from exc
        except redis.ConnectionError as exc:
            raise TransientError(f"{self._where()} unreachable (retried for {s.producer_retry_s:g} s, "
                                 f"connect timeout {s.redis_connect_timeout_s:g} s): {exc}") from exc


def _session_item(user_id: str, session: Any, session_id: str | None) -> SessionItem:
    """Validate one session into a queue item (``InvalidInput``, a ``ValueError``, names the field)."""
    if isinstance(session, Mapping):
        turns = session.get("turns", session.get("messages"))
        sid, stamp = session_id or session.get("session_id"), session.get("time_stamp")
    elif hasattr(session, "messages"):
        turns, sid, stamp = session.messages, session_id or session.session_id, getattr(session, "time_stamp", None)
    else:
        turns, sid, stamp = session, session_id, None
    if not isinstance(turns, Sequence) or isinstance(turns, str) or not turns:
        raise InvalidInput("session.turns: expected a non-empty list of message dicts")
    if sid is not None and (not isinstance(sid, str) or not sid.strip()):
        raise InvalidInput(f"session.session_id: expected a non-empty string, got {sid!r}")
    if stamp is not None:
        stamp = stamp.isoformat() if hasattr(stamp, "isoformat") else stamp
        turns = [dict(t, time_stamp=stamp) if isinstance(t, Mapping) and "time_stamp" not in t
                 and "timestamp" not in t else t for t in turns]
    batch = normalize_messages(turns, user_id, sid, lambda _sid: 0)
    if not batch.messages:
        raise InvalidInput("session.turns: every turn is empty")
    return SessionItem(tracking_id=uuid.uuid4().hex, user_id=user_id, session_id=batch.messages[0].session_id,
                       messages=batch.messages, skipped_empty=len(batch.skipped_empty))
