"""``Components``: the wired backends one driver works with (built by ``lightmem_core.factory``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lightmem_core.embedders.base import Embedder, ImageEmbedder
from lightmem_core.embedders.bm25 import BM25Encoder
from lightmem_core.extraction.base import Extractor
from lightmem_core.history import HistoryStore
from lightmem_core.llm.cache import ReplyCache
from lightmem_core.sensory.compressors.base import Compressor
from lightmem_core.sensory.segmenters.base import Segmenter
from lightmem_core.speakers import SpeakerNames
from lightmem_core.stores.base import MemoryStore
from lightmem_core.summaries import TopicSummaries
from lightmem_core.tokens import count_tokens
from lightmem_core.update.decision import UpdateDecider


@dataclass
class Components:
    """Everything a ``LightMemory`` works with; tests and workers may pass their own instances."""

    store: MemoryStore
    history: HistoryStore
    extractor: Extractor
    embedder: Embedder | None = None
    bm25: BM25Encoder | None = None
    compressor: Compressor | None = None
    segmenter: Segmenter | None = None
    count_tokens: Callable[[str], int] = count_tokens
    decider: UpdateDecider | None = None  # None: the model-free exact-duplicate decider
    reply_cache: ReplyCache | None = None  # the call cache (kv_cache) that the LLM client replays from
    image_embedder: ImageEmbedder | None = None  # multimodal_embedder: images into the collection's image vector
    summaries: TopicSummaries | None = None  # summary_retriever: topic summaries indexed and searched first
    speakers: SpeakerNames | None = None  # speaker_match: speakers' names recorded at store, matched in queries
