"""Settings read at the edge, once per process: the one settings module of workers and producers.

``Settings`` holds the memory configuration: a YAML file (``LIGHTMEM_CONFIG_FILE``, default
``configs/default.yaml``, the embedded default) plus environment overrides of any key of LightMem's
configuration, ``LIGHTMEM_MEMORY__<KEY>`` with nested keys joined by ``__`` (for example
``LIGHTMEM_MEMORY__RETRIEVE_STRATEGY=hybrid``). ``DistributedSettings`` adds the broker, queues,
limits, schedules and Flower, so one object holds everything a worker, the producer or the command
line needs. Every field reads ``LIGHTMEM_<FIELD>``, e.g. ``LIGHTMEM_REDIS_URL=rediss://:pw@host:6380/0``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from lightmem_core.config import BaseMemoryConfigs, parse_config
from lightmem_core.errors import ConfigError
from workers.names import ROLES

QUEUES = ROLES

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


class _ConfigFileSource(PydanticBaseSettingsSource):
    """The YAML configuration file as the ``memory`` field, below the environment in priority.

    pydantic-settings merges its sources key by key, so ``LIGHTMEM_MEMORY__RETRIEVE_STRATEGY=hybrid``
    overrides that one key of the file and leaves the rest. The file is the one named by the sources
    above (``config_file=`` or ``LIGHTMEM_CONFIG_FILE``), else ``configs/default.yaml``.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        path = Path(self.current_state.get("config_file") or DEFAULT_CONFIG)
        if not path.is_file():
            raise ConfigError(f"configuration file not found: {path}")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        return {"memory": data}


