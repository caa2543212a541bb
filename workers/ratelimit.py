"""The LLM rate limit shared by every worker through Redis, and LLM accounting kept in Redis.

``RedisRateLimiter`` implements ``lightmem_core.llm.ratelimit.RateLimiter``: a sliding one-minute
window of requests and tokens, checked and taken atomically in a Lua script on Redis's clock, so all
extract processes on all hosts together stay under one ``requests_per_minute``/``tokens_per_minute``.
``RedisCallRecorder`` implements ``CallRecorder``: totals for ``lightmem stats``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import redis

from lightmem_core.llm.base import CACHE_HIT
from workers import metrics

# KEYS[1]: window (sorted set: member "id:tokens", score = send time in s); ARGV: rpm, tpm, tokens, id.
# Returns 0 when the request was admitted, else how many seconds to wait before asking again.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60)
local rpm, tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local sent = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local count, used = #sent / 2, 0
for i = 1, #sent, 2 do used = used + tonumber(string.match(sent[i], ':(%d+)$')) end
local over = (rpm > 0 and count >= rpm) or (tpm > 0 and count > 0 and used + tokens > tpm)
if not over then
  redis.call('ZADD', KEYS[1], now, ARGV[4] .. ':' .. ARGV[3])
  redis.call('EXPIRE', KEYS[1], 120)
  return '0'
end
return tostring(math.max(0.05, tonumber(sent[2]) + 60 - now))
"""


class RedisRateLimiter:
    """Blocks until one request of about ``tokens`` tokens fits the shared per-minute limits (0: none)."""

    def __init__(self, client: redis.Redis, key: str, requests_per_minute: int = 0, tokens_per_minute: int = 0,
                 sleep: Callable[[float], None] = time.sleep, max_wait_s: float = 1.0) -> None:
        self.key = key
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._sleep = sleep
        self._max_wait_s = max_wait_s
        self._script = client.register_script(_ACQUIRE)

    def acquire(self, tokens: int) -> None:
        if not (self.requests_per_minute or self.tokens_per_minute):
            return
        while True:
            wait = float(self._script(keys=[self.key], args=[self.requests_per_minute, self.tokens_per_minute,
                                                              max(0, int(tokens)), uuid.uuid4().hex]))
            if wait <= 0:
                return
            self._sleep(min(wait, self._max_wait_s))  # ask again soon: others' requests may expire first


class RedisCallRecorder:
    """Adds every LLM call to the shared counters that ``lightmem stats`` reads; a reply replayed from
    the call cache is counted apart (``llm_cache_hits``), never as a call."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.r = client
        self.key = key

    def record_llm_call(self, user_id: str | None, session_id: str | None, purpose: str, model: str | None,
                        prompt_tokens: int, completion_tokens: int, latency_s: float, outcome: str,
                        error: str | None = None, cached_tokens: int = 0) -> None:
        pipe = self.r.pipeline()
        if outcome == CACHE_HIT:
            metrics.LLM_CACHE_HITS.labels(purpose).inc()
            pipe.hincrbyfloat(self.key, "llm_cache_hits", 1)
            pipe.hincrbyfloat(self.key, "llm_cache_saved_tokens", prompt_tokens + completion_tokens)
            pipe.execute()
            return
        metrics.LLM_CALLS.labels(purpose, outcome).inc()
        metrics.LLM_TOKENS.labels("prompt").inc(prompt_tokens)
        metrics.LLM_TOKENS.labels("completion").inc(completion_tokens)
        metrics.LLM_TOKENS.labels("cached").inc(cached_tokens)
        pipe.hincrbyfloat(self.key, "llm_calls", 1)
        pipe.hincrbyfloat(self.key, f"llm_calls_{purpose}", 1)
        pipe.hincrbyfloat(self.key, "llm_prompt_tokens", prompt_tokens)
        pipe.hincrbyfloat(self.key, "llm_completion_tokens", completion_tokens)
        pipe.hincrbyfloat(self.key, "llm_cached_tokens", cached_tokens)
        pipe.hincrbyfloat(self.key, "llm_latency_s", latency_s)
        if outcome != "ok":
            pipe.hincrbyfloat(self.key, "llm_errors", 1)
        pipe.execute()
