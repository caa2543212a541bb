"""LightMem's memory pipeline as a library: usable alone, without Celery or Redis."""

# First, before anything imports torch: OpenMP reads its wait policy when torch loads it.
from lightmem_core import openmp  # noqa: F401  # isort: skip
from lightmem_core.config import BaseMemoryConfigs, load_config_file, parse_config
from lightmem_core.errors import (
    ConfigError,
    ExtractionParseError,
    InvalidInput,
    LightMemError,
    ModelLoadError,
    NotSupportedError,
    StoreError,
    TransientError,
)
from lightmem_core.memory import LightMemory
from lightmem_core.models import MemoryEntry, Message, RetrievedMemory, Session, TopicSegment

__all__ = [
    "BaseMemoryConfigs",
    "ConfigError",
    "ExtractionParseError",
    "InvalidInput",
    "LightMemError",
    "LightMemory",
    "MemoryEntry",
    "Message",
    "ModelLoadError",
    "NotSupportedError",
    "RetrievedMemory",
    "Session",
    "StoreError",
    "TopicSegment",
    "TransientError",
    "load_config_file",
    "parse_config",
]
