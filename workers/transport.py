"""kombu's Redis transport with three mends, so that neither a bad item, a Redis restart nor a killed
worker loses a message.

- **Unreadable items.** kombu pops an item with BRPOP, parses it as its JSON envelope and builds a
  message from it before Celery sees anything; an item that is not JSON, not an envelope, or whose
  body is not base64 raised out of the worker's event loop and stopped the worker. Here such an item
  is kept in the dead-letter list (``P:dead``, ``lightmem status``) with its raw text and the reason.
- **Redis restarts.** When the connection drops, Celery closes the channel, and the channel puts its
  unacknowledged messages back in their queues, through a connection that no longer exists: kombu
  raised ``AttributeError: 'NoneType' object has no attribute 'hostname'`` and the worker exited with
  its messages left in the unacked hash for the visibility timeout (an hour). Here the delivery tags
  are kept, and the next channel of the process (after the reconnect) puts them back.
- **Killed workers.** A delivered message waits in Redis's unacked index until it is acknowledged; kombu
  puts it back in its queue once it is older than the visibility timeout. That timeout had to exceed the
  longest task (an hour), so a killed worker's message came back an hour later. Here a live worker
  refreshes the delivery time of every message it holds, every quarter of the timeout, from a thread
  (a solo worker's event loop stands still while its task runs). The timeout can then be short (60 s by
  default): only a dead worker's messages age past it, and any worker's periodic scan puts them back.
"""

from __future__ import annotations

import binascii
import logging
import threading
import time
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

from workers.redis_state import RedisState

log = logging.getLogger(__name__)
MAX_RAW_CHARS = 100_000  # what a dead letter keeps of an item (an oversized one is cut)
UNREADABLE = (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError, binascii.Error)


def _key_prefix() -> str:
    from workers.settings import get_settings  # read at the edge, when a dead letter happens

    return get_settings().key_prefix


def _max_item_bytes() -> int:
    """The largest queue item read: a payload at ``max_payload_bytes``, base64 in kombu's envelope."""
    from workers.settings import get_settings

    return get_settings().max_payload_bytes * 4 // 3 + 64 * 1024


class OversizedItem(ValueError):
    """A queue item over the payload size limit: not parsed, kept as a dead letter."""


_orphaned: set[str] = set()  # delivery tags a closing channel could not put back (this process)
_orphaned_lock = threading.Lock()


class QoS(kombu_redis.QoS):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._closed = threading.Event()
        self._keeper: threading.Thread | None = None

    def append(self, message: Any, delivery_tag: str) -> None:
        super().append(message, delivery_tag)  # type: ignore[no-untyped-call]
        if self._keeper is None:
            self._keeper = threading.Thread(target=self._keep_held_fresh, name="lightmem-held-messages", daemon=True)
            self._keeper.start()

    def _keep_held_fresh(self) -> None:
        """While this channel lives, the messages it holds stay younger than the visibility timeout."""
        interval = max(0.5, float(self.visibility_timeout) / 4)
        while not self._closed.wait(interval):
            try:
                self.refresh_held()
            except Exception as exc:  # Redis away for a moment: the next beat tries again
                log.debug("could not refresh held messages: %s", exc)

    def refresh_held(self) -> int:
        """Set the delivery time of every message this channel holds to now; returns how many."""
        tags = list(self._delivered.copy())
        if not tags:
            return 0
        now = time.time()
        with self.channel.conn_or_acquire() as client:
            # XX: only members still there; an acknowledged message is not brought back
            return int(client.zadd(self.unacked_index_key, dict.fromkeys(tags, now), xx=True, ch=True) or 0)

    def restore_unacked(self, client: Any = None) -> None:
        self._closed.set()
        try:
            super().restore_unacked(client)  # type: ignore[no-untyped-call]
        except (AttributeError, OSError, redis.RedisError) as exc:  # the connection is gone
            with _orphaned_lock:
                _orphaned.update(self._delivered)
            log.warning("%d unacknowledged message(s) will be put back after the reconnect (%s)",
                        len(self._delivered), type(exc).__name__)
            self._delivered.clear()


class Channel(kombu_redis.Channel):
    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._put_back_orphans()

    def _create_client(self, asynchronous: bool = False) -> Any:
        """kombu builds a new ``redis.Redis`` (and its table of 170 response callbacks) for every publish
        and ack: about 0.3 ms of CPU each, a fifth of an enqueue. One client per pool does the same work
        (redis-py clients on a pool are thread-safe)."""
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
        pool = self.pool
        cached: tuple[Any, Any] | None = self.__dict__.get("_sync_client")
        if cached is None or cached[0] is not pool:  # a reconnect replaces the pool
            cached = (pool, super()._create_client())  # type: ignore[no-untyped-call]
            self.__dict__["_sync_client"] = cached
        return cached[1]

    def _put_back_orphans(self) -> None:
        """Messages a dead channel of this process held go back to their queues (they were never acked)."""
        with _orphaned_lock:
            tags = list(_orphaned)
            _orphaned.clear()
        for tag in tags:
            try:
                self.qos.restore_by_tag(tag)
            except Exception:  # still unreachable: the next channel tries again
                with _orphaned_lock:
                    _orphaned.add(tag)
        if tags:
            log.warning("put %d unacknowledged message(s) back after the reconnect", len(tags))

    def _brpop_read(self, **options: Any) -> bool:
        popped: list[Any] = []
        parse = self.client.parse_response
        limit = _max_item_bytes()

        def keep_what_was_popped(*args: Any, **kwargs: Any) -> Any:
            reply = parse(*args, **kwargs)
            popped.append(reply)
            if reply and len(reply[1]) > limit:
                raise OversizedItem(f"{len(reply[1]):,} bytes, over the limit of {limit:,} "
                                    "(LIGHTMEM_MAX_PAYLOAD_BYTES, base64 in its envelope)")
            return reply

        self.client.parse_response = keep_what_was_popped  # the raw item, should it not be readable
        try:
            return bool(super()._brpop_read(**options))  # type: ignore[no-untyped-call]  # kombu is untyped
        except UNREADABLE as exc:
            if not popped or not popped[-1]:
                raise
            queue, item = popped[-1]
            self._keep_dead_letter(queue, item, exc)
            return True
        finally:
            del self.client.parse_response

    def _keep_dead_letter(self, queue: Any, item: Any, exc: BaseException) -> None:
        raw = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
        where = queue.decode("utf-8", "replace") if isinstance(queue, bytes) else str(queue)
        what = "oversized queue item" if isinstance(exc, OversizedItem) else "unreadable queue item"
        try:
            RedisState(self.client, _key_prefix()).dead_letter(
                raw[:MAX_RAW_CHARS], f"{what}: {type(exc).__name__}: {exc}", {"queue": where, "raw_chars": len(raw)})
        except Exception:  # the worker must go on even if the record cannot be kept
            log.exception("could not keep an unreadable item of %s as a dead letter", where)
        log.error("an unreadable item of %s was moved to the dead-letter list (%s)", where, type(exc).__name__)


class Transport(kombu_redis.Transport):
    Channel = Channel
