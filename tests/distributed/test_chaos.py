"""Faults on purpose, short versions: every run must end with nothing lost, nothing duplicated, nothing
stuck, and the worker processes alive. Each test has its own Redis, since some of them kill it."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from producers.datasets import load_locomo
from tests.distributed.conftest import Cluster, control_llm, redis_and_llm, running_cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Its own Redis (the test kills it), LLM server and four workers."""
    with redis_and_llm(tmp_path_factory.mktemp("lightmem-chaos")) as procs, running_cluster(procs, "chaos") as cluster:
        yield cluster


def _entries(cluster: Cluster, user: str) -> list[tuple[str, tuple[str, ...], int, str]]:
    """What a user's entries say, with their provenance and topic (ids differ between users)."""
    return sorted((e["memory"], tuple(e["source_ids"]), e["topic_id"], e["time_stamp"])
                  for e in cluster.producer.entries(user, timeout_s=120))


def test_redis_killed_and_restarted_during_ingestion_loses_nothing(chaos: Cluster, data_dir: Path) -> None:
    cluster, procs = chaos, chaos.procs
    conversation = load_locomo(data_dir / "locomo10.json")[0]
    sessions = conversation.sessions[:8]
    # A clean run first: the reference entries.
    clean = [cluster.producer.enqueue_session("clean", s) for s in sessions]
    cluster.producer.flush("clean")
    assert set(cluster.producer.wait_indexed(clean, timeout_s=180).values()) == {"indexed"}
    reference = _entries(cluster, "clean")
    # The same sessions for another user, with Redis killed while the LLM answers slowly.
    control_llm(cluster, steps=[{"delay_s": 1.0}] * 6)
    ids = [cluster.producer.enqueue_session("chaos", s) for s in sessions]
    cluster.producer.flush("chaos")
    time.sleep(2.0)
    port = urlparse(procs.redis_url).port
    for _ in range(2):
        procs.procs["redis"].send_signal(signal.SIGKILL)
        procs.procs["redis"].wait(10)
        time.sleep(1.0)
        procs.start_redis(port=port)  # the same port and folder: the append-only file brings the data back
        time.sleep(3.0)
    states = cluster.producer.wait_indexed(ids, timeout_s=300)
    assert set(states.values()) == {"indexed"}, states
    got = _entries(cluster, "chaos")
    assert len(reference) > 50
    assert got == reference  # nothing lost, nothing twice, the same topics as the clean run
    assert cluster.producer.status()["batches_in_flight"] == 0
    for name in ("chaos-compress", "chaos-extract", "chaos-store", "chaos-update"):
        assert procs.procs[name].poll() is None, f"{name} died:\n{procs.log(name)[-2000:]}"
