"""The hook for a rate limit shared by every caller: requests and tokens per minute.

Distributed workers implement ``RateLimiter`` on Redis so that all of them share one budget; the
library defaults to ``NoRateLimiter``, and ``InProcessRateLimiter`` serves one process.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol


class RateLimiter(Protocol):
    """Blocks until one request of about ``tokens`` tokens may be sent."""

    def acquire(self, tokens: int) -> None: ...


class NoRateLimiter:
    """No limit at all."""

    def acquire(self, tokens: int) -> None:
        return None


class InProcessRateLimiter:
    """A sliding one-minute window of requests and tokens in this process (0 means unlimited)."""

    def __init__(self, requests_per_minute: int = 0, tokens_per_minute: int = 0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._clock, self._sleep = clock, sleep
        self._sent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def acquire(self, tokens: int) -> None:
        while True:
            with self._lock:
                wait = self._wait_s(tokens)
                if wait <= 0:
                    self._sent.append((self._clock(), tokens))
                    return
            self._sleep(wait)

    def _wait_s(self, tokens: int) -> float:
        now = self._clock()
        while self._sent and now - self._sent[0][0] >= 60.0:
            self._sent.popleft()
        if not self._sent:
            return 0.0
        over_requests = self.requests_per_minute and len(self._sent) >= self.requests_per_minute
        used = sum(t for _, t in self._sent)
        over_tokens = self.tokens_per_minute and used + tokens > self.tokens_per_minute
        return 60.0 - (now - self._sent[0][0]) if over_requests or over_tokens else 0.0
