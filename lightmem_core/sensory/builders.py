"""Builders of the sensory-memory backends, one per configured kind, for ``factory``'s maps.

Token classifiers are loaded once per process and device (``load_scorer``): with
``precomp_topic_shared`` the compressor and the segmenter get the same ``LinguaScorer``, so they
share the model, its memory of neighbour attention and, through it, the forward pass.
"""

from __future__ import annotations

from functools import lru_cache

from lightmem_core.config import BaseMemoryConfigs, EntropyConfig, PreCompressorConfig, TopicSegmenterConfig
from lightmem_core.devices import resolve_device
from lightmem_core.embedders.base import Embedder
from lightmem_core.errors import ConfigError
from lightmem_core.sensory.compressors.base import Compressor
from lightmem_core.sensory.compressors.entropy import EntropyCompressor
from lightmem_core.sensory.compressors.lingua_scorer import LinguaScorer
from lightmem_core.sensory.compressors.llmlingua2 import LLMLingua2Compressor
from lightmem_core.sensory.compressors.wordfreq_entropy import WordfreqEntropyCompressor
from lightmem_core.sensory.segmenters.base import Segmenter
from lightmem_core.sensory.segmenters.embedding import EmbeddingSegmenter
from lightmem_core.sensory.segmenters.llmlingua2 import LLMLingua2Segmenter


@lru_cache(maxsize=4)
def load_scorer(path: str, device: str, batch_size: int, attention: bool, max_text_tokens: int,
                max_batch_tokens: int | None = None) -> LinguaScorer:
    """One ``LinguaScorer`` per process for each model, device and mode (models are large)."""
    return LinguaScorer(path, device=device, batch_size=batch_size, attention=attention, max_text_tokens=max_text_tokens,
                        max_batch_tokens=max_batch_tokens)


def _pre(config: BaseMemoryConfigs) -> PreCompressorConfig:
    if config.pre_compressor is None:  # parse_config guarantees it when pre_compress is True
        raise ConfigError("pre_compressor is not configured")
    return config.pre_compressor


def _scorer_for_compressor(config: BaseMemoryConfigs) -> LinguaScorer:
    opts = _pre(config).configs
    if opts.llmlingua_config is None:
        raise ConfigError("pre_compressor.configs.llmlingua_config.model_name (a model path) is required")
    cc = opts.compress_config
    return load_scorer(opts.llmlingua_config.model_name, resolve_device(opts.llmlingua_config.device_map),
                       cc.batch_size, config.precomp_topic_shared, cc.max_message_tokens, cc.max_batch_tokens)


def _segmenter_options(config: BaseMemoryConfigs) -> TopicSegmenterConfig:
    return config.topic_segmenter or TopicSegmenterConfig()


def llmlingua2_compressor(config: BaseMemoryConfigs) -> Compressor:
    """``llmlingua-2``; with ``precomp_topic_shared`` it scores in shared windows with attention."""
    cc = _pre(config).configs.compress_config
    layers = _segmenter_options(config).configs.attention_layers if config.precomp_topic_shared else None
    return LLMLingua2Compressor(_scorer_for_compressor(config), cc.rate, cc.force_tokens, shared_layers=layers)


def entropy_compressor(config: BaseMemoryConfigs) -> Compressor:
    """``entropy_compress``: a causal LM at ``entropy_config.model_name``, or ``wordfreq`` (model-free)."""
    opts = _pre(config).configs
    ec, cc = opts.entropy_config or EntropyConfig(), opts.compress_config
    rate = ec.compress_rate if ec.compress_rate is not None else cc.rate
    if ec.model_name == "wordfreq":
        return WordfreqEntropyCompressor(rate, ec.language, cc.force_tokens, protect=ec.protect_names_numbers)
    return EntropyCompressor(ec.model_name, rate, device=ec.device_map, batch_size=cc.batch_size, max_length=ec.max_length,
                             word_level_strategy=ec.word_level_strategy, force_tokens=cc.force_tokens,
                             max_text_tokens=cc.max_message_tokens, max_batch_tokens=cc.max_batch_tokens)


def _fine(config: BaseMemoryConfigs, embedder: Embedder) -> EmbeddingSegmenter:
    o = _segmenter_options(config).configs
    roles = config.extraction_roles
    anchors = ("user",) if "user" in roles else tuple(sorted(roles))
    return EmbeddingSegmenter(embedder, o.similarity_start, o.similarity_step, o.similarity_max, anchors, o.block_turns)


def embedding_segmenter(config: BaseMemoryConfigs, embedder: Embedder) -> Segmenter:
    """``embedding``: similarity drops between neighbouring turns only."""
    return _fine(config, embedder)


def llmlingua2_segmenter(config: BaseMemoryConfigs, embedder: Embedder) -> Segmenter:
    """``llmlingua-2``: attention coarse boundaries, embedding fine boundaries (LightMem's method)."""
    o = _segmenter_options(config).configs
    if config.precomp_topic_shared:
        scorer = _scorer_for_compressor(config)
    else:
        lingua = config.pre_compressor.configs.llmlingua_config if config.pre_compressor else None
        path = o.model_name or (lingua.model_name if lingua else None)
        if path is None:
            raise ConfigError("topic_segmenter.configs.model_name: the llmlingua-2 segmenter needs a model path "
                              "(or a llmlingua-2 pre_compressor to share)")
        scorer = load_scorer(path, resolve_device(o.device_map), 32, True, 16384)
    roles = config.extraction_roles
    return LLMLingua2Segmenter(scorer, _fine(config, embedder), o.attention_layers, o.window_turns,
                               roles=tuple(sorted(roles)), shared=config.precomp_topic_shared)
