"""The call cache (``kv_cache``) across worker processes: the Redis store's contract, and a worker killed
in the middle of its work whose task comes back costs no LLM call that was answered before.

The module has its own Redis and scripted LLM server (it counts requests from a clean start) and four
workers with ``kv_cache`` on, once with the replies in the broker's Redis (``kv_cache_url``, for
workers on several hosts) and once in one SQLite file (``kv_cache_path``, the default on one host), with
short timeouts so that a killed worker's message comes back within seconds."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from lightmem_core.llm.cache import ReplyCache
from producers.datasets import load_locomo
from tests.distributed.conftest import Cluster, control_llm, redis_and_llm, running_cluster
from tests.llm.test_cache import (  # noqa: F401 - the store contract, run here on Redis
    test_hit_miss_first_reply_kept_delete_and_clear,
    test_the_bound_evicts_the_least_recently_used,
)
from workers.launch import LocalCluster
from workers.llm_cache import RedisReplyCache
from workers.names import Keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LLM = "LIGHTMEM_MEMORY__MEMORY_MANAGER__CONFIGS__"
SESSIONS = 4  # one batch each: the retry task extracts four batches, one after the other


@pytest.fixture(scope="module", params=["redis", "sqlite"])
def cache_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory, cache_kind: str) -> Iterator[LocalCluster]:
    """Redis and the LLM server, new for each kind of cache: the server's counts start from nothing."""
    with redis_and_llm(tmp_path_factory.mktemp(f"lightmem-kv-cache-{cache_kind}")) as started:
        yield started


@pytest.fixture
def reply_cache(procs: LocalCluster) -> Iterator[Callable[..., ReplyCache]]:
    """Redis caches for the contract tests, each under a key prefix of its own."""
    client = redis.Redis.from_url(procs.redis_url)
    made = 0

    def make(max_entries: int = 1000, max_bytes: int = 2**20) -> ReplyCache:
        nonlocal made
        made += 1
        return RedisReplyCache(client, Keys(f"contract{time.monotonic_ns()}-{made}").llm_cache, max_entries, max_bytes)

    yield make
    client.close()


@pytest.fixture(scope="module")
def cluster(procs: LocalCluster, cache_kind: str) -> Iterator[Cluster]:
    where = ({"LIGHTMEM_MEMORY__KV_CACHE_URL": procs.redis_url} if cache_kind == "redis"  # the broker's Redis
             else {"LIGHTMEM_MEMORY__KV_CACHE_PATH": str(procs.workdir / "kv_cache.db")})  # one file on this host
    env = {
        "LIGHTMEM_MEMORY__KV_CACHE": "true",
        **where,
        "LIGHTMEM_VISIBILITY_TIMEOUT_S": "8",  # a killed worker's message comes back after 8 s
        "LIGHTMEM_LOCK_TIMEOUT_S": "4",
        "LIGHTMEM_MAX_RETRIES": "1",  # Celery retries once: the outage below fails the batches quickly
        "LIGHTMEM_RETRY_BACKOFF_MAX_S": "2",
        f"{LLM}TIMEOUT_S": "5",
        f"{LLM}MAX_RETRIES": "2",
        f"{LLM}SHORT_TERM_CAPACITY_TOKENS": "256",  # a batch per session
    }
    with running_cluster(procs, "kvc", env=env) as running:
        yield running


def _held(cluster: Cluster, queue: str) -> int:
    """Messages of ``queue`` delivered to a worker and not acknowledged (kombu's ``unacked`` hash)."""
    return sum(1 for raw in cluster.producer.state.r.hvals("unacked") if json.loads(raw)[2] == queue)


def _until(check: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(poll_s)


def _entries(cluster: Cluster, user: str) -> list[tuple[str, tuple[str, ...], int, str]]:
    return sorted((e["memory"], tuple(e["source_ids"]), e["topic_id"], e["time_stamp"])
                  for e in cluster.producer.entries(user, timeout_s=120))


def test_a_worker_killed_mid_batch_and_redelivered_costs_no_extra_llm_call(cluster: Cluster, data_dir: Path) -> None:
    """An outage fails the user's batches; ``lightmem retry`` sends one task that extracts them one after
    the other. The extract worker is killed after two of them were answered (and handed to the store,
    paused here so they stay in flight), while it waits out a 429: no call is cut off mid-flight. The
    task comes back to the restarted worker and extracts every batch again: the two answered before are
    replayed from the cache. Without it the server would answer two requests more than there are
    batches; it answers one per batch, none twice."""
    sessions: list[Any] = load_locomo(data_dir / "locomo10.json")[0].sessions[:SESSIONS]
    user, producer, queue = "killed", cluster.producer, cluster.settings.queue("extract")
    control_llm(cluster, fail_marker="source_ids", fail_status=503)  # every extraction call fails
    try:
        ids = [producer.enqueue_session(user, s) for s in sessions]
        producer.flush(user)
        assert set(producer.wait_indexed(ids, timeout_s=300).values()) == {"failed"}
    finally:
        control_llm(cluster, fail_marker=None)
    batches = len(producer.state.failed(user))
    assert batches >= 3
    store = cluster.procs.procs[cluster.names["store"]]
    store.send_signal(signal.SIGSTOP)  # stored batches would leave flight: keep them in it
    try:
        before = control_llm(cluster, steps=[{}, {}, {"status": 429, "retry_after": "4"}])
        stats_before = producer.state.stats()
        producer.retry_failed([user])
        _until(lambda: control_llm(cluster)["requests"] >= before["requests"] + 3, 120, "two answers and a 429")
        time.sleep(0.5)  # the worker has the 429 and waits 4 s: nothing in flight at the server
        assert _held(cluster, queue) == 1  # the retry task, not acknowledged
        extract = cluster.procs.procs[cluster.names["extract"]]
        extract.send_signal(signal.SIGKILL)
        extract.wait(10)
        assert control_llm(cluster)["answered"] == before["answered"] + 2
        cluster.restart("extract", timeout_s=300)  # its message comes back after the visibility timeout
        _until(lambda: control_llm(cluster)["answered"] >= before["answered"] + batches and _held(cluster, queue) == 0,
               120, "the task redelivered and done")
    finally:
        store.send_signal(signal.SIGCONT)
    assert set(producer.wait_indexed(ids, timeout_s=300).values()) == {"indexed"}
    after, stats = control_llm(cluster), producer.state.stats()
    assert after["answered"] - before["answered"] == batches  # each batch answered once: 0 extra calls
    assert after["repeated"] == before["repeated"] == 0  # no request was ever answered twice
    assert stats.get("llm_cache_hits", 0) - stats_before.get("llm_cache_hits", 0) == 2  # the two replayed
    assert stats["llm_calls"] - stats_before["llm_calls"] == batches + 1  # four answers and the 429
    assert producer.state.failed(user) == [] and producer.state.in_flight(user) == []
    # A clean run of the same sessions replays every reply (0 calls) and stores what the killed run stored.
    clean = [producer.enqueue_session("clean", s) for s in sessions]
    producer.flush("clean")
    assert set(producer.wait_indexed(clean, timeout_s=300).values()) == {"indexed"}
    assert control_llm(cluster)["answered"] == after["answered"]
    entries = _entries(cluster, user)
    assert len(entries) > 20 and entries == _entries(cluster, "clean")
