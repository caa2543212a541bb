from __future__ import annotations

from pathlib import Path

import pytest

from lightmem_core import (
    BaseMemoryConfigs,
    ConfigError,
    LightMemory,
    ModelLoadError,
    NotSupportedError,
    parse_config,
)
from lightmem_core.config import load_config_file

README_KEYS = [
    "pre_compress", "pre_compressor", "topic_segment", "precomp_topic_shared", "topic_segmenter", "messages_use",
    "metadata_generate", "text_summary", "memory_manager", "extract_threshold", "index_strategy", "text_embedder",
    "multimodal_embedder", "history_db_path", "retrieve_strategy", "context_retriever", "embedding_retriever",
    "summary_retriever", "update", "kv_cache", "kv_cache_path", "graph_mem", "extraction_mode", "version", "logging",
]


def test_every_option_of_lightmems_table_exists_with_its_default() -> None:
    cfg = BaseMemoryConfigs()
    assert set(README_KEYS) <= set(BaseMemoryConfigs.model_fields)
    assert (cfg.pre_compress, cfg.topic_segment, cfg.precomp_topic_shared) == (False, False, False)
    assert cfg.messages_use == "user_only" and cfg.metadata_generate and cfg.text_summary
    assert cfg.memory_manager.model_name == "openai"
    assert cfg.extract_threshold == 0.5 and cfg.index_strategy is None and cfg.retrieve_strategy == "embedding"
    assert cfg.update == "offline" and cfg.kv_cache is False and cfg.graph_mem is False and cfg.version == "v1.1"
    assert cfg.history_db_path.endswith("history.db") and cfg.kv_cache_path.endswith("kv_cache.db")
    assert cfg.logging is None and cfg.text_embedder is None and cfg.multimodal_embedder is None


def test_readme_dictionary_with_backend_named_base_url_is_accepted(memory_config) -> None:
    cfg = parse_config(memory_config(memory_manager={
        "model_name": "openai",
        "configs": {"model": "gpt-4o-mini", "api_key": "k", "max_tokens": 16000, "openai_base_url": "http://x/v1"},
    }))
    assert cfg.memory_manager.configs.base_url == "http://x/v1"
    assert cfg.memory_manager.configs.max_tokens == 16000


def test_unknown_key_is_named(memory_config) -> None:
    with pytest.raises(ConfigError, match="retrieve_stratgy: unknown key"):
        parse_config(memory_config(retrieve_stratgy="hybrid"))
    with pytest.raises(ConfigError, match=r"embedding_retriever\.configs\.colection_name: unknown key"):
        parse_config(memory_config(embedding_retriever={"model_name": "qdrant", "configs": {"colection_name": "x"}}))


def test_wrong_type_names_key_and_expectation(memory_config) -> None:
    with pytest.raises(ConfigError, match=r"extract_threshold: .*number"):
        parse_config(memory_config(extract_threshold="lots"))
    with pytest.raises(ConfigError, match=r"retrieve_strategy: .*'embedding', 'context' or 'hybrid'"):
        parse_config(memory_config(retrieve_strategy="graph"))
    with pytest.raises(ConfigError, match="configuration must be a dict"):
        parse_config(["not", "a", "dict"])  # type: ignore[arg-type]


def test_context_retriever_top_k_is_the_default_limit(make_memory) -> None:
    """LightMem's ``context_retriever.configs.top_k``: how many memories ``retrieve`` returns unasked."""
    memory = make_memory(retrieve_strategy="hybrid", context_retriever={"model_name": "BM25", "configs": {"top_k": 2}})
    memory.add_memory([{"role": "user", "content": f"I went hiking on trail number {n}.", "time_stamp": "2025-01-10"}
                       for n in range(4)], force_extract=True)
    assert len(memory.retrieve("hiking trail")) == 2
    assert len(memory.retrieve("hiking trail", limit=3)) == 3
    assert parse_config({}).default_retrieve_limit == 10  # LightMem's retrieve(limit=10) otherwise


def test_qdrant_host_and_port_name_a_server() -> None:
    cfg = parse_config({"embedding_retriever": {"model_name": "qdrant", "configs": {"host": "qdrant.local", "port": 6334}}})
    assert cfg.embedding_retriever is not None and cfg.embedding_retriever.configs.url == "http://qdrant.local:6334"
    with pytest.raises(ConfigError, match="either 'url' or 'host'"):
        parse_config({"embedding_retriever": {"configs": {"host": "a", "url": "http://b:6333"}}})


def test_faiss_is_refused() -> None:
    with pytest.raises(NotSupportedError, match="FAISS"):
        parse_config({"embedding_retriever": {"model_name": "FAISS"}})


def test_inconsistent_strategies_are_refused(memory_config) -> None:
    with pytest.raises(ConfigError, match="retrieve_strategy 'hybrid' needs vectors"):
        parse_config(memory_config(index_strategy="embedding", retrieve_strategy="hybrid"))
    with pytest.raises(ConfigError, match="pre_compress is True but pre_compressor"):
        parse_config(memory_config(pre_compress=True))


def test_extract_threshold_sets_the_short_term_trigger(memory_config) -> None:
    cfg = parse_config(memory_config(extract_threshold=0.5))
    assert cfg.short_term_threshold_tokens == 512  # LightMem's hard-coded value, now configurable
    with pytest.raises(ConfigError, match="extract_threshold"):
        parse_config(memory_config(extract_threshold=0))


def test_missing_model_path_fails_at_from_config_with_the_path(memory_config, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    cfg = memory_config(text_embedder={"model_name": "huggingface", "configs": {"model": str(missing)}})
    with pytest.raises(ModelLoadError, match=str(missing)):
        LightMemory.from_config(cfg)


def test_yaml_file_and_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.settings import Settings, memory_config

    file = tmp_path / "c.yaml"
    file.write_text("retrieve_strategy: context\nmemory_manager:\n  model_name: verbatim\n")
    assert load_config_file(file).retrieve_strategy == "context"
    monkeypatch.setenv("LIGHTMEM_CONFIG_FILE", str(file))
    monkeypatch.setenv("LIGHTMEM_MEMORY__RETRIEVE_STRATEGY", "hybrid")
    monkeypatch.setenv("LIGHTMEM_MEMORY__EXTRACT_THRESHOLD", "0.25")
    cfg = memory_config(Settings())
    assert cfg.retrieve_strategy == "hybrid" and cfg.extract_threshold == 0.25
    assert cfg.memory_manager.model_name == "verbatim"
    other = tmp_path / "other.yaml"
    other.write_text("retrieve_strategy: context\nmessages_use: hybrid\n")
    cfg = memory_config(Settings(config_file=other))  # a file given here is read anew, the environment over it
    assert cfg.messages_use == "hybrid" and cfg.retrieve_strategy == "hybrid" and cfg.memory_manager.model_name != "verbatim"
    with pytest.raises(ConfigError, match="not found"):
        Settings(config_file=tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config_file(tmp_path / "absent.yaml")
