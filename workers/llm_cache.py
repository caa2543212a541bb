"""The call cache (``kv_cache``) in Redis, for workers on several hosts, and the choice of store.

``RedisReplyCache`` implements ``lightmem_core.llm.cache.ReplyCache`` under the key layout of
``workers.names`` (``P:{llmcache}:...``): one string per reply, a sorted set of last uses, and a hash
of totals. A put and its eviction (least recently used first, down to nine tenths of the bound) run
in one Lua script, so the totals stay exact while every worker writes. Redis errors surface as
``TransientError``, which ``CachingClient`` turns into a call to the model and a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis

from lightmem_core import factory
from lightmem_core.errors import TransientError
from lightmem_core.llm.cache import CachedReply, CacheStats, ReplyCache
from workers.names import Keys
from workers.settings import DistributedSettings

T = TypeVar("T")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

# Last use in seconds on Redis's clock, the same for every host.
_NOW = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) + tonumber(t[2]) / 1e6\n"
# KEYS: reply, lru, totals. ARGV: raw, size, (unused), max_entries, max_bytes, keep_entries, keep_bytes.
_PUT = _NOW + """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end
redis.call('ZADD', KEYS[2], now, KEYS[1])
local entries = redis.call('HINCRBY', KEYS[3], 'entries', 1)
local bytes = redis.call('HINCRBY', KEYS[3], 'bytes', ARGV[2])
if entries <= tonumber(ARGV[4]) and bytes <= tonumber(ARGV[5]) then return 1 end
while entries > tonumber(ARGV[6]) or bytes > tonumber(ARGV[7]) do
  local oldest = redis.call('ZPOPMIN', KEYS[2])
  if #oldest == 0 then break end
  local raw = redis.call('GET', oldest[1])
  if raw then
    redis.call('DEL', oldest[1])
    entries = entries - 1
    bytes = bytes - string.len(raw)
  end
end
redis.call('HSET', KEYS[3], 'entries', entries, 'bytes', bytes)
return 1
"""
# KEYS: reply, lru, totals.
_GET = _NOW + """
local raw = redis.call('GET', KEYS[1])
if raw then
  redis.call('ZADD', KEYS[2], 'XX', now, KEYS[1])
  redis.call('HINCRBY', KEYS[3], 'replays', 1)
end
return raw
"""
# KEYS: reply, lru, totals.
_DELETE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
redis.call('HINCRBY', KEYS[3], 'entries', -1)
redis.call('HINCRBY', KEYS[3], 'bytes', -string.len(raw))
return 1
"""
# KEYS: lru, totals. ARGV: how many. Removes the oldest ARGV[1] entries; returns how many went.
_DROP = """
local oldest = redis.call('ZPOPMIN', KEYS[1], ARGV[1])
local count, size = 0, 0
for i = 1, #oldest, 2 do
  local raw = redis.call('GET', oldest[i])
  if raw then
    redis.call('DEL', oldest[i])
    count, size = count + 1, size + string.len(raw)
  end
end
if count > 0 then  -- Redis takes no "-0"
  redis.call('HINCRBY', KEYS[2], 'entries', -count)
  redis.call('HINCRBY', KEYS[2], 'bytes', -size)
end
return #oldest / 2
"""


class RedisReplyCache:
    """``ReplyCache`` on Redis: shared by every worker that reaches it.

    Args:
        client: the Redis client (the broker's, or one for ``kv_cache_url``).
        base: the key prefix, ``Keys(prefix).llm_cache``.
        max_entries: the most replies kept.
        max_bytes: the most bytes of stored replies kept.
    """

    def __init__(self, client: redis.Redis, base: str, max_entries: int = 100_000, max_bytes: int = 512 * 2**20) -> None:
        self.r, self.base = client, base
        self.max_entries, self.max_bytes = max_entries, max_bytes
        kwargs = client.connection_pool.connection_kwargs
        self.where = f"redis {kwargs.get('host', kwargs.get('path', ''))}:{kwargs.get('port', '')}/{kwargs.get('db', 0)}"
        self._lru, self._totals = f"{base}:lru", f"{base}:totals"
        self._put, self._get = client.register_script(_PUT), client.register_script(_GET)
        self._delete, self._drop = client.register_script(_DELETE), client.register_script(_DROP)

    def _key(self, key: str) -> str:
        return f"{self.base}:r:{key}"

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            raise TransientError(f"call cache {self.where}: {type(exc).__name__}: {exc}") from exc

    def get(self, key: str) -> CachedReply | None:
        with self._translated():
            raw = self._get(keys=[self._key(key), self._lru, self._totals])
        return CachedReply.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw) if raw else None

    def put(self, key: str, reply: CachedReply) -> None:
        raw = reply.dumps()
        with self._translated():
            self._put(keys=[self._key(key), self._lru, self._totals],
                      args=[raw, len(raw.encode("utf-8")), 0, self.max_entries, self.max_bytes,
                            int(self.max_entries * 0.9), int(self.max_bytes * 0.9)])

    def delete(self, key: str) -> None:
        with self._translated():
            self._delete(keys=[self._key(key), self._lru, self._totals])

    def stats(self) -> CacheStats:
        with self._translated():
            totals = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in self.r.hgetall(self._totals).items()}
        return CacheStats(self.where, totals.get("entries", 0), totals.get("bytes", 0), totals.get("replays", 0),
                          self.max_entries, self.max_bytes)

    def clear(self) -> int:
        cleared = 0
        with self._translated():
            while dropped := int(self._drop(keys=[self._lru, self._totals], args=[1000])):
                cleared += dropped
            self.r.hset(self._totals, mapping={"entries": 0, "bytes": 0, "replays": 0})
        return cleared

    def close(self) -> None:
        return None  # the client belongs to whoever made it


def reply_cache_for(settings: DistributedSettings, broker: Callable[[], redis.Redis] | None = None) -> ReplyCache | None:
    """The call cache when ``kv_cache`` is on (and an LLM is configured), else ``None``."""
    config = settings.memory_cfg
    if not config.kv_cache or config.memory_manager.model_name == "verbatim":
        return None
    return open_reply_cache(settings, broker)


def open_reply_cache(settings: DistributedSettings, broker: Callable[[], redis.Redis] | None = None) -> ReplyCache:
    """The call cache where the configuration puts it, on or off: Redis for a ``redis://``
    ``kv_cache_url`` (the broker's client when it is the broker's URL), else the library's choice
    (PostgreSQL or SQLite)."""
    config = settings.memory_cfg
    url = config.kv_cache_url
    if url is None or not url.startswith(REDIS_SCHEMES):
        return factory.open_reply_cache(config)
    client = broker() if broker is not None and url == settings.redis_url else _client(url, settings)
    return RedisReplyCache(client, Keys(settings.key_prefix).llm_cache, config.kv_cache_max_entries,
                           int(config.kv_cache_max_mb * 2**20))


def _client(url: str, settings: DistributedSettings) -> redis.Redis:
    kwargs: dict[str, Any] = {"socket_connect_timeout": settings.redis_connect_timeout_s,
                              "socket_timeout": settings.redis_socket_timeout_s}
    return redis.Redis.from_url(url, **kwargs)
