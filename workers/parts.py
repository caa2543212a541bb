"""What one worker process works with: the memory configuration, its models, stores and state, built lazily.

Each role builds only what it uses, once per process: a compress worker loads the compressor and the
segmenter, an extract worker the extractor, the store owner the store, history and embedder. In
embedded mode nothing but the store worker may touch ``components`` (it opens the Qdrant folder).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import replace
from functools import cached_property
from typing import Any

import redis

from lightmem_core import factory
from lightmem_core.components import Components
from lightmem_core.config import BaseMemoryConfigs
from lightmem_core.extraction.base import Extractor
from lightmem_core.llm.base import LLMClient
from lightmem_core.sensory.compressors.base import Compressor
from lightmem_core.sensory.segmenters.base import Segmenter
from lightmem_core.spec import PipelineSpec
from lightmem_core.tokens import count_tokens
from lightmem_core.update.decision import UpdateDecider
from workers.llm_cache import reply_cache_for
from workers.ratelimit import RedisCallRecorder, RedisRateLimiter
from workers.redis_state import RedisState
from workers.settings import QUEUES, DistributedSettings


def redis_client(settings: DistributedSettings) -> redis.Redis:
    """A client for the broker's Redis that fails within the configured timeouts instead of hanging."""
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": settings.redis_connect_timeout_s,
        "socket_timeout": settings.redis_socket_timeout_s,
        "health_check_interval": 30,
    }
    if settings.redis_url.startswith("rediss://"):
        kwargs["ssl_cert_reqs"] = settings.redis_ssl_cert_reqs
    return redis.Redis.from_url(settings.redis_url, **kwargs)


def state_for(settings: DistributedSettings) -> RedisState:
    return RedisState(redis_client(settings), settings.key_prefix, settings.lock_timeout_s,
                      inflight_ttl_s=settings.queue_wait_s)


class WorkerParts:
    """The stages' backends and state for one worker process, each built on first use."""

    def __init__(self, settings: DistributedSettings) -> None:
        self.settings = settings
        self.config: BaseMemoryConfigs = settings.memory_cfg
        self.spec = PipelineSpec.of(self.config)
        self._lock = threading.Lock()  # threads of one extract worker build each part once
        self.count_tokens: Callable[[str], int] = count_tokens

    @cached_property
    def state(self) -> RedisState:
        return state_for(self.settings)

    @cached_property
    def compressor(self) -> Compressor | None:
        with self._lock:
            return factory.build_compressor(self.config)

    @cached_property
    def segmenter(self) -> Segmenter | None:
        with self._lock:  # loads its own embedder in the compress worker
            return factory.build_segmenter(self.config)

    @cached_property
    def llm_client(self) -> LLMClient | None:
        """The LLM client stack with the Redis-shared rate limit, Redis accounting and the call cache
        (``kv_cache``) every worker shares; ``None`` in verbatim mode."""
        if self.config.memory_manager.model_name == "verbatim":
            return None
        s, opts = self.settings, self.config.memory_manager.configs
        limiter = RedisRateLimiter(self.state.r, self.state.keys.llm_window,
                                   s.llm_requests_per_minute or opts.requests_per_minute,
                                   s.llm_tokens_per_minute or opts.tokens_per_minute)
        recorder = RedisCallRecorder(self.state.r, self.state.keys.stats)
        with self._lock:
            cache = reply_cache_for(s, broker=lambda: self.state.r)
            return factory.build_llm_client(self.config, recorder=recorder, limiter=limiter, cache=cache)

    @cached_property
    def extractor(self) -> Extractor:
        return factory.build_extractor(self.config, self.llm_client)

    @cached_property
    def decider(self) -> UpdateDecider | None:
        """The update's decider on the shared LLM stack; ``None``: exact duplicates only."""
        return factory.build_decider(self.config, self.llm_client) if self.llm_client is not None else None

    @cached_property
    def components(self) -> Components:
        """Store, history, embedder and BM25: only the store owner (or any worker with a Qdrant server).

        Its extractor and decider are this process's, on the shared rate limit and Redis accounting."""
        client = self.llm_client  # built first: it takes the lock too
        with self._lock:
            built = factory.build_components(self.config, llm_client=client)
        return replace(built, extractor=self.extractor, decider=self.decider)

    def queue_depths(self) -> tuple[dict[str, int], dict[str, int]]:
        """Messages waiting in each queue, and those delivered but not acknowledged (kombu's ``unacked``)."""
        queues = [self.settings.queue(role) for role in QUEUES]
        pipe = self.state.r.pipeline()
        for queue in queues:
            pipe.llen(queue)
        pipe.hvals("unacked")
        *lengths, held_raw = pipe.execute()
        held: dict[str, int] = {}
        for raw in held_raw:
            queue = json.loads(raw)[2]
            held[queue] = held.get(queue, 0) + 1
        return dict(zip(queues, (int(n) for n in lengths), strict=True)), held
