"""``PipelineSpec``: what the stages read, normalised once from LightMem's configuration.

The LightMem-shaped ``BaseMemoryConfigs`` stays the public input (its keys are LightMem's, nested as
LightMem nests them); the stages read this small, flat, frozen record instead, built once per driver
(``LightMemory``, a worker process), so no stage digs through the configuration's shape.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightmem_core.config import BaseMemoryConfigs, Strategy


@dataclass(frozen=True)
class PipelineSpec:
    roles: frozenset[str]  # messages_use: the roles compressed, counted and extracted
    threshold_tokens: int  # extract_threshold × short_term_capacity_tokens
    sensory_capacity_tokens: int  # the sensory buffer's size before topics are cut
    online_update: bool  # update: online
    online_score_threshold: float
    online_top_k: int
    retrieve_strategy: Strategy
    default_limit: int  # memories retrieve() returns without a limit: context_retriever's top_k, else 10
    graph_mem: bool = False  # the extraction call also returns entities and relations; retrieve walks them

    @classmethod
    def of(cls, config: BaseMemoryConfigs) -> PipelineSpec:
        opts = config.memory_manager.configs
        segmenter = config.topic_segmenter
        return cls(
            roles=frozenset(config.extraction_roles),
            threshold_tokens=config.short_term_threshold_tokens,
            sensory_capacity_tokens=segmenter.configs.sensory_buffer_tokens if segmenter else 512,
            online_update=config.update == "online",
            online_score_threshold=opts.online_score_threshold,
            online_top_k=opts.online_top_k,
            retrieve_strategy=config.retrieve_strategy,
            default_limit=config.default_retrieve_limit,
            graph_mem=config.graph_mem,
        )
