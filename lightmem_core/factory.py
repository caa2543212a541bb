"""The composition root of the library: configuration in, backend instances out.

The only name-to-class maps of the project live here, as literal dicts of imported classes. Every
model path is checked now, so a wrong path fails at ``from_config`` and not at first use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from lightmem_core.components import Components
from lightmem_core.config import BaseMemoryConfigs, TextEmbedderConfig
from lightmem_core.embedders.base import Embedder, ImageEmbedder
from lightmem_core.embedders.bm25 import BM25Encoder
from lightmem_core.embedders.clip import CLIPEmbedder
from lightmem_core.embedders.huggingface import HuggingFaceEmbedder
from lightmem_core.embedders.openai import OpenAIEmbedder
from lightmem_core.errors import ConfigError
from lightmem_core.extraction.base import Extractor, VerbatimExtractor
from lightmem_core.extraction.index_text import IndexTexts
from lightmem_core.extraction.llm import LLMExtractor
from lightmem_core.history import HistoryStore
from lightmem_core.history.postgres import PostgresDatabase
from lightmem_core.history.sqlite import SQLiteDatabase
from lightmem_core.llm.accounting import AccountingClient, CallRecorder
from lightmem_core.llm.base import LLMClient
from lightmem_core.llm.cache import CachingClient, ReplyCache
from lightmem_core.llm.cache_sql import SQLReplyCache
from lightmem_core.llm.openai_compat import OpenAICompatClient
from lightmem_core.llm.ratelimit import InProcessRateLimiter, RateLimiter
from lightmem_core.llm.retry import RetryingClient
from lightmem_core.llm.text_only import TextOnlyClient
from lightmem_core.retrieval import Retriever
from lightmem_core.sensory.builders import (
    embedding_segmenter,
    entropy_compressor,
    llmlingua2_compressor,
    llmlingua2_segmenter,
)
from lightmem_core.sensory.compressors.base import Compressor
from lightmem_core.sensory.segmenters.base import Segmenter
from lightmem_core.speakers import SpeakerNames
from lightmem_core.stores.base import MemoryStore
from lightmem_core.stores.edge import EdgeStore
from lightmem_core.stores.qdrant import QdrantStore
from lightmem_core.summaries import TopicSummaries
from lightmem_core.update.decision import UpdateDecider
from lightmem_core.update.llm import LLMUpdateDecider

log = logging.getLogger(__name__)


def _huggingface(cfg: TextEmbedderConfig) -> Embedder:
    opts = cfg.configs
    return HuggingFaceEmbedder(
        model=opts.model, device=str(opts.model_kwargs.get("device", "auto")), batch_size=opts.batch_size,
        embedding_dims=opts.embedding_dims, model_kwargs={k: v for k, v in opts.model_kwargs.items() if k != "device"},
    )


def _openai(cfg: TextEmbedderConfig) -> Embedder:
    opts = cfg.configs
    return OpenAIEmbedder(model=opts.model, api_key=opts.api_key, base_url=opts.base_url,
                          embedding_dims=opts.embedding_dims, batch_size=opts.batch_size, timeout_s=opts.timeout_s)


EMBEDDERS: dict[str, Callable[[TextEmbedderConfig], Embedder]] = {"huggingface": _huggingface, "openai": _openai}


def build_embedder(config: BaseMemoryConfigs) -> Embedder | None:
    """The text embedder; ``None`` only when nothing is indexed densely."""
    if "dense" not in config.indexed_vectors:
        return None
    cfg = config.text_embedder or TextEmbedderConfig()
    return EMBEDDERS[cfg.model_name](cfg)


def build_image_embedder(config: BaseMemoryConfigs) -> ImageEmbedder | None:
    """The CLIP-style model of ``multimodal_embedder``, or ``None``; a missing path fails here."""
    cfg = config.multimodal_embedder
    if cfg is None:
        return None
    opts = cfg.configs
    return CLIPEmbedder(model=opts.model, device=opts.device, batch_size=opts.batch_size,
                        embedding_dims=opts.embedding_dims, model_kwargs=opts.model_kwargs)


def build_store(config: BaseMemoryConfigs, dims: int, image_dims: int | None = None) -> MemoryStore:
    """The entries' collection: a Qdrant server at ``url``, else an embedded Edge folder; with ``image_dims``
    it has the ``image`` vector too."""
    retriever = config.embedding_retriever
    opts = retriever.configs if retriever is not None else None
    declared = opts.embedding_model_dims if opts else None
    if declared is not None and declared != dims:
        raise ConfigError(f"embedding_retriever.configs.embedding_model_dims={declared} but the embedder gives {dims}")
    collection = opts.collection_name if opts else "lightmem"
    if opts is not None and opts.url:
        return QdrantStore(collection=collection, dims=dims, url=opts.url, api_key=opts.api_key, on_disk=opts.on_disk,
                           timeout_s=opts.timeout_s, image_dims=image_dims, plain_vector=config.index_plain_vector)
    return EdgeStore(collection=collection, dims=dims, path=_entries_path(config), on_disk=opts.on_disk if opts else False,
                     image_dims=image_dims, plain_vector=config.index_plain_vector)


def _entries_path(config: BaseMemoryConfigs) -> str:
    """The embedded folder of the entries: ``embedding_retriever.configs.path``, else beside the history."""
    opts = config.embedding_retriever.configs if config.embedding_retriever is not None else None
    return (opts.path if opts else None) or os.path.join(os.path.dirname(config.history_db_path) or ".", "qdrant")


def build_summaries(config: BaseMemoryConfigs, dims: int) -> TopicSummaries | None:
    """The summary collection (``summary_retriever``), or ``None``. Without its own ``path`` or ``url`` it
    lives where the entries do; an embedded summary store beside a server one (or the reverse) is
    refused, since every process that searches a server would then open the embedded folder."""
    if config.summary_retriever is None:
        return None
    opts = config.summary_retriever.configs
    entries = config.embedding_retriever.configs if config.embedding_retriever is not None else None
    if opts.embedding_model_dims is not None and opts.embedding_model_dims != dims:
        raise ConfigError(f"summary_retriever.configs.embedding_model_dims={opts.embedding_model_dims} "
                          f"but the embedder gives {dims}")
    entries_url = entries.url if entries is not None else None
    url, api_key = opts.url, opts.api_key
    if url is None and opts.path is None and entries_url is not None:
        url, api_key = entries_url, api_key or (entries.api_key if entries is not None else None)
    if (url is None) != (entries_url is None):
        raise ConfigError("summary_retriever and embedding_retriever: both embedded (path) or both on a Qdrant "
                          "server (url), not one of each")
    entries_collection = entries.collection_name if entries is not None else "lightmem"
    same_place = (url == entries_url) if url is not None else (
        os.path.abspath(opts.path or _entries_path(config)) == os.path.abspath(_entries_path(config)))
    if same_place and opts.collection_name == entries_collection:
        raise ConfigError(f"summary_retriever.configs.collection_name {opts.collection_name!r} is the entries' "
                          "collection; give the summaries their own")
    store: MemoryStore
    if url is not None:
        store = QdrantStore(collection=opts.collection_name, dims=dims, url=url, api_key=api_key,
                            on_disk=opts.on_disk, timeout_s=opts.timeout_s)
    else:
        store = EdgeStore(collection=opts.collection_name, dims=dims, path=opts.path or _entries_path(config),
                          on_disk=opts.on_disk)
    return TopicSummaries(store, top_topics=opts.top_topics, retrieval=opts.retrieval)


# Every backend name speaks the OpenAI API; the name picks base URL, default model and key variable.
LLM_BACKENDS: dict[str, type[OpenAICompatClient]] = {
    "openai": OpenAICompatClient, "deepseek": OpenAICompatClient, "qwen": OpenAICompatClient,
    "ollama": OpenAICompatClient, "vllm": OpenAICompatClient,
}


def build_reply_cache(config: BaseMemoryConfigs) -> ReplyCache | None:
    """The call cache when ``kv_cache`` is on (and an LLM is configured), else ``None``."""
    if not config.kv_cache or config.memory_manager.model_name == "verbatim":
        return None
    return open_reply_cache(config)


def open_reply_cache(config: BaseMemoryConfigs) -> ReplyCache:
    """The call cache where the configuration puts it, on or off (``lightmem cache`` reads and clears it).

    ``kv_cache_url`` (PostgreSQL) when set; else PostgreSQL at ``history_db_url`` when that is set, so
    workers on several hosts share it; else SQLite at ``kv_cache_path`` (processes on one host). A
    ``redis://`` URL is built by the workers (``lightmem_core`` imports no Redis client).
    """
    bounds = {"max_entries": config.kv_cache_max_entries, "max_bytes": int(config.kv_cache_max_mb * 2**20)}
    url = config.kv_cache_url or config.history_db_url
    if url is None:
        return SQLReplyCache(SQLiteDatabase(config.kv_cache_path), **bounds)
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("kv_cache_url: a Redis call cache is built by the workers (lightmem worker ...); "
                          "in one process use kv_cache_path (SQLite) or a postgresql:// URL")
    return SQLReplyCache(PostgresDatabase(url, max_connections=4), **bounds)


def build_llm_client(config: BaseMemoryConfigs, recorder: CallRecorder | None = None,
                     limiter: RateLimiter | None = None, cache: ReplyCache | None = None) -> LLMClient | None:
    """The LLM client stack (the call cache around retries around accounting around the backend);
    ``None`` in verbatim mode.

    ``recorder`` (the history store) gets every attempt and every replay; ``limiter`` defaults to an
    in-process limit when ``requests_per_minute``/``tokens_per_minute`` are set. Workers pass their
    Redis limiter. ``cache`` defaults to ``build_reply_cache``'s when ``kv_cache`` is on.
    """
    name, opts = config.memory_manager.model_name, config.memory_manager.configs
    if name == "verbatim":
        return None
    backend = LLM_BACKENDS[name](name, opts)
    client: LLMClient = backend if opts.vision else TextOnlyClient(backend)
    if recorder is not None:
        client = AccountingClient(client, recorder, model=opts.model)
    if limiter is None and (opts.requests_per_minute or opts.tokens_per_minute):
        limiter = InProcessRateLimiter(opts.requests_per_minute, opts.tokens_per_minute)
    client = RetryingClient(client, max_retries=opts.max_retries, max_concurrency=opts.max_concurrency, limiter=limiter)
    cache = cache if cache is not None else build_reply_cache(config)
    if cache is None:
        return client
    params = {"backend": name, "model": backend.model, "temperature": opts.temperature, "top_p": opts.top_p,
              "max_tokens": opts.max_tokens, **({"vision": True} if opts.vision else {})}
    return CachingClient(client, cache, params, recorder)


def check_llm(config: BaseMemoryConfigs) -> None:
    """``ConfigError`` when the configured LLM is unreachable or refuses the key; nothing in verbatim mode."""
    name, opts = config.memory_manager.model_name, config.memory_manager.configs
    if name != "verbatim":
        LLM_BACKENDS[name](name, opts).check()


def build_extractor(config: BaseMemoryConfigs, client: LLMClient | None = None) -> Extractor:
    """Verbatim or LLM extraction; ``client`` defaults to a new stack without accounting."""
    if config.memory_manager.model_name == "verbatim":
        log.info("extraction runs in verbatim mode: one entry per %s message, no LLM", config.messages_use)
        if config.metadata_generate or config.text_summary:
            log.warning("metadata_generate and text_summary need an LLM; verbatim mode stores entries without them")
        if config.graph_mem:
            log.warning("graph_mem needs an LLM (entities and relations come from the extraction call); "
                        "verbatim mode builds no graph, so graph_hops finds nothing")
        if config.extraction_mode == "event":
            log.warning("extraction_mode 'event' needs an LLM (its relational call); verbatim mode stores user turns only")
        return VerbatimExtractor(config.extraction_roles, IndexTexts(config.index_original, config.index_context_turns))
    client = client or build_llm_client(config)
    assert client is not None
    return LLMExtractor(client, config.extraction_roles, metadata=config.metadata_generate, summary=config.text_summary,
                        graph=config.graph_mem, event=config.extraction_mode == "event")


def build_decider(config: BaseMemoryConfigs, client: LLMClient | None = None) -> UpdateDecider | None:
    """The LLM update decider; ``None`` in verbatim mode (the update then merges exact duplicates only)."""
    client = client or build_llm_client(config)
    if client is None:
        return None
    opts = config.memory_manager.configs
    return LLMUpdateDecider(client, batch_size=opts.update_batch_size, max_in_flight=opts.update_max_in_flight)


COMPRESSORS: dict[str, Callable[[BaseMemoryConfigs], Compressor]] = {
    "llmlingua-2": llmlingua2_compressor, "entropy_compress": entropy_compressor,
}
SEGMENTERS: dict[str, Callable[[BaseMemoryConfigs, Embedder], Segmenter]] = {
    "llmlingua-2": llmlingua2_segmenter, "embedding": embedding_segmenter,
}


def build_compressor(config: BaseMemoryConfigs) -> Compressor | None:
    """The pre-compressor, or ``None`` when ``pre_compress`` is off."""
    if not config.pre_compress or config.pre_compressor is None:
        return None
    return COMPRESSORS[config.pre_compressor.model_name](config)


def build_segmenter(config: BaseMemoryConfigs, embedder: Embedder | None = None) -> Segmenter | None:
    """The topic segmenter, or ``None`` when ``topic_segment`` is off; ``embedder`` gives fine boundaries."""
    if not config.topic_segment or config.topic_segmenter is None:
        return None
    if embedder is None:
        embedder = build_embedder(config) or HuggingFaceEmbedder(device="auto")
    return SEGMENTERS[config.topic_segmenter.model_name](config, embedder)


def build_history(config: BaseMemoryConfigs) -> HistoryStore:
    """PostgreSQL at ``history_db_url`` when set (workers on several hosts), else SQLite at ``history_db_path``."""
    if config.history_db_url:
        return HistoryStore(PostgresDatabase(config.history_db_url))
    return HistoryStore(config.history_db_path)


def build_bm25(config: BaseMemoryConfigs) -> BM25Encoder | None:
    """The BM25 encoder, or ``None`` when nothing is indexed sparsely."""
    if "sparse" not in config.indexed_vectors:
        return None
    opts = config.context_retriever.configs if config.context_retriever else None
    return BM25Encoder(**opts.encoder_options) if opts else BM25Encoder()


def build_retriever(config: BaseMemoryConfigs) -> Retriever:
    """What searching needs and nothing more (no history, no LLM): a process that only searches."""
    embedder = build_embedder(config)
    image_embedder = build_image_embedder(config)
    dims = embedder.dims if embedder else 1
    store = build_store(config, dims, image_embedder.dims if image_embedder else None)
    history = build_history(config)
    return Retriever(store=store, embedder=embedder, bm25=build_bm25(config), strategy=config.retrieve_strategy,
                     image_embedder=image_embedder,
                     history=history, summaries=build_summaries(config, dims), graph=config.graph_mem,
                     speakers=SpeakerNames(history) if config.speaker_match else None)


def build_components(config: BaseMemoryConfigs, embedder: Embedder | None = None,
                     llm_client: LLMClient | None = None) -> Components:
    """Build every backend the configuration names, failing early on bad paths or unbuilt options.

    ``embedder`` lets a caller share one loaded embedder between several memories (tests, eval);
    ``llm_client`` one LLM client stack (the workers' own, with Redis accounting and rate limit).
    """
    history = build_history(config)
    reply_cache = build_reply_cache(config) if llm_client is None else None
    client = llm_client or build_llm_client(config, recorder=history, cache=reply_cache)
    extractor = build_extractor(config, client)
    if embedder is None:
        embedder = build_embedder(config)
    elif "dense" not in config.indexed_vectors:
        embedder = None
    bm25 = build_bm25(config)
    compressor = build_compressor(config)
    segmenter = build_segmenter(config, embedder)
    image_embedder = build_image_embedder(config)
    dims = embedder.dims if embedder else 1
    store = build_store(config, dims, image_embedder.dims if image_embedder else None)
    return Components(store=store, history=history, extractor=extractor, embedder=embedder, bm25=bm25,
                      image_embedder=image_embedder,
                      compressor=compressor, segmenter=segmenter, decider=build_decider(config, client),
                      reply_cache=reply_cache, summaries=build_summaries(config, dims),
                      speakers=SpeakerNames(history) if config.speaker_match else None)
