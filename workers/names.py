"""Names in one place: task names and their queues, the Redis key layout, the payload version.

Producers, workers and the command line import these names; none of them spells a task name or a
key by hand. ``role_of`` refuses a name that is not here: an unknown task is an error, never routed
to a default queue.
"""

from __future__ import annotations

from typing import Final

PAYLOAD_VERSION: Final = 1
ROLES: Final = ("compress", "extract", "store", "update")

COMPRESS_SESSIONS: Final = "lightmem.compress.sessions"
EXTRACT_DRAIN: Final = "lightmem.extract.drain"
EXTRACT_RETRY: Final = "lightmem.extract.retry"
STORE_INDEX: Final = "lightmem.store.index"
UPDATE_NIGHTLY: Final = "lightmem.update.nightly"
UPDATE_USER: Final = "lightmem.update.user"
UPDATE_FLUSH_IDLE: Final = "lightmem.update.flush_idle"

# Task name -> the role whose queue runs it.
TASK_ROLES: Final[dict[str, str]] = {
    COMPRESS_SESSIONS: "compress",
    EXTRACT_DRAIN: "extract",
    EXTRACT_RETRY: "extract",
    STORE_INDEX: "store",
    UPDATE_NIGHTLY: "update",
    UPDATE_USER: "update",
    UPDATE_FLUSH_IDLE: "update",
}
# Tasks that open the store: on the store owner's queue when Qdrant is an embedded folder.
STORE_TOUCHING: Final = frozenset({UPDATE_USER})


class UnknownTask(LookupError):
    """Raised when a task name is not one of ``TASK_ROLES``."""


def role_of(task_name: str, embedded_store: bool) -> str:
    """The role whose queue runs ``task_name``; store-touching work goes to the store owner when embedded."""
    role = TASK_ROLES.get(task_name)
    if role is None:
        raise UnknownTask(f"unknown task {task_name!r}; known: {sorted(TASK_ROLES)}")
    return "store" if embedded_store and task_name in STORE_TOUCHING else role


def escape_user(user_id: str) -> str:
    """A user id as it appears inside a key's ``{...}`` hash tag: any id works, ids that hold none of
    ``%{}`` are unchanged (keys written before stay valid), and no two ids give the same text."""
    return user_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


class Keys:
    """The Redis key layout under one prefix ``P``.

    ``{user}`` is a hash tag, so one user's keys share a cluster slot:

    - ``P:u:{user}:order``   sorted set, score 0, members sort as (session time, turn index): buffered segments
    - ``P:u:{user}:pending`` hash member → buffered segment JSON
    - ``P:u:{user}:seen``    set of message ids ever buffered: appends are idempotent
    - ``P:u:{user}:sensory`` the sensory buffer (JSON list of messages)
    - ``P:u:{user}:meta``    hash: buffered ``tokens`` and ``turns``, ``last_append``, ``flush`` flag
    - ``P:u:{user}:inflight`` sorted set (by queue time) of tracking ids queued but not yet buffered
    - ``P:u:{user}:batches`` hash batch id → batch in flight; ``P:u:{user}:failed`` batches failed for good;
      ``P:u:{user}:leases`` hash batch id → "owner renewed-until" (the owner's heartbeat)
    - ``P:u:{user}:topic``   topic id counter; ``P:u:{user}:lock`` the user's lock (expires)
    - ``P:u:{user}:stats``   the user's counters; ``P:u:{user}:turns:<session>`` turn numbering of enqueue_turns
    - ``P:track:<id>`` hash, ``P:track:<id>:done`` set; ``P:failures`` list; ``P:dead`` list of messages
      no task could take (raw body and reason); ``P:users`` set;
      ``P:desk`` the search desk's request ids,
      ``P:desk:req:<id>`` a request (expires with its asker's timeout), ``P:desk:reply:<id>`` its answer;
      ``P:entries_ts`` / ``P:update_wm`` / ``P:update_sent`` / ``P:updates`` hashes user → newest entry,
      update watermark, update queued, runs; ``P:stats`` global counters; ``P:llm:window`` the rate limit.
    - ``P:{llmcache}:r:<key>`` a reply of the call cache (``kv_cache_url: redis://...``),
      ``P:{llmcache}:lru`` sorted set key → last use, ``P:{llmcache}:totals`` hash entries, bytes, replays
      (one hash tag: the eviction script touches them together).
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.failures = f"{prefix}:failures"
        self.dead_letters = f"{prefix}:dead"
        self.users = f"{prefix}:users"
        self.stats = f"{prefix}:stats"
        self.entries_ts = f"{prefix}:entries_ts"
        self.update_wm = f"{prefix}:update_wm"
        self.update_sent = f"{prefix}:update_sent"
        self.updates = f"{prefix}:updates"
        self.llm_window = f"{prefix}:llm:window"
        self.desk = f"{prefix}:desk"
        self.llm_cache = f"{prefix}:{{llmcache}}"

    def user(self, user_id: str, name: str) -> str:
        return f"{self.prefix}:u:{{{escape_user(user_id)}}}:{name}"

    def track(self, tracking_id: str) -> str:
        return f"{self.prefix}:track:{tracking_id}"

    def track_done(self, tracking_id: str) -> str:
        return f"{self.prefix}:track:{tracking_id}:done"

    def desk_request(self, request_id: str) -> str:
        return f"{self.prefix}:desk:req:{request_id}"

    def desk_reply(self, request_id: str) -> str:
        return f"{self.prefix}:desk:reply:{request_id}"

