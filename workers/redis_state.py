"""``PipelineState`` in Redis: the workers' state, shared by every process (key layout: ``workers.names.Keys``).

Beside the interface it keeps what only the queues need: the producer's tracking ids (queued →
buffered → indexed, or failed with a reason), queued input not buffered yet (drains wait for it),
the failure log, and the update fan-out's watermarks.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any

import redis

from lightmem_core.models import Message
from lightmem_core.state import Batch, BufferedSegment, BufferInfo
from workers import metrics
from workers.names import Keys

TRACK_TTL_S = 7 * 86400

# Append one segment unless its member exists or none of its messages is new, and count it on its
# tracking item (KEYS[5], when there is one), which is then "buffered". Atomic, so a task that runs
# twice (late ack, retry, a worker killed between two appends) leaves buffer and tracking as one run would.
_APPEND = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
local fresh = 0
for i = 6, #ARGV do fresh = fresh + redis.call('SADD', KEYS[1], ARGV[i]) end
if fresh == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
redis.call('HINCRBY', KEYS[4], 'tokens', ARGV[3])
redis.call('HINCRBY', KEYS[4], 'turns', ARGV[4])
redis.call('HSET', KEYS[4], 'last_append', ARGV[5])
if #KEYS == 5 then
  redis.call('HSET', KEYS[5], 'state', 'buffered')
  redis.call('HINCRBY', KEYS[5], 'segments', 1)
end
return 1
"""

