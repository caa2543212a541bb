"""The systems an evaluation compares: the configured pipeline and raw-turn baselines.

- ``default``: ``LightMemory`` built from the configuration file (``configs/default.yaml`` unless
  another is given), exactly as it says at run time.
- ``raw-dense``: every turn stored as it is (all roles, no compression, no segmentation, verbatim
  entries), dense retrieval.
- ``raw-hybrid``: the same store as ``raw-dense`` (one ingest writes both vectors), dense and BM25
  fused (reciprocal rank fusion).
- ``raw-bm25``: the same turns in a BM25-only store (its own, cheaper ingest), BM25 retrieval.

Each system gets its own history database and embedded Qdrant folder under the run's work folder;
all share one embedder instance, so every figure compares like with like.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightmem_core.config import BaseMemoryConfigs, parse_config
from lightmem_core.embedders.base import Embedder
from lightmem_core.errors import ConfigError
from lightmem_core.factory import build_components
from lightmem_core.memory import LightMemory

DEFAULT = "default"
RAW_DENSE = "raw-dense"
RAW_BM25 = "raw-bm25"
RAW_HYBRID = "raw-hybrid"
ALL_SYSTEMS: tuple[str, ...] = (DEFAULT, RAW_DENSE, RAW_HYBRID, RAW_BM25)
# (index, retrieve): raw-dense and raw-hybrid index alike, so they share one ingest.
_RAW_STRATEGY = {RAW_DENSE: ("hybrid", "embedding"), RAW_BM25: ("context", "context"), RAW_HYBRID: ("hybrid", "hybrid")}


@dataclass(frozen=True)
class SystemSpec:
    """A named configuration; its storage paths are set per run by ``with_paths``."""

    name: str
    description: str
    config: BaseMemoryConfigs


def describe(config: BaseMemoryConfigs) -> str:
    """One line naming what a configuration does to the turns before they are stored."""
    parts = [f"messages_use={config.messages_use}", f"retrieve={config.retrieve_strategy}"]
    if config.pre_compress and config.pre_compressor is not None:
        pc = config.pre_compressor
        parts.append(f"pre_compress={pc.model_name}@rate={pc.configs.compress_config.rate}")
    if config.topic_segment and config.topic_segmenter is not None:
        parts.append(f"topic_segment={config.topic_segmenter.model_name}")
    parts.append(f"extraction={config.memory_manager.model_name}")
    return ", ".join(parts)


def raw_turn_config(name: str, base: BaseMemoryConfigs) -> BaseMemoryConfigs:
    """A raw-turn baseline: ``base``'s embedder, every turn stored verbatim, one retrieval strategy."""
    index, retrieve = _RAW_STRATEGY[name]
    data: dict[str, Any] = {
        "pre_compress": False,
        "topic_segment": False,
        "messages_use": "hybrid",
        "metadata_generate": False,
        "text_summary": False,
        "memory_manager": {"model_name": "verbatim"},
        "extract_threshold": base.extract_threshold,
        "index_strategy": index,
        "retrieve_strategy": retrieve,
        "update": "offline",
    }
    if base.text_embedder is not None:
        data["text_embedder"] = base.text_embedder.model_dump()
    if base.context_retriever is not None:
        data["context_retriever"] = base.context_retriever.model_dump()
    return parse_config(data)


def build_specs(default_config: BaseMemoryConfigs, names: tuple[str, ...] = ALL_SYSTEMS) -> list[SystemSpec]:
    """The specs for ``names`` (any of ``ALL_SYSTEMS``), in the order given."""
    unknown = [n for n in names if n not in ALL_SYSTEMS]
    if unknown:
        raise ConfigError(f"systems: unknown {unknown}; expected some of {list(ALL_SYSTEMS)}")
    specs = []
    for name in names:
        config = default_config if name == DEFAULT else raw_turn_config(name, default_config)
        specs.append(SystemSpec(name, describe(config), config))
    return specs


def with_paths(config: BaseMemoryConfigs, folder: Path) -> BaseMemoryConfigs:
    """A copy of ``config`` whose history and embedded Qdrant live in ``folder`` (never a server)."""
    data = config.model_dump()
    data["history_db_path"] = str(folder / "history.db")
    retriever = dict(data.get("embedding_retriever") or {"model_name": "qdrant", "configs": {}})
    options = dict(retriever.get("configs") or {})
    options.update({"path": str(folder / "qdrant"), "url": None, "api_key": None, "collection_name": "eval"})
    retriever["configs"] = options
    data["embedding_retriever"] = retriever
    return parse_config(data)


def open_memory(spec: SystemSpec, folder: Path, embedder: Embedder | None) -> LightMemory:
    """A fresh ``LightMemory`` for ``spec`` in ``folder``, using the run's shared embedder."""
    folder.mkdir(parents=True, exist_ok=True)
    config = with_paths(spec.config, folder)
    return LightMemory(config, build_components(config, embedder=embedder))
