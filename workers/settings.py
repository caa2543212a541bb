"""Settings of the distributed system: broker, queues, limits, schedules, Flower, read once per process.

They extend ``producers.settings.Settings`` (the YAML memory configuration plus ``LIGHTMEM_MEMORY__*``
overrides), so one object holds everything a worker, the producer or the command line needs. Every
field reads ``LIGHTMEM_<FIELD>`` from the environment, e.g. ``LIGHTMEM_REDIS_URL=rediss://:pw@host:6380/0``.
"""

from __future__ import annotations

from functools import cached_property, lru_cache
from typing import Any, Literal

from pydantic import Field, model_validator

from lightmem_core.config import BaseMemoryConfigs
from producers.settings import Settings, deep_merge, memory_config

QUEUES = ("compress", "extract", "update", "store")


class DistributedSettings(Settings):
    """Everything the Celery application, the producer and the command line read from the environment."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str | None = None  # default: redis_url
    redis_ssl_cert_reqs: Literal["required", "optional", "none"] = "required"
    redis_connect_timeout_s: float = Field(3.0, gt=0)
    redis_socket_timeout_s: float = Field(10.0, gt=0)
    redis_wait_replicas: int = Field(0, ge=0)  # >0: enqueue returns after WAIT confirms that many replicas
    key_prefix: str = "lightmem"
    queue_compress: str = "lightmem.compress"
    queue_extract: str = "lightmem.extract"
    queue_update: str = "lightmem.update"
    queue_store: str = "lightmem.store"
    task_time_limit_s: int = Field(900, gt=0)
    task_soft_time_limit_s: int = Field(840, gt=0)
    visibility_timeout_s: int = Field(3600, gt=0)
    max_retries: int = Field(8, ge=0)
    retry_backoff_max_s: int = Field(300, gt=0)
    result_expires_s: int = Field(86400, gt=0)
    lock_timeout_s: float = Field(300.0, gt=0)
    compress_batch_sessions: int = Field(8, ge=1)
    max_buffer_tokens: int = Field(8192, ge=1)  # size limit: drain even while the user's sessions are in flight
    idle_flush_s: float = Field(300.0, gt=0)
    idle_check_s: float = Field(60.0, gt=0)
    update_crontab: str = "0 3 * * *"
    update_interval_s: float | None = Field(None, gt=0)  # set: the update runs every N s instead (tests, demo)
    update_top_k: int = Field(20, ge=1)
    update_keep_top_n: int = Field(10, ge=1)
    update_score_threshold: float = Field(0.8, ge=0, le=1)
    llm_requests_per_minute: int = Field(0, ge=0)  # 0: unlimited
    llm_tokens_per_minute: int = Field(0, ge=0)
    flower_port: int = Field(5555, ge=1, le=65535)
    flower_address: str = "127.0.0.1"
    flower_basic_auth: str | None = None  # "user:password[,user2:password2]"
    qdrant_url: str | None = None
    metrics_port: int = Field(0, ge=0, le=65535)  # Prometheus /metrics of this process; 0: off
    qdrant_api_key: str | None = None

    @model_validator(mode="after")
    def _limits_consistent(self) -> DistributedSettings:
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ValueError("task_soft_time_limit_s must be below task_time_limit_s")
        if self.visibility_timeout_s <= self.task_time_limit_s:
            # Otherwise Redis re-delivers a task that is still running, and it runs twice at once.
            raise ValueError("visibility_timeout_s must exceed task_time_limit_s")
        return self

    @property
    def backend_url(self) -> str:
        return self.result_backend or self.redis_url

    def queue(self, role: str) -> str:
        """The queue name of a role: compress, extract, update or store."""
        return str(getattr(self, f"queue_{role}"))

    @cached_property
    def memory_cfg(self) -> BaseMemoryConfigs:
        """The memory configuration, with ``qdrant_url`` (when set) pointing the store at a server."""
        config = memory_config(self)
        if not self.qdrant_url:
            return config
        data: dict[str, Any] = config.model_dump(exclude_none=True)
        server = {"embedding_retriever": {"configs": {"url": self.qdrant_url, "api_key": self.qdrant_api_key}}}
        merged = deep_merge(data, server)
        merged["embedding_retriever"]["configs"].pop("path", None)
        return BaseMemoryConfigs.model_validate(merged)

    @property
    def embedded_store(self) -> bool:
        """True when the store is an embedded Qdrant folder that only the store worker may open."""
        opts = self.memory_cfg.embedding_retriever
        return not (opts is not None and opts.configs.url)


@lru_cache(maxsize=1)
def get_settings() -> DistributedSettings:
    """The process's settings, read from the environment once."""
    return DistributedSettings()