# Move a batch from one hash to another (in flight ↔ failed) once: a second call finds it gone.
_MOVE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if KEYS[2] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
return 1
"""


class KeptLock:
    """A redis-py lock with a short expiry, renewed from a thread every third of it while held."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self._released = threading.Event()
        self._keeper: threading.Thread | None = None

    def acquire(self, blocking: bool = True) -> bool:
        if not self.lock.acquire(blocking=blocking):
            return False
        self._released.clear()
        self._keeper = threading.Thread(target=self._keep, name="lightmem-lock", daemon=True)
        self._keeper.start()
        return True

    def _keep(self) -> None:
        while not self._released.wait(float(self.lock.timeout) / 3):
            try:
                self.lock.reacquire()  # the expiry starts over
            except Exception:  # lost (expired while Redis was away) or Redis down: the holder finds out on release
                return

    def release(self) -> None:
        self._released.set()
        if self._keeper is not None:
            self._keeper.join()
        self.lock.release()

    def __enter__(self) -> KeptLock:
        if not self.acquire():
            raise redis.exceptions.LockError(f"could not take {self.lock.name!r} within {self.lock.blocking_timeout} s")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis ``SCAN MATCH`` pattern (a user id may hold ``*?[]\\``)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisState:
    """The Redis side of the pipeline, shared by producers, workers and the command line."""

    def __init__(self, client: redis.Redis, prefix: str = "lightmem", lock_timeout_s: float = 15.0,
                 inflight_ttl_s: float = 3600.0) -> None:
        self.r = client
        self.keys = Keys(prefix)
        self.lock_timeout_s = lock_timeout_s
        self.inflight_ttl_s = inflight_ttl_s
        self._append = client.register_script(_APPEND)
        self._move = client.register_script(_MOVE)

    def k(self, user_id: str, name: str) -> str:
        return self.keys.user(user_id, name)

    def lock(self, user_id: str) -> KeptLock:
        """The user's lock. It expires ``lock_timeout_s`` after its holder stops renewing it (a killed
        worker), so a dead worker blocks the user for seconds, while a live holder keeps it however long."""
        return KeptLock(self.r.lock(self.k(user_id, "lock"), timeout=self.lock_timeout_s,
                                    blocking_timeout=max(120.0, 4 * self.lock_timeout_s),
                                    thread_local=False))  # the keeper thread renews with the holder's token

    # --- seen ids and the sensory buffer ----------------------------------------------------------
    def unseen(self, user_id: str, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        flags = self.r.smismember(self.k(user_id, "seen"), ids)
        waiting = {m.id for m in self.sensory(user_id)}
        return {i for i, known in zip(ids, flags, strict=True) if not known and i not in waiting}

    def sensory(self, user_id: str) -> list[Message]:
        raw = self.r.get(self.k(user_id, "sensory"))
        return [Message.model_validate(m) for m in json.loads(raw)] if raw else []

    def keep_sensory(self, user_id: str, remaining: list[Message]) -> None:
        if remaining:
            self.r.set(self.k(user_id, "sensory"), json.dumps([m.model_dump(mode="json") for m in remaining]))
        else:
            self.r.delete(self.k(user_id, "sensory"))

    # --- short-term buffer ------------------------------------------------------------------------
    def append(self, user_id: str, segment: BufferedSegment) -> bool:
        keys = [self.k(user_id, n) for n in ("seen", "pending", "order", "meta")]
        if segment.tracking_id:
            keys.append(self.keys.track(segment.tracking_id))
        args: list[str | int | float] = [segment.key, segment.model_dump_json(), segment.tokens, len(segment.messages),
                                         time.time(), *[m.id for m in segment.messages]]
        return bool(self._append(keys=keys, args=args))

    def buffered(self, user_id: str) -> list[BufferedSegment]:
        members = [_s(m) for m in self.r.zrange(self.k(user_id, "order"), 0, -1)]
        if not members:
            return []
        raw = self.r.hmget(self.k(user_id, "pending"), members)
        return [BufferedSegment.model_validate_json(d) for d in raw if d is not None]

    def info(self, user_id: str) -> BufferInfo:
        meta = {_s(k): _s(v) for k, v in self.r.hgetall(self.k(user_id, "meta")).items()}
        # Queued input older than inflight_ttl_s was lost with its producer: stop waiting for it.
        pending = [_s(t) for t in self.r.zrangebyscore(self.k(user_id, "inflight"), time.time() - self.inflight_ttl_s, "+inf")]
        pending_from, before = "", 0
        if pending:
            froms = self.r.hmget(self.k(user_id, "inflight_from"), pending)
            pending_from = "" if any(f is None for f in froms) else min(_s(f) for f in froms)  # unknown: all wait
            before = sum(s.tokens for s in self.buffered(user_id) if s.key < pending_from) if pending_from else 0
        return BufferInfo(
            tokens=int(meta.get("tokens", 0)), segments=int(self.r.zcard(self.k(user_id, "order"))),
            turns=int(meta.get("turns", 0)),
            flush=meta.get("flush") == "1",
            pending_items=len(pending), pending_from=pending_from, tokens_before_pending=before,
            batches_in_flight=int(self.r.hlen(self.k(user_id, "batches"))),
            last_append=float(meta.get("last_append", 0.0)),
        )

    def request_flush(self, user_id: str) -> None:
        self.r.hset(self.k(user_id, "meta"), "flush", 1)

    # --- batches ----------------------------------------------------------------------------------
    def next_topic_ids(self, user_id: str, count: int) -> int:
        return int(self.r.incrby(self.k(user_id, "topic"), count)) - count + 1

    def start_batch(self, batch: Batch, keys: list[str], clear_flush: bool) -> None:
        user_id, meta = batch.user_id, self.k(batch.user_id, "meta")
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.k(user_id, "batches"), batch.batch_id, batch.model_dump_json())
        pipe.hincrby(meta, "tokens", -batch.tokens)
        pipe.hincrby(meta, "turns", -len(batch.messages))
        if keys:
            pipe.hdel(self.k(user_id, "pending"), *keys)
            pipe.zrem(self.k(user_id, "order"), *keys)
        if clear_flush:
            pipe.hdel(meta, "flush")
        pipe.execute()

    def in_flight(self, user_id: str) -> list[Batch]:
        """Batches in flight, each with its latest lease renewal as ``taken_at``."""
        batches = [Batch.model_validate_json(raw) for raw in self.r.hvals(self.k(user_id, "batches"))]
        leases = {_s(k): _s(v) for k, v in self.r.hgetall(self.k(user_id, "leases")).items()}
        out = []
        for batch in batches:
            owner, _, until = leases.get(batch.batch_id, "").rpartition(" ")
            renewed = float(until) if until and owner == batch.owner else 0.0
            out.append(batch.model_copy(update={"taken_at": max(batch.taken_at, renewed)}) if renewed else batch)
        return out

    def claim(self, batch: Batch, owner: str) -> Batch:
        claimed = batch.model_copy(update={"owner": owner, "taken_at": time.time()})
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.k(batch.user_id, "batches"), batch.batch_id, claimed.model_dump_json())
        pipe.hdel(self.k(batch.user_id, "leases"), batch.batch_id)
        pipe.execute()
        return claimed

    def renew(self, batch: Batch, until: float | None = None) -> None:
        """The owner is alive: its lease counts from now (or from ``until``, for work handed to a durable queue)."""
        self.r.hset(self.k(batch.user_id, "leases"), batch.batch_id, f"{batch.owner} {until or time.time()}")

    def stale_users(self, lease_s: float) -> list[str]:
        """Users with a batch in flight whose lease ran out: their owner died, someone must take over."""
        now = time.time()
        return [u for u in self.users() if any(now - b.taken_at > lease_s for b in self.in_flight(u))]

    def finish_batch(self, batch: Batch) -> bool:
        if not self._move(keys=[self.k(batch.user_id, "batches"), ""], args=[batch.batch_id, ""]):
            return False
        pipe = self.r.pipeline()
        pipe.hdel(self.k(batch.user_id, "leases"), batch.batch_id)
        for member, tracking_id in batch.tracking.items():
            pipe.sadd(self.keys.track_done(tracking_id), member)
            pipe.expire(self.keys.track_done(tracking_id), TRACK_TTL_S)
        pipe.hset(self.keys.entries_ts, batch.user_id, time.time())
        pipe.execute()
        for tracking_id in set(batch.tracking.values()):
            self._maybe_indexed(tracking_id)
        return True

    def fail_batch(self, user_id: str, batch_id: str, reason: str, raw_reply: str | None) -> Batch | None:
        raw = self.r.hget(self.k(user_id, "batches"), batch_id)
        if raw is None:
            return None
        failed = Batch.model_validate_json(raw).model_copy(
            update={"reason": reason, "raw_reply": raw_reply, "failed_at": time.time()})
        if not self._move(keys=[self.k(user_id, "batches"), self.k(user_id, "failed")],
                          args=[batch_id, failed.model_dump_json()]):
            return None
        self.r.hdel(self.k(user_id, "leases"), batch_id)
        self._set_tracking(failed, {"state": "failed", "reason": reason})
        return failed

    def failed(self, user_id: str) -> list[Batch]:
        return [Batch.model_validate_json(raw) for raw in self.r.hvals(self.k(user_id, "failed"))]

    def resume_failed(self, user_id: str, batch_id: str, owner: str) -> Batch | None:
        raw = self.r.hget(self.k(user_id, "failed"), batch_id)
        if raw is None:
            return None
        old = Batch.model_validate_json(raw)
        batch = old.model_copy(update={"owner": owner, "taken_at": time.time(), "attempts": old.attempts + 1,
                                       "reason": None, "raw_reply": None, "failed_at": None})
        if not self._move(keys=[self.k(user_id, "failed"), self.k(user_id, "batches")],
                          args=[batch_id, batch.model_dump_json()]):
            return None
        self._set_tracking(batch, {"state": "buffered", "reason": ""})
        return batch

    def _set_tracking(self, batch: Batch, fields: Mapping[str | bytes | bytearray | memoryview | int | float,
                                                          str | bytes | bytearray | memoryview | int | float]) -> None:
        pipe = self.r.pipeline()
        for tracking_id in set(batch.tracking.values()):
            pipe.hset(self.keys.track(tracking_id), mapping=fields)
        pipe.execute()

    def _maybe_indexed(self, tracking_id: str) -> None:
        key = self.keys.track(tracking_id)
        segments = self.r.hget(key, "segments")
        if segments is not None and self.r.scard(self.keys.track_done(tracking_id)) >= int(segments):
            self.r.hset(key, mapping={"state": "indexed", "indexed_at": time.time()})

    # --- accounting -------------------------------------------------------------------------------
    def observe(self, user_id: str, amounts: dict[str, float]) -> None:
        pipe = self.r.pipeline()
        for key in (self.keys.stats, self.k(user_id, "stats")):
            for name, value in amounts.items():
                pipe.hincrbyfloat(key, name, value)
        pipe.execute()
        metrics.observe(amounts)

    def counters(self, user_id: str | None = None) -> dict[str, float]:
        key = self.keys.stats if user_id is None else self.k(user_id, "stats")
        return {_s(k): float(v) for k, v in self.r.hgetall(key).items()}

    # --- producer side ----------------------------------------------------------------------------
    def track_queued(self, pipe: Any, tracking_id: str, user_id: str, session_id: str, turns: int,
                     first_key: str = "") -> None:
        """The item is on its way to the compress stage. ``first_key`` (``earliest_key`` of its messages)
        is where its segments can start: drains take what is buffered before it; unknown (""), the
        user's drains wait for the whole item."""
        key = self.keys.track(tracking_id)
        pipe.hset(key, mapping={"user_id": user_id, "session_id": session_id, "state": "queued",
                                "turns": turns, "queued_at": time.time()})
        pipe.expire(key, TRACK_TTL_S)
        pipe.zadd(self.k(user_id, "inflight"), {tracking_id: time.time()})
        if first_key:
            pipe.hset(self.k(user_id, "inflight_from"), tracking_id, first_key)
        pipe.sadd(self.keys.users, user_id)

    def untrack(self, tracking_id: str, user_id: str, reason: str) -> None:
        """The item never reached the broker: it no longer holds back the user's drains."""
        pipe = self.r.pipeline()
        pipe.zrem(self.k(user_id, "inflight"), tracking_id)
        pipe.hdel(self.k(user_id, "inflight_from"), tracking_id)
        pipe.hset(self.keys.track(tracking_id), mapping={"state": "failed", "reason": reason})
        pipe.execute()

    def tracking(self, tracking_id: str) -> dict[str, str]:
        data = {_s(k): _s(v) for k, v in self.r.hgetall(self.keys.track(tracking_id)).items()}
        if data and data.get("state") == "buffered":
            data["segments_stored"] = str(self.r.scard(self.keys.track_done(tracking_id)))
        return data

    def item_buffered(self, tracking_id: str, user_id: str, members: list[str], failed: str | None = None) -> None:
        """The tracked item left the compress stage: its segments are buffered (each append counted
        itself on the item), every message was known before, or it failed. It no longer holds back
        the user's drains."""
        key = self.keys.track(tracking_id)
        pipe = self.r.pipeline()
        if failed is not None:
            pipe.hset(key, mapping={"state": "failed", "reason": failed})
        elif not members and self.r.hget(key, "state") in (None, b"queued"):
            # Nothing appended by any delivery of this item: all of it was known from earlier items.
            pipe.hset(key, mapping={"state": "indexed", "segments": 0, "note": "nothing new: every message was known"})
        pipe.zrem(self.k(user_id, "inflight"), tracking_id)
        pipe.hdel(self.k(user_id, "inflight_from"), tracking_id)
        pipe.execute()

    # --- update side ------------------------------------------------------------------------------
    def users_with_new_entries(self) -> dict[str, float]:
        """Users whose newest stored entry is past their update watermark, with that newest time."""
        newest = {_s(k): float(v) for k, v in self.r.hgetall(self.keys.entries_ts).items()}
        marks = {_s(k): float(v) for k, v in self.r.hgetall(self.keys.update_wm).items()}
        sent = {_s(k): float(v) for k, v in self.r.hgetall(self.keys.update_sent).items()}
        # An update already queued for the same newest entry is not queued again on the next tick.
        return {u: ts for u, ts in sorted(newest.items()) if ts > marks.get(u, -1.0) and ts != sent.get(u)}

    def mark_update_sent(self, user_id: str, newest: float) -> None:
        self.r.hset(self.keys.update_sent, user_id, newest)

    def move_watermark(self, user_id: str, watermark: float) -> None:
        pipe = self.r.pipeline()
        pipe.hset(self.keys.update_wm, user_id, watermark)
        pipe.hincrby(self.keys.updates, user_id, 1)
        pipe.execute()

    def update_runs(self) -> dict[str, int]:
        return {_s(k): int(v) for k, v in self.r.hgetall(self.keys.updates).items()}

    def idle_users(self, idle_s: float, now: float | None = None) -> list[str]:
        """Users with buffered segments and no append for ``idle_s`` seconds."""
        now = now if now is not None else time.time()
        out = []
        for user in self.users():
            info = self.info(user)
            if info.segments and now - info.last_append >= idle_s:
                out.append(user)
        return sorted(out)

    # --- failures and overview --------------------------------------------------------------------
    def record_failure(self, task: str, user_id: str | None, reason: str, payload: Any,
                       raw_reply: str | None = None, tracking_id: str | None = None) -> None:
        record = {"at": time.time(), "task": task, "user_id": user_id, "reason": reason,
                  "payload": payload if isinstance(payload, str | dict | list) else repr(payload)}
        if raw_reply:
            record["raw_reply"] = raw_reply
        pipe = self.r.pipeline()
        pipe.lpush(self.keys.failures, json.dumps(record, default=str))
        pipe.hincrby(self.keys.stats, "failures", 1)
        if tracking_id:
            pipe.hset(self.keys.track(tracking_id), mapping={"state": "failed", "reason": reason})
        pipe.execute()

    def dead_letter(self, raw: str, reason: str, headers: dict[str, Any] | None = None) -> None:
        """Keep a message that no task could take (unregistered, malformed) with its raw body and the reason."""
        record = {"at": time.time(), "reason": reason, "raw": raw, "headers": headers or {}}
        pipe = self.r.pipeline()
        pipe.lpush(self.keys.dead_letters, json.dumps(record, default=str))
        pipe.hincrby(self.keys.stats, "dead_letters", 1)
        pipe.execute()
        metrics.DEAD_LETTERS.inc()

    def dead_letters(self, limit: int = 20) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.r.lrange(self.keys.dead_letters, 0, limit - 1)]

    def failures(self, limit: int = 20) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.r.lrange(self.keys.failures, 0, limit - 1)]

    def users(self) -> list[str]:
        return sorted(_s(u) for u in self.r.smembers(self.keys.users))

    def forget_user(self, user_id: str) -> int:
        """Drop every key of ``user_id`` (buffers, seen ids, batches, failed batches, counters) and its
        place in the user set and the update bookkeeping, under the user's lock; how many keys went."""
        with self.lock(user_id):
            lock_key = self.k(user_id, "lock").encode()
            pattern = _glob_escape(self.k(user_id, "")) + "*"
            found = [k for k in self.r.scan_iter(match=pattern, count=500) if k != lock_key]
            pipe = self.r.pipeline(transaction=True)
            if found:
                pipe.delete(*found)
            pipe.srem(self.keys.users, user_id)
            for table in (self.keys.entries_ts, self.keys.update_wm, self.keys.update_sent, self.keys.updates):
                pipe.hdel(table, user_id)
            pipe.execute()
        return len(found)

    def stats(self) -> dict[str, float]:
        return self.counters()
