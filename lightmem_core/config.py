"""LightMem's configuration dictionary, accepted as its README shows it and normalised here.

Every option of LightMem's configuration table is a field of ``BaseMemoryConfigs`` with the table's
default. An option that cannot exist here (a FAISS index) is refused with ``NotSupportedError`` instead
of being silently ignored; unknown keys and wrong types fail with the key's path and what was expected.
``lightmem_core`` never reads the environment: ``load_config_file`` reads YAML, and the settings layer
in ``producers``/``workers`` adds environment overrides.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lightmem_core.errors import ConfigError, NotSupportedError

LIGHTMEM_DIR = ".lightmem"
DEFAULT_FORCE_TOKENS: tuple[str, ...] = ("\n", ".", "!", "?", ",")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --- sensory memory -------------------------------------------------------------------------------


class LLMLinguaModelConfig(_Strict):
    """Which token classifier to load (LightMem's ``llmlingua_config``)."""

    model_name: str
    device_map: str = "auto"
    use_llmlingua2: bool = True


class CompressionConfig(_Strict):
    """How much to keep: ``rate`` is the share of words kept, in (0, 1]."""

    rate: float = Field(0.6, gt=0.0, le=1.0)
    force_tokens: list[str] = Field(default_factory=lambda: list(DEFAULT_FORCE_TOKENS))
    batch_size: int = Field(32, ge=1)
    # Padded tokens per forward pass; None = 1024 on CPU (cache-sized, see compressors/batching.py), no cap on GPU.
    max_batch_tokens: int | None = Field(None, ge=1)
    # Longer messages pass through uncompressed (logged): scoring 1 MB on a CPU takes minutes.
    max_message_tokens: int = Field(16384, ge=1)


class EntropyConfig(_Strict):
    """Entropy compression: a causal LM at ``model_name``, or ``wordfreq`` for the model-free variant."""

    model_name: str = "wordfreq"
    device_map: str = "auto"
    language: str = "en"
    word_level_strategy: Literal["average", "first_token"] = "average"
    max_length: int | None = Field(None, ge=2)
    compress_rate: float | None = Field(None, gt=0.0, le=1.0)  # LightMem's key; overrides compress_config.rate
    # wordfreq only: numbers and capitalised words inside a sentence (names, months, days) are kept first
    protect_names_numbers: bool = False

    @model_validator(mode="before")
    @classmethod
    def _lightmem_device_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and "device" in data:
            data = dict(data)
            data.setdefault("device_map", data.pop("device"))
        return data


class PreCompressorOptions(_Strict):
    llmlingua_config: LLMLinguaModelConfig | None = None
    entropy_config: EntropyConfig | None = None
    compress_config: CompressionConfig = Field(default_factory=CompressionConfig)


class PreCompressorConfig(_Strict):
    model_name: Literal["llmlingua-2", "entropy_compress"] = "llmlingua-2"
    configs: PreCompressorOptions = Field(default_factory=PreCompressorOptions)

    @model_validator(mode="after")
    def _needs_its_model(self) -> PreCompressorConfig:
        if self.model_name == "llmlingua-2" and self.configs.llmlingua_config is None:
            raise ValueError("pre_compressor.configs.llmlingua_config.model_name (a model path) is required")
        return self


class TopicSegmenterOptions(_Strict):
    attention_layers: list[int] = Field(default_factory=lambda: [8, 9, 10, 11])
    window_turns: int = Field(3, ge=0)
    similarity_start: float = Field(0.2, ge=-1.0, le=1.0)
    similarity_step: float = Field(0.05, gt=0.0)
    similarity_max: float = Field(0.5, ge=-1.0, le=1.0)
    block_turns: int = Field(3, ge=1)
    sensory_buffer_tokens: int = Field(512, ge=16)
    model_name: str | None = None
    device_map: str = "auto"


class TopicSegmenterConfig(_Strict):
    model_name: Literal["llmlingua-2", "embedding"] = "llmlingua-2"
    configs: TopicSegmenterOptions = Field(default_factory=TopicSegmenterOptions)


# --- LLM ------------------------------------------------------------------------------------------

LLMBackend = Literal["openai", "deepseek", "qwen", "ollama", "vllm", "verbatim"]


class LLMConfig(_Strict):
    """Connection and sampling options of an OpenAI-compatible endpoint.

    LightMem names the base URL after the backend (``openai_base_url``, ``deepseek_base_url``...);
    all of those are read into ``base_url``.
    """

    model: str | None = None
    api_key: str | None = None
    base_url: str | None = None
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int = Field(4096, ge=1)
    timeout_s: float = Field(60.0, gt=0.0)
    max_retries: int = Field(5, ge=0)
    max_concurrency: int = Field(8, ge=1)
    # LightMemory only: extraction calls kept in flight in the background while add_memory returns
    # (0: add_memory makes them itself). The queues' counterpart is the extract workers' threads.
    background_extractions: int = Field(4, ge=0)
    short_term_capacity_tokens: int = Field(1024, ge=1)
    requests_per_minute: int = Field(0, ge=0)  # 0: unlimited (in-process; workers share theirs through Redis)
    tokens_per_minute: int = Field(0, ge=0)
    online_score_threshold: float = Field(0.8, ge=-1.0, le=1.0)  # update="online": neighbours at least this similar
    online_top_k: int = Field(5, ge=1)
    # Offline update: entries judged in one call, and calls in flight at once (LightMem runs 5 at a time).
    update_batch_size: int = Field(8, ge=1)
    update_max_in_flight: int = Field(5, ge=1)
    # The model reads images (OpenAI-style image_url parts): with images in messages and
    # multimodal memory, extraction sends them; False: they are left out, with one warning.
    vision: bool = False

    @model_validator(mode="before")
    @classmethod
    def _backend_named_base_url(cls, data: Any) -> Any:
        if isinstance(data, dict):
            named = [k for k in data if k.endswith("_base_url") and k != "base_url"]
            if named:
                data = dict(data)
                for key in named:
                    data.setdefault("base_url", data.pop(key))
        return data


class MemoryManagerConfig(_Strict):
    model_name: LLMBackend = "openai"
    configs: LLMConfig = Field(default_factory=LLMConfig)


# --- embedders and stores -------------------------------------------------------------------------


class EmbedderOptions(_Strict):
    model: str | None = None  # None: the bundled all-MiniLM-L6-v2
    embedding_dims: int | None = Field(None, ge=1)
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(64, ge=1)
    api_key: str | None = None
    base_url: str | None = None
    timeout_s: float = Field(30.0, gt=0.0)

    @model_validator(mode="before")
    @classmethod
    def _backend_named_base_url(cls, data: Any) -> Any:
        return LLMConfig._backend_named_base_url(data)  # type: ignore[operator]


class TextEmbedderConfig(_Strict):
    model_name: Literal["huggingface", "openai"] = "huggingface"
    configs: EmbedderOptions = Field(default_factory=EmbedderOptions)


class MultimodalEmbedderOptions(_Strict):
    """A CLIP-style model folder (sentence-transformers): images and text queries in one vector space."""

    model: str  # no CLIP weights are bundled: the path is required
    device: str = "auto"
    embedding_dims: int | None = Field(None, ge=1)
    batch_size: int = Field(16, ge=1)
    model_kwargs: dict[str, Any] = Field(default_factory=dict)


class MultimodalEmbedderConfig(_Strict):
    """``multimodal_embedder``: every image is embedded into the collection's ``image`` vector."""

    model_name: Literal["huggingface"] = "huggingface"
    configs: MultimodalEmbedderOptions


class QdrantOptions(_Strict):
    collection_name: str = "lightmem"
    embedding_model_dims: int | None = Field(None, ge=1)
    path: str | None = None
    url: str | None = None
    api_key: str | None = None
    on_disk: bool = False
    timeout_s: float = Field(10.0, gt=0.0)

    @model_validator(mode="before")
    @classmethod
    def _lightmem_host_port(cls, data: Any) -> Any:
        """LightMem's ``host`` and ``port`` name a server: read as ``url`` ``http://host:port``."""
        if isinstance(data, dict) and ("host" in data or "port" in data):
            data = dict(data)
            host, port = data.pop("host", None), data.pop("port", None)
            if host:
                if data.get("url"):
                    raise ValueError("give either 'url' or 'host'/'port', not both")
                address = str(host) if "://" in str(host) else f"http://{host}"
                data["url"] = f"{address}:{port or 6333}"
        return data

    @model_validator(mode="after")
    def _one_location(self) -> QdrantOptions:
        if self.path and self.url:
            raise ValueError("give either 'path' (embedded) or 'url' (server), not both")
        return self


def _faiss_not_built(data: Any, key: str) -> Any:
    if isinstance(data, dict) and str(data.get("model_name", "")).lower() == "faiss":
        raise NotSupportedError(f"{key}.model_name 'FAISS' is not supported: a FAISS index cannot filter searches by "
                                "user nor be shared between processes; use 'qdrant' (embedded folder or server)")
    return data


class EmbeddingRetrieverConfig(_Strict):
    model_name: Literal["qdrant"] = "qdrant"
    configs: QdrantOptions = Field(default_factory=QdrantOptions)

    @model_validator(mode="before")
    @classmethod
    def _faiss_not_built(cls, data: Any) -> Any:
        return _faiss_not_built(data, "embedding_retriever")


class SummaryRetrieverOptions(QdrantOptions):
    """LightMem's summary collection, plus how retrieval uses it.

    Without ``path`` or ``url`` the summaries live where the entries do (same folder or server), in
    their own collection. ``retrieval``: ``summaries_first`` searches the topic summaries, then the
    entries of the ``top_topics`` best topics (the rest of the limit from plain entry search);
    ``fused`` merges those entries with plain entry search by reciprocal rank fusion.
    """

    collection_name: str = "lightmem_summaries"
    top_topics: int = Field(3, ge=1)
    retrieval: Literal["summaries_first", "fused"] = "summaries_first"


class SummaryRetrieverConfig(_Strict):
    model_name: Literal["qdrant"] = "qdrant"
    configs: SummaryRetrieverOptions = Field(default_factory=SummaryRetrieverOptions)

    @model_validator(mode="before")
    @classmethod
    def _faiss_not_built(cls, data: Any) -> Any:
        return _faiss_not_built(data, "summary_retriever")


class BM25Options(_Strict):
    k1: float = Field(1.2, gt=0.0)
    b: float = Field(0.75, ge=0.0, le=1.0)
    avg_doc_tokens: float = Field(16.0, gt=0.0)
    # LightMem's "configs like top_k": how many memories retrieve() returns when the caller gives no limit.
    top_k: int | None = Field(None, ge=1)

    @property
    def encoder_options(self) -> dict[str, float]:
        """What the BM25 encoder itself takes."""
        return {"k1": self.k1, "b": self.b, "avg_doc_tokens": self.avg_doc_tokens}


class ContextRetrieverConfig(_Strict):
    model_name: Literal["BM25"] = "BM25"
    configs: BM25Options = Field(default_factory=BM25Options)


class LoggingConfig(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    file_enabled: bool = False
    log_dir: str | None = None
    console_enabled: bool = True


# --- the whole ------------------------------------------------------------------------------------

Strategy = Literal["embedding", "context", "hybrid"]


class BaseMemoryConfigs(_Strict):
    """LightMem's configuration table, field for field, with its defaults."""

    pre_compress: bool = False
    pre_compressor: PreCompressorConfig | None = None
    topic_segment: bool = False
    precomp_topic_shared: bool = False
    topic_segmenter: TopicSegmenterConfig | None = None
    messages_use: Literal["user_only", "assistant_only", "hybrid"] = "user_only"
    metadata_generate: bool = True
    text_summary: bool = True
    memory_manager: MemoryManagerConfig = Field(default_factory=MemoryManagerConfig)
    extract_threshold: float = Field(0.5, gt=0.0, le=1.0)
    index_strategy: Strategy | None = None
    text_embedder: TextEmbedderConfig | None = None
    multimodal_embedder: MultimodalEmbedderConfig | None = None
    history_db_path: str = os.path.join(LIGHTMEM_DIR, "history.db")
    # PostgreSQL instead of the SQLite file, for workers on several hosts: postgresql://user:pass@host:5432/db
    history_db_url: str | None = None
    retrieve_strategy: Strategy = "embedding"
    context_retriever: ContextRetrieverConfig | None = None
    embedding_retriever: EmbeddingRetrieverConfig | None = None
    summary_retriever: SummaryRetrieverConfig | None = None
    update: Literal["offline", "online"] = "offline"
    # The call cache (lightmem_core/llm/cache.py): replies replayed instead of calling the model again.
    kv_cache: bool = False
    kv_cache_path: str = os.path.join(LIGHTMEM_DIR, "kv_cache.db")  # SQLite, when no URL below applies
    # Where else it lives: postgresql://... or redis://... (workers only). Unset: PostgreSQL at
    # history_db_url when that is set (workers on several hosts), else SQLite at kv_cache_path.
    kv_cache_url: str | None = None
    kv_cache_max_entries: int = Field(100_000, ge=1)
    kv_cache_max_mb: float = Field(512.0, gt=0.0)
    graph_mem: bool = False  # entities and relations from the extraction call, as a graph (lightmem_core/graph)
    extraction_mode: Literal["flat", "event"] = "flat"
    # Retrieval of verbatim entries (docs/retrieval.md): the vectors come from the original message
    # rather than the compressed one that is returned; the dense vector also reads up to
    # ``index_context_turns`` previous turns of the entry's topic segment; a query that names one
    # speaker (or a name they introduced themselves with) also searches that speaker's entries.
    # ``index_plain_vector``: a second dense vector of the message alone, fused in hybrid search beside
    # the contextual one, so a fact among unrelated turns is still found by its own words.
    index_original: bool = False
    index_context_turns: int = Field(0, ge=0, le=16)
    index_plain_vector: bool = False
    speaker_match: bool = False
    # LightMemory only, when pre_compress or topic_segment runs: add_memory keeps its messages in the
    # history and returns, and a background thread compresses and segments up to this many queued
    # sessions (of every user) in one pass (lightmem_core/inbox.py). 0: add_memory compresses and
    # buffers them itself before it returns. The queues' counterpart is compress_batch_sessions.
    background_ingest_sessions: int = Field(32, ge=0)
    version: Literal["v1.1"] = "v1.1"
    logging: LoggingConfig | None = None

    @field_validator("history_db_path", "kv_cache_path")
    @classmethod
    def _non_empty_path(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty path")
        return value

    @field_validator("history_db_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")  # never echo it: it may hold a password
        return value or None

    @field_validator("kv_cache_url")
    @classmethod
    def _cache_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("postgresql://", "postgres://", "redis://", "rediss://", "unix://")):
            raise ValueError("must be a postgresql:// or redis:// URL")  # never echo it: it may hold a password
        return value or None

    @model_validator(mode="after")
    def _consistent(self) -> BaseMemoryConfigs:
        if self.pre_compress and self.pre_compressor is None:
            raise ValueError("pre_compress is True but pre_compressor is not configured")
        if self.topic_segment and self.topic_segmenter is None:
            raise ValueError("topic_segment is True but topic_segmenter is not configured")
        if self.precomp_topic_shared and not (self.pre_compress and self.topic_segment):
            raise ValueError("precomp_topic_shared needs both pre_compress and topic_segment")
        indexed = self.indexed_vectors
        needed = {"embedding": {"dense"}, "context": {"sparse"}, "hybrid": {"dense", "sparse"}}[self.retrieve_strategy]
        if not needed <= indexed:
            raise ValueError(
                f"retrieve_strategy {self.retrieve_strategy!r} needs vectors that "
                f"index_strategy {self.index_strategy!r} does not write"
            )
        if self.summary_retriever is not None and not self.text_summary:
            raise ValueError("summary_retriever needs text_summary: true (it indexes the topic summaries)")
        return self

    @property
    def indexed_vectors(self) -> set[str]:
        """Vectors written at index time. ``index_strategy=None`` writes both, so any strategy can read."""
        return {"embedding": {"dense"}, "context": {"sparse"}, "hybrid": {"dense", "sparse"}, None: {"dense", "sparse"}}[
            self.index_strategy
        ]

    @property
    def default_retrieve_limit(self) -> int:
        """How many memories a search returns when the caller gives no limit: LightMem's
        ``context_retriever.configs.top_k`` when set, else LightMem's ``retrieve`` default, 10."""
        top_k = self.context_retriever.configs.top_k if self.context_retriever is not None else None
        return top_k or 10

    @property
    def extraction_roles(self) -> set[str]:
        """Roles whose messages are compressed, counted and sent to extraction (``messages_use``)."""
        return {"user_only": {"user"}, "assistant_only": {"assistant"}, "hybrid": {"user", "assistant"}}[
            self.messages_use
        ]

    @property
    def short_term_threshold_tokens(self) -> int:
        """Extraction fires when the short-term buffer holds this many tokens.

        ``extract_threshold`` is the share of ``short_term_capacity_tokens`` (default 1024) that
        triggers extraction: LightMem's hard-coded 512 is the default 0.5.
        """
        capacity = self.memory_manager.configs.short_term_capacity_tokens
        return max(1, round(self.extract_threshold * capacity))


def parse_config(data: dict[str, Any] | BaseMemoryConfigs) -> BaseMemoryConfigs:
    """Validate a LightMem configuration dictionary; errors name the key path and what was expected."""
    if isinstance(data, BaseMemoryConfigs):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"configuration must be a dict, got {type(data).__name__}")
    try:
        return BaseMemoryConfigs.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, NotSupportedError):
                raise NotSupportedError(str(cause)) from exc
        raise ConfigError(_describe(exc)) from exc