class Settings(BaseSettings):
    """Process settings; environment variables prefixed ``LIGHTMEM_``."""

    model_config = SettingsConfigDict(env_prefix="LIGHTMEM_", env_nested_delimiter="__", extra="ignore")

    config_file: Path = DEFAULT_CONFIG
    memory: dict[str, Any] = {}  # LightMem's configuration: the file, then LIGHTMEM_MEMORY__* over it
    data_dir: Path = Path("../shared/data")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, dotenv_settings, file_secret_settings, _ConfigFileSource(settings_cls)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` wins key by key; nested dicts merge instead of replacing each other."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def memory_config(settings: Settings | None = None) -> BaseMemoryConfigs:
    """The memory configuration (the file with the environment's overrides), validated."""
    settings = settings or get_settings()
    return parse_config(with_llm_key(settings.memory, os.environ))


def with_llm_key(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Fill ``memory_manager.configs.api_key`` from the backend's variable (``OPENAI_API_KEY``,
    ``DEEPSEEK_API_KEY``, ``DASHSCOPE_API_KEY``) when the configuration gives none."""
    from lightmem_core.llm.openai_compat import BACKENDS

    manager = data.get("memory_manager") or {}
    backend = BACKENDS.get(str(manager.get("model_name", "openai")))
    configs = manager.get("configs") or {}
    if backend is None or backend.key_env is None or configs.get("api_key") or not environ.get(backend.key_env):
        return data
    return deep_merge(data, {"memory_manager": {"configs": {"api_key": environ[backend.key_env]}}})




class ApiKey(BaseModel):
    """One key of the HTTP API (and the MCP server) and the users it may touch: the ids in ``users``, or
    every id that starts with ``user_prefix`` (``""``: every user, an operator's key, which also reads the
    overview and the stats). ``name`` stands for the key in logs and errors; the key itself never shows."""

    model_config = ConfigDict(extra="forbid")

    key: SecretStr = Field(min_length=16)
    name: str | None = None
    users: list[str] | None = Field(None, min_length=1)
    user_prefix: str | None = None

    @model_validator(mode="after")
    def _one_scope(self) -> ApiKey:
        if (self.users is None) == (self.user_prefix is None):
            raise ValueError("give exactly one of users (a list of user ids) and user_prefix")
        return self


class DistributedSettings(Settings):
    """Everything the Celery application, the producer and the command line read from the environment."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str | None = None  # default: redis_url
    redis_ssl_cert_reqs: Literal["required", "optional", "none"] = "required"
    redis_connect_timeout_s: float = Field(3.0, gt=0)
    redis_socket_timeout_s: float = Field(10.0, gt=0)
    # How long the producer keeps retrying while Redis refuses connections (a restart), then fails clearly.
    producer_retry_s: float = Field(5.0, ge=0)
    redis_wait_replicas: int = Field(0, ge=0)  # >0: enqueue returns after WAIT confirms that many replicas
    # The largest task payload (its JSON), refused by the producer and dead-lettered by the workers.
    max_payload_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    key_prefix: str = "lightmem"
    queue_compress: str = "lightmem.compress"
    queue_extract: str = "lightmem.extract"
    queue_update: str = "lightmem.update"
    queue_store: str = "lightmem.store"
    task_time_limit_s: int = Field(900, gt=0)
    task_soft_time_limit_s: int = Field(840, gt=0)
    # A delivered message a worker stops holding (killed) goes back to its queue after this long; live
    # workers refresh theirs every quarter of it (``workers.transport``), however long their task runs.
    visibility_timeout_s: int = Field(60, ge=4)
    # How long work may wait in a queue (a backlog) before what waits for it stops waiting: queued input
    # that a drain holds back for, and a batch handed to the store queue, which no one takes over meanwhile.
    queue_wait_s: float = Field(3600.0, gt=0)
    max_retries: int = Field(8, ge=0)
    retry_backoff_max_s: int = Field(300, gt=0)
    result_expires_s: int = Field(600, gt=0)  # task results: counts and summaries only, kept 10 min
    reply_ttl_s: float = Field(120.0, gt=0)  # search and listing answers (memories) wait this long, read once
    # A search with no answer by then fails with one line (the embedded store's owner is down) and is
    # withdrawn, never run later; the owner answers with this many reader threads beside its writes.
    search_timeout_s: float = Field(5.0, gt=0)
    search_threads: int = Field(2, ge=1, le=64)
    # A user's lock outlives a killed holder by this long; a live holder renews it every third of it.
    lock_timeout_s: float = Field(15.0, gt=0)
    # A batch being extracted whose owner stopped renewing its lease (a dead worker) is taken over by the
    # next drain of its user; the idle check sends one. Owners renew every third of it while they work.
    batch_lease_s: float = Field(60.0, gt=0)
    compress_batch_sessions: int = Field(8, ge=1)
    # torch threads of a store worker (0: torch's default, every core). It embeds one batch's entries at a
    # time beside the compress worker, and a second thread of its own mostly contends with the compress
    # worker's: on 2 cores the queues' ingestion at 1 s per call went from 145 to 128 s (bench.pipeline).
    store_torch_threads: int = Field(1, ge=0)
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
    # Workers are background batch processes: on a host they share with the applications that enqueue,
    # they yield the CPU to them (Unix nice value added at start; 0 keeps the inherited priority).
    worker_nice: int = Field(10, ge=0, le=19)
    # Flower shows queued tasks as "sent"; each enqueue then publishes one event more (about 0.5 ms of CPU).
    task_sent_events: bool = True
    flower_port: int = Field(5555, ge=1, le=65535)
    flower_address: str = "127.0.0.1"
    flower_basic_auth: str | None = None  # "user:password[,user2:password2]"
    qdrant_url: str | None = None
    metrics_port: int = Field(0, ge=0, le=65535)  # Prometheus /metrics of this process; 0: off
    qdrant_api_key: str | None = None
    # The HTTP API (``lightmem api``) and the MCP server (``lightmem mcp``). API keys as JSON, e.g.
    # LIGHTMEM_API_KEYS='[{"key": "...", "name": "acme", "user_prefix": "acme:"}]'. With none, they
    # listen on 127.0.0.1 only, and every local caller may touch every user.
    api_keys: list[ApiKey] = []
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    api_ready_timeout_s: float = Field(2.0, gt=0)  # /readyz: how long the store (or its desk) may take
    mcp_user_id: str | None = Field(None, min_length=1)  # the user of MCP tool calls that name none
    mcp_api_key: SecretStr | None = None  # the MCP server over stdio acts with this key's scope

    @model_validator(mode="after")
    def _limits_consistent(self) -> DistributedSettings:
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ValueError("task_soft_time_limit_s must be below task_time_limit_s")
        return self

    @property
    def backend_url(self) -> str:
        return self.result_backend or self.redis_url

    def queue(self, role: str) -> str:
        """The queue name of a role: compress, extract, update or store."""
        return str(getattr(self, f"queue_{role}"))

    @cached_property
    def memory_cfg(self) -> BaseMemoryConfigs:
        """The memory configuration, with ``qdrant_url`` (when set) pointing the store at a server (the
        summary collection too, when ``summary_retriever`` is on and names no server of its own)."""
        config = memory_config(self)
        if not self.qdrant_url:
            return config
        data: dict[str, Any] = config.model_dump(exclude_none=True)
        server = {"embedding_retriever": {"configs": {"url": self.qdrant_url, "api_key": self.qdrant_api_key}}}
        merged = deep_merge(data, server)
        merged["embedding_retriever"]["configs"].pop("path", None)
        if "summary_retriever" in merged:  # without path or url it follows the entries to the server
            merged["summary_retriever"]["configs"].pop("path", None)
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
