"""Per-user pipeline state in Redis: ordered buffers, batches in flight, locks, tracking, failures.

Keys (``P`` is ``key_prefix``; ``{user}`` is a hash tag so one user's keys share a cluster slot):

- ``P:u:{user}:order``   sorted set, score 0, members sort as (session time, turn index): buffered segments
- ``P:u:{user}:pending`` hash member → segment JSON
- ``P:u:{user}:seen``    set of message ids ever buffered: appends are idempotent
- ``P:u:{user}:meta``    hash: buffered ``tokens`` and ``turns``, ``last_append``, ``flush`` flag
- ``P:u:{user}:inflight`` sorted set (by queue time) of tracking ids queued but not yet buffered (drains wait for them)
- ``P:u:{user}:batches`` hash batch id → batch being extracted and stored (several may be in flight);
  a task that runs again takes its own batch again; ``P:u:{user}:failed`` batches that failed for good
- ``P:u:{user}:topic``   topic id counter; ``P:u:{user}:lock`` the user's lock (expires)
- ``P:track:<id>`` hash, ``P:track:<id>:done`` set; ``P:failures`` list; ``P:users`` set;
  ``P:entries_ts`` / ``P:update_wm`` / ``P:updates`` hashes user → newest entry, update watermark, runs;
  ``P:stats`` hash of counters.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import AbstractContextManager
from typing import Any

import redis

from lightmem_core.models import Message, TopicSegment

TRACK_TTL_S = 7 * 86400
_TS_OFFSET_MS = 10**14  # members sort as text: shift times so that pre-1970 stamps stay positive

# Append one segment unless its member exists or none of its messages is new. Atomic, so a task that
# runs twice (late ack, retry) leaves the buffer as one run would.
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
return 1
"""

# Clear a stored batch once: a re-run that stored it again finds it gone.
_FINISH = """
return redis.call('HDEL', KEYS[1], ARGV[1])
"""

def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def order_member(segment_messages: list[Message]) -> str:
    """A member that sorts as the segment's (session time, turn index), unique by its first message id."""
    first = segment_messages[0]
    ts_ms = int(round(first.time_stamp.timestamp() * 1000)) + _TS_OFFSET_MS
    return f"{ts_ms:016d}|{first.turn_index:07d}|{first.id}"


