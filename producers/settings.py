"""Settings read at the edge: a YAML configuration file plus environment overrides.

``LIGHTMEM_CONFIG_FILE`` names the YAML file (default: ``configs/default.yaml``, the embedded
default). Any key of LightMem's configuration can be overridden with ``LIGHTMEM_MEMORY__<KEY>``,
nested keys joined by ``__``, e.g. ``LIGHTMEM_MEMORY__RETRIEVE_STRATEGY=hybrid`` or
``LIGHTMEM_MEMORY__MEMORY_MANAGER__CONFIGS__MODEL=gpt-4o-mini``. Read once per process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings, SettingsConfigDict

from lightmem_core.config import BaseMemoryConfigs, parse_config
from lightmem_core.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


class Settings(BaseSettings):
    """Process settings; environment variables prefixed ``LIGHTMEM_``."""

    model_config = SettingsConfigDict(env_prefix="LIGHTMEM_", env_nested_delimiter="__", extra="ignore")

    config_file: Path = DEFAULT_CONFIG
    memory: dict[str, Any] = {}
    data_dir: Path = Path("../shared/data")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


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
    """The memory configuration: YAML file, then environment overrides, validated."""
    settings = settings or get_settings()
    if not settings.config_file.is_file():
        raise ConfigError(f"configuration file not found: {settings.config_file}")
    data = yaml.safe_load(settings.config_file.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{settings.config_file}: expected a mapping at the top level")
    return parse_config(with_llm_key(deep_merge(data, _lower_keys(settings.memory)), os.environ))


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


def _lower_keys(data: dict[str, Any]) -> dict[str, Any]:
    # Environment variable names arrive upper- or lower-case depending on the platform.
    return {k.lower(): _lower_keys(v) if isinstance(v, dict) else v for k, v in data.items()}
