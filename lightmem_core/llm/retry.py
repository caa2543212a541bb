"""Retries, a concurrency cap and the shared rate limit, written once around any ``LLMClient``.

Only ``TransientError`` is retried (429, 5xx, timeouts, lost connections): after a 429 the wait is
what ``Retry-After`` asks for, otherwise exponential backoff with jitter. When the attempts run out
the last ``TransientError`` is raised, so a queue can retry the whole task later.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from lightmem_core.errors import TransientError
from lightmem_core.llm.base import CallTag, ChatMessage, LLMClient, LLMReply
from lightmem_core.llm.openai_compat import count_prompt_tokens
from lightmem_core.llm.ratelimit import NoRateLimiter, RateLimiter

log = logging.getLogger(__name__)


class RetryingClient:
    """Wraps a client with retries, at most ``max_concurrency`` calls in flight, and a rate limiter.

    Args:
        inner: The client that makes one attempt.
        max_retries: Attempts after the first one.
        max_concurrency: Calls in flight at once through this wrapper (all threads together).
        limiter: Asked before every attempt; the distributed workers pass one backed by Redis.
        base_delay_s: First backoff; doubles on every retry, with jitter, up to ``max_delay_s``.
        max_retry_after_s: The longest ``Retry-After`` honoured as it is.
    """

    def __init__(self, inner: LLMClient, *, max_retries: int = 5, max_concurrency: int = 8,
                 limiter: RateLimiter | None = None, base_delay_s: float = 0.5, max_delay_s: float = 30.0,
                 max_retry_after_s: float = 120.0, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> None:
        self.inner = inner
        self.max_retries = max_retries
        self.limiter = limiter or NoRateLimiter()
        self.base_delay_s, self.max_delay_s, self.max_retry_after_s = base_delay_s, max_delay_s, max_retry_after_s
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._sleep = sleep
        self._rng = rng or random.Random()

    def complete(self, messages: list[ChatMessage], *, json_mode: bool = False, tag: CallTag | None = None) -> LLMReply:
        """Complete ``messages``, retrying transient failures; raises the last one when attempts run out."""
        estimate = count_prompt_tokens(messages)
        attempt = 0
        while True:
            self.limiter.acquire(estimate)
            try:
                with self._slots:
                    return self.inner.complete(messages, json_mode=json_mode, tag=tag)
            except TransientError as exc:
                if attempt >= self.max_retries:
                    raise
                wait = self.delay_s(attempt, exc.retry_after_s)
                log.warning("LLM call failed (%s); retry %d/%d in %.2f s", exc, attempt + 1, self.max_retries, wait)
                self._sleep(wait)
                attempt += 1

    def delay_s(self, attempt: int, retry_after_s: float | None) -> float:
        """The wait before retry number ``attempt + 1``: ``Retry-After`` when given, else backoff with jitter."""
        if retry_after_s is not None:
            return min(retry_after_s, self.max_retry_after_s)
        backoff = min(self.max_delay_s, self.base_delay_s * 2**attempt)
        return float(backoff * self._rng.uniform(0.5, 1.0))
