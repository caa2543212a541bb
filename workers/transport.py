"""kombu's Redis transport with two mends, so that neither a bad item nor a Redis restart stops a worker.

- **Unreadable items.** kombu pops an item with BRPOP, parses it as its JSON envelope and builds a
  message from it before Celery sees anything; an item that is not JSON, not an envelope, or whose
  body is not base64 raised out of the worker's event loop and stopped the worker. Here such an item
  is kept in the dead-letter list (``P:dead``, ``lightmem status``) with its raw text and the reason.
- **Redis restarts.** When the connection drops, Celery closes the channel, and the channel puts its
  unacknowledged messages back in their queues, through a connection that no longer exists: kombu
  raised ``AttributeError: 'NoneType' object has no attribute 'hostname'`` and the worker exited with
  its messages left in the unacked hash for the visibility timeout (an hour). Here the delivery tags
  are kept, and the next channel of the process (after the reconnect) puts them back.
"""

from __future__ import annotations

import binascii
import json
import logging
import threading
import time
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

from workers import metrics
from workers.names import Keys

log = logging.getLogger(__name__)
MAX_RAW_CHARS = 100_000  # what a dead letter keeps of an item (an oversized one is cut)
UNREADABLE = (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError, binascii.Error)


def _keys() -> Keys:
    from workers.settings import get_settings  # read at the edge, when a dead letter happens

    return Keys(get_settings().key_prefix)


_orphaned: set[str] = set()  # delivery tags a closing channel could not put back (this process)
_orphaned_lock = threading.Lock()


class QoS(kombu_redis.QoS):
    def restore_unacked(self, client: Any = None) -> None:
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

        def keep_what_was_popped(*args: Any, **kwargs: Any) -> Any:
            reply = parse(*args, **kwargs)
            popped.append(reply)
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
        record = {"at": time.time(), "reason": f"unreadable queue item: {type(exc).__name__}: {exc}",
                  "raw": raw[:MAX_RAW_CHARS], "headers": {"queue": where, "raw_chars": len(raw)}}
        try:
            keys = _keys()
            pipe = self.client.pipeline()
            pipe.lpush(keys.dead_letters, json.dumps(record))
            pipe.hincrby(keys.stats, "dead_letters", 1)
            pipe.execute()
            metrics.DEAD_LETTERS.inc()
        except Exception:  # the worker must go on even if the record cannot be kept
            log.exception("could not keep an unreadable item of %s as a dead letter", where)
        log.error("an unreadable item of %s was moved to the dead-letter list (%s)", where, type(exc).__name__)


class Transport(kombu_redis.Transport):
    Channel = Channel