_SECRET_KEYS = ("api_key", "history_db_url", "kv_cache_url")  # their values may hold a password: never shown


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(configuration)"
        given = err.get("input")
        shown = repr(given) if not isinstance(given, dict) else "a mapping"
        if key.endswith(_SECRET_KEYS):
            shown = "a value not shown"
        if err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
        else:
            lines.append(f"{key}: {err['msg']} (got {shown[:80]})")
    return "invalid configuration: " + "; ".join(lines)


def load_config_file(path: str | Path) -> BaseMemoryConfigs:
    """Read a YAML file holding a LightMem configuration dictionary."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"configuration file not found: {file}")
    data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    return parse_config(data)


def configure_logging(config: LoggingConfig | None) -> None:
    """Apply LightMem's ``logging`` option to the ``lightmem_core`` logger (never the root logger)."""
    if config is None:
        return
    logger = logging.getLogger("lightmem_core")
    logger.setLevel(config.level)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config.console_enabled and not any(getattr(h, "_lightmem", False) for h in logger.handlers):
        console = logging.StreamHandler()
        console.setFormatter(fmt)
        console._lightmem = True  # type: ignore[attr-defined]
        logger.addHandler(console)
    if config.file_enabled:
        log_dir = Path(config.log_dir or LIGHTMEM_DIR)
        log_dir.mkdir(parents=True, exist_ok=True)
        target = str((log_dir / "lightmem.log").resolve())
        if not any(getattr(h, "baseFilename", None) == target for h in logger.handlers):
            handler = logging.FileHandler(target, encoding="utf-8")
            handler.setFormatter(fmt)
            logger.addHandler(handler)