class PipelineState:
    """The Redis side of the pipeline, shared by producers, workers and the command line."""

    def __init__(self, client: redis.Redis, prefix: str = "lightmem", lock_timeout_s: float = 300.0,
                 inflight_ttl_s: float = 3600.0) -> None:
        self.r = client
        self.p = prefix
        self.lock_timeout_s = lock_timeout_s
        self.inflight_ttl_s = inflight_ttl_s
        self._append = client.register_script(_APPEND)
        self._finish = client.register_script(_FINISH)

    # --- keys -------------------------------------------------------------------------------------
    def k(self, user_id: str, name: str) -> str:
        return f"{self.p}:u:{{{user_id}}}:{name}"

    def lock(self, user_id: str) -> AbstractContextManager[Any]:
        """The user's lock; it expires after ``lock_timeout_s`` so a dead worker never blocks the user."""
        return self.r.lock(self.k(user_id, "lock"), timeout=self.lock_timeout_s,
                           blocking_timeout=2 * self.lock_timeout_s)

    # --- producer side ----------------------------------------------------------------------------
    def track_queued(self, pipe: Any, tracking_id: str, user_id: str, session_id: str, turns: int) -> None:
        key = f"{self.p}:track:{tracking_id}"
        pipe.hset(key, mapping={"user_id": user_id, "session_id": session_id, "state": "queued",
                                "turns": turns, "queued_at": time.time()})
        pipe.expire(key, TRACK_TTL_S)
        pipe.zadd(self.k(user_id, "inflight"), {tracking_id: time.time()})
        pipe.sadd(f"{self.p}:users", user_id)

    def untrack(self, tracking_id: str, user_id: str, reason: str) -> None:
        """The item never reached the broker: it no longer holds back the user's drains."""
        pipe = self.r.pipeline()
        pipe.zrem(self.k(user_id, "inflight"), tracking_id)
        pipe.hset(f"{self.p}:track:{tracking_id}", mapping={"state": "failed", "reason": reason})
        pipe.execute()

    def request_flush(self, user_id: str) -> None:
        self.r.hset(self.k(user_id, "meta"), "flush", 1)

    def tracking(self, tracking_id: str) -> dict[str, str]:
        data = {_s(k): _s(v) for k, v in self.r.hgetall(f"{self.p}:track:{tracking_id}").items()}
        if data and data.get("state") == "buffered":
            done = self.r.scard(f"{self.p}:track:{tracking_id}:done")
            data["segments_stored"] = str(done)
        return data

    # --- compress side ----------------------------------------------------------------------------
    def unseen(self, user_id: str, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        flags = self.r.smismember(self.k(user_id, "seen"), ids)
        return {i for i, known in zip(ids, flags, strict=True) if not known}

    def append(self, tracking_id: str, segment: list[Message], tokens: int) -> str | None:
        """Buffer one topic segment (messages of one session); ``None`` when it was buffered before."""
        user_id = segment[0].user_id
        member = order_member(segment)
        data = json.dumps({"tracking_id": tracking_id, "session_id": segment[0].session_id, "tokens": tokens,
                           "messages": [m.model_dump(mode="json") for m in segment]})
        keys = [self.k(user_id, n) for n in ("seen", "pending", "order", "meta")]
        added = self._append(keys=keys, args=[member, data, tokens, len(segment), time.time(), *[m.id for m in segment]])
        return member if added else None

    def buffered(self, tracking_id: str, user_id: str, members: list[str], failed: str | None = None) -> None:
        """The tracked item left the compress stage: buffered (``members``), a duplicate, or failed."""
        key = f"{self.p}:track:{tracking_id}"
        pipe = self.r.pipeline()
        if failed is not None:
            pipe.hset(key, mapping={"state": "failed", "reason": failed})
        elif members:
            pipe.hset(key, mapping={"state": "buffered", "segments": len(members)})
        elif self.r.hget(key, "state") in (None, b"queued"):  # a second delivery must not undo the first
            pipe.hset(key, mapping={"state": "indexed", "segments": 0, "note": "nothing new: every message was known"})
        pipe.zrem(self.k(user_id, "inflight"), tracking_id)
        pipe.execute()

    # --- drain side -------------------------------------------------------------------------------
    def buffer_info(self, user_id: str) -> dict[str, Any]:
        meta = {_s(k): _s(v) for k, v in self.r.hgetall(self.k(user_id, "meta")).items()}
        return {
            "tokens": int(meta.get("tokens", 0)), "turns": int(meta.get("turns", 0)),
            "segments": self.r.zcard(self.k(user_id, "order")),
            # Queued input older than the visibility timeout was lost with its producer: stop waiting for it.
            "inflight": self.r.zcount(self.k(user_id, "inflight"), time.time() - self.inflight_ttl_s, "+inf"),
            "flush": meta.get("flush") == "1", "batches": self.r.hlen(self.k(user_id, "batches")),
            "last_append": float(meta.get("last_append", 0.0)),
        }

    def take_batch(self, user_id: str, owner: str, stale_s: float, threshold_tokens: int,
                   ready: bool = True) -> dict[str, Any] | None:
        """The user's next batch, in (session time, turn index) order.

        A re-run of the task that took the batch (``owner``), or a batch older than ``stale_s``, gets
        the batch in flight again. Otherwise buffered segments are taken as ``LightMemory`` would
        extract them: whole sessions, up to the first session after which the batch holds at least
        ``threshold_tokens`` (or all, when fewer: the drain then runs only for a flush), when ``ready``
        (the caller's drain condition). Topic ids are given here and
        kept with the batch, so a re-run extracts the same segments with the same ids. Call under the
        user's lock.
        """
        for raw in self.r.hvals(self.k(user_id, "batches")):
            batch = dict(json.loads(raw))
            if batch.get("owner") == owner or time.time() - float(batch.get("taken_at", 0)) > stale_s:
                batch["owner"], batch["taken_at"] = owner, time.time()
                self.r.hset(self.k(user_id, "batches"), batch["batch_id"], json.dumps(batch))
                return batch
        members = [_s(m) for m in self.r.zrange(self.k(user_id, "order"), 0, -1)]
        if not members or not ready:
            return None
        drafts = [json.loads(_s(d)) for d in self.r.hmget(self.k(user_id, "pending"), members)]
        count = _prefix_len(drafts, threshold_tokens)
        members, drafts = members[:count], drafts[:count]
        last = self.r.incrby(self.k(user_id, "topic"), count)
        first_topic = int(last) - count + 1
        segments = [
            TopicSegment(user_id=user_id, session_id=d["session_id"], topic_id=first_topic + i,
                         messages=[Message.model_validate(m) for m in d["messages"]]).model_dump(mode="json")
            for i, d in enumerate(drafts)
        ]
        batch = {"batch_id": uuid.uuid4().hex, "owner": owner, "taken_at": time.time(), "segments": segments,
                 "tracking": {m: d["tracking_id"] for m, d in zip(members, drafts, strict=True)}}
        meta = self.k(user_id, "meta")
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.k(user_id, "batches"), batch["batch_id"], json.dumps(batch))
        pipe.hincrby(meta, "tokens", -sum(int(d.get("tokens", 0)) for d in drafts))
        pipe.hincrby(meta, "turns", -sum(len(d["messages"]) for d in drafts))
        pipe.hdel(self.k(user_id, "pending"), *members)
        pipe.zrem(self.k(user_id, "order"), *members)
        if count == self.r.zcard(self.k(user_id, "order")):  # everything taken: the flush is done
            pipe.hdel(meta, "flush")
        pipe.execute()
        return batch

    def finish_batch(self, user_id: str, batch_id: str, tracking: dict[str, str], stats: dict[str, float],
                     newest_entry_ts: float) -> bool:
        """Clear the stored batch; count it once. ``False`` when a previous run already did."""
        if not self._finish(keys=[self.k(user_id, "batches")], args=[batch_id]):
            return False
        pipe = self.r.pipeline()
        for member, tracking_id in tracking.items():
            pipe.sadd(f"{self.p}:track:{tracking_id}:done", member)
            pipe.expire(f"{self.p}:track:{tracking_id}:done", TRACK_TTL_S)
        for name, value in stats.items():
            pipe.hincrbyfloat(f"{self.p}:stats", name, value)
        if newest_entry_ts:
            pipe.hset(f"{self.p}:entries_ts", user_id, max(newest_entry_ts, self.newest_entry_ts(user_id)))
        pipe.execute()
        for tracking_id in set(tracking.values()):
            self._maybe_indexed(tracking_id)
        return True

    def fail_batch(self, user_id: str, batch_id: str, reason: str) -> None:
        """Keep a batch that failed for good under ``failed`` (with the reason); it leaves the flight."""
        raw = self.r.hget(self.k(user_id, "batches"), batch_id)
        if raw is None:
            return
        batch = dict(json.loads(raw), reason=reason, failed_at=time.time())
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.k(user_id, "failed"), batch_id, json.dumps(batch))
        pipe.hdel(self.k(user_id, "batches"), batch_id)
        for tracking_id in set(batch["tracking"].values()):
            pipe.hset(f"{self.p}:track:{tracking_id}", mapping={"state": "failed", "reason": reason})
        pipe.execute()

    def _maybe_indexed(self, tracking_id: str) -> None:
        key = f"{self.p}:track:{tracking_id}"
        segments = self.r.hget(key, "segments")
        if segments is not None and self.r.scard(f"{key}:done") >= int(segments):
            self.r.hset(key, mapping={"state": "indexed", "indexed_at": time.time()})

    # --- update side ------------------------------------------------------------------------------
    def newest_entry_ts(self, user_id: str) -> float:
        return float(self.r.hget(f"{self.p}:entries_ts", user_id) or 0.0)

    def users_with_new_entries(self) -> dict[str, float]:
        """Users whose newest stored entry is past their update watermark, with that newest time."""
        newest = {_s(k): float(v) for k, v in self.r.hgetall(f"{self.p}:entries_ts").items()}
        marks = {_s(k): float(v) for k, v in self.r.hgetall(f"{self.p}:update_wm").items()}
        sent = {_s(k): float(v) for k, v in self.r.hgetall(f"{self.p}:update_sent").items()}
        # An update already queued for the same newest entry is not queued again on the next tick.
        return {u: ts for u, ts in sorted(newest.items()) if ts > marks.get(u, -1.0) and ts != sent.get(u)}

    def mark_update_sent(self, user_id: str, newest: float) -> None:
        self.r.hset(f"{self.p}:update_sent", user_id, newest)

    def move_watermark(self, user_id: str, watermark: float) -> None:
        pipe = self.r.pipeline()
        pipe.hset(f"{self.p}:update_wm", user_id, watermark)
        pipe.hincrby(f"{self.p}:updates", user_id, 1)
        pipe.execute()

    def update_runs(self) -> dict[str, int]:
        return {_s(k): int(v) for k, v in self.r.hgetall(f"{self.p}:updates").items()}

    def idle_users(self, idle_s: float, now: float | None = None) -> list[str]:
        """Users with buffered segments and no append for ``idle_s`` seconds."""
        now = now if now is not None else time.time()
        out = []
        for raw in self.r.smembers(f"{self.p}:users"):
            user = _s(raw)
            info = self.buffer_info(user)
            if info["segments"] and now - info["last_append"] >= idle_s:
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
        pipe.lpush(f"{self.p}:failures", json.dumps(record, default=str))
        pipe.hincrby(f"{self.p}:stats", "failures", 1)
        if tracking_id:
            pipe.hset(f"{self.p}:track:{tracking_id}", mapping={"state": "failed", "reason": reason})
        pipe.execute()

    def failures(self, limit: int = 20) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.r.lrange(f"{self.p}:failures", 0, limit - 1)]

    def users(self) -> list[str]:
        return sorted(_s(u) for u in self.r.smembers(f"{self.p}:users"))

    def stats(self) -> dict[str, float]:
        return {_s(k): float(v) for k, v in self.r.hgetall(f"{self.p}:stats").items()}


def _prefix_len(drafts: list[dict[str, Any]], threshold_tokens: int) -> int:
    """How many leading segments make whole sessions holding at least ``threshold_tokens`` (all, if fewer)."""
    total = 0
    for i, draft in enumerate(drafts):
        total += int(draft.get("tokens", 0))
        next_session = drafts[i + 1]["session_id"] if i + 1 < len(drafts) else None
        if total >= threshold_tokens and next_session != draft["session_id"]:
            return i + 1
    return len(drafts)
