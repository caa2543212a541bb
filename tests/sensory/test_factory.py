"""Every registered compressor and segmenter kind builds from LightMem's configuration keys."""

from __future__ import annotations

from typing import Any

import pytest

from lightmem_core import parse_config
from lightmem_core.errors import ConfigError, ModelLoadError
from lightmem_core.factory import COMPRESSORS, SEGMENTERS, build_compressor, build_segmenter
from lightmem_core.sensory.compressors.entropy import EntropyCompressor
from lightmem_core.sensory.compressors.llmlingua2 import LLMLingua2Compressor
from lightmem_core.sensory.compressors.wordfreq_entropy import WordfreqEntropyCompressor
from lightmem_core.sensory.segmenters.embedding import EmbeddingSegmenter
from lightmem_core.sensory.segmenters.llmlingua2 import LLMLingua2Segmenter


def test_registered_kinds_are_the_configurable_ones() -> None:
    assert set(COMPRESSORS) == {"llmlingua-2", "entropy_compress"}
    assert set(SEGMENTERS) == {"llmlingua-2", "embedding"}


@pytest.mark.parametrize("kind,expected", [("llmlingua-2", LLMLingua2Compressor), ("entropy-lm", EntropyCompressor),
                                           ("wordfreq", WordfreqEntropyCompressor)])
def test_every_compressor_builds(kind: str, expected: type, lingua_path: str, causal_path: str, memory_config: Any) -> None:
    pre: dict[str, Any] = {
        "llmlingua-2": {"model_name": "llmlingua-2", "configs": {"llmlingua_config": {"model_name": lingua_path, "device_map": "cpu"}}},
        # LightMem's own entropy keys: device, compress_rate, word_level_strategy, max_length
        "entropy-lm": {"model_name": "entropy_compress", "configs": {"entropy_config": {
            "model_name": causal_path, "device": "cpu", "compress_rate": 0.4, "word_level_strategy": "first_token", "max_length": 64}}},
        "wordfreq": {"model_name": "entropy_compress", "configs": {"entropy_config": {"model_name": "wordfreq"}}},
    }[kind]
    compressor = build_compressor(parse_config(memory_config(pre_compress=True, pre_compressor=pre)))
    assert isinstance(compressor, expected)
    if kind == "entropy-lm":
        assert compressor.rate == 0.4 and compressor.body == 63
    result = compressor.compress(["The brake pads on my car are worn down to the metal."])[0]
    assert 0 < result.tokens_after < result.tokens_before


@pytest.mark.parametrize("kind,expected", [("llmlingua-2", LLMLingua2Segmenter), ("embedding", EmbeddingSegmenter)])
def test_every_segmenter_builds(kind: str, expected: type, lingua_path: str, memory_config: Any,
                                minilm_embedder: Any) -> None:
    config = parse_config(memory_config(topic_segment=True, topic_segmenter={
        "model_name": kind, "configs": {"model_name": lingua_path, "device_map": "cpu"}}))
    assert isinstance(build_segmenter(config, minilm_embedder), expected)


def test_llmlingua2_segmenter_without_any_model_path_is_refused(memory_config: Any, minilm_embedder: Any) -> None:
    config = parse_config(memory_config(topic_segment=True, topic_segmenter={"model_name": "llmlingua-2"}))
    with pytest.raises(ConfigError, match="needs a model path"):
        build_segmenter(config, minilm_embedder)


def test_wrong_model_path_fails_at_from_config(memory_config: Any, tmp_path: Any) -> None:
    from lightmem_core import LightMemory

    with pytest.raises(ModelLoadError, match="does not exist"):
        LightMemory.from_config(memory_config(pre_compress=True, pre_compressor={
            "model_name": "llmlingua-2", "configs": {"llmlingua_config": {"model_name": str(tmp_path / "missing")}}}))
