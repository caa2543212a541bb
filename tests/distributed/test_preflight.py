"""Workers check their configuration before they say "ready"."""

from __future__ import annotations

import time

import pytest

from tests.distributed.conftest import Cluster
from workers.launch import LocalCluster, free_port, process_argv
from workers.preflight import EXIT_PREFLIGHT
from workers.settings import DistributedSettings

pytestmark = pytest.mark.integration


def test_a_worker_with_an_unreachable_llm_exits_with_the_reason_and_never_says_ready(
        redis_cluster: LocalCluster) -> None:
    name = f"broken-extract-{time.time_ns()}"
    env = {"LIGHTMEM_MEMORY__MEMORY_MANAGER__CONFIGS__BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
           "LIGHTMEM_QUEUE_EXTRACT": f"{name}.queue", "LIGHTMEM_MEMORY__MEMORY_MANAGER__CONFIGS__TIMEOUT_S": "2"}
    settings = DistributedSettings(queue_extract=f"{name}.queue")
    proc = redis_cluster.start(name, process_argv("extract", settings, name=name), env=env)
    try:
        code = proc.wait(120)
    finally:
        redis_cluster.stop_process(name)
    log = redis_cluster.log(name)
    assert code == EXIT_PREFLIGHT, log[-2000:]
    assert "cannot start" in log and "unreachable" in log and "base_url" in log
    assert " ready." not in log


def test_healthy_workers_say_what_they_checked(cluster: Cluster) -> None:
    logs = {role: cluster.procs.log(role) for role in ("compress", "extract", "store")}
    assert "checked: redis, compression models" in logs["compress"]
    assert "checked: redis, LLM" in logs["extract"]
    assert "store and embedder, 1 torch thread" in logs["store"]  # beside the compress worker's threads
    assert "torch thread" not in logs["compress"]  # it keeps every core
    # Each says which pipeline it runs (the test cluster: model-free compression, an LLM for extraction).
    assert all("runs the pipeline: compression entropy (wordfreq)" in log and "extraction openai" in log
               for log in logs.values()), logs["compress"][-2000:]


def test_only_a_store_worker_that_does_not_compress_gets_the_store_thread_budget() -> None:
    from workers.preflight import thread_budget

    settings = DistributedSettings()
    assert thread_budget(settings, {"store"}) == settings.store_torch_threads == 1
    assert thread_budget(settings, {"store", "update"}) == 1
    assert thread_budget(settings, {"compress", "store"}) is None  # the compress stage wants every core
    assert thread_budget(settings, {"extract"}) is None
    assert thread_budget(settings.model_copy(update={"store_torch_threads": 0}), {"store"}) is None  # torch's default


def test_the_pipeline_line_warns_of_the_model_free_pipeline() -> None:
    from pathlib import Path

    import yaml

    from lightmem_core import parse_config
    from workers.preflight import pipeline_summary

    configs = Path(__file__).resolve().parents[2] / "configs"
    full, free = (parse_config(yaml.safe_load((configs / name).read_text())) for name in ("distributed.yaml", "distributed-model-free.yaml"))
    assert pipeline_summary(full) == ("compression llmlingua-2, topic segmentation llmlingua-2, extraction openai gpt-4o-mini",
                                      False)
    assert pipeline_summary(free)[1] is True
