"""Faults on purpose: every run ends with nothing lost, nothing duplicated, nothing stuck, and the worker
processes alive. Entries are compared with a clean run of the same sessions by what they say (text,
provenance, topic, time). The module has its own Redis (a test kills it), LLM server, four workers and
beat (as a deployment runs it), with short timeouts so that a killed worker's messages come back within
seconds.

Short versions run in ``make test``; ``make chaos`` runs the long ones (``LIGHTMEM_CHAOS_ROUNDS=3``
kills per worker kind, ``LIGHTMEM_CHAOS_SESSIONS=19``, a whole LoCoMo conversation)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from producers.datasets import load_locomo
from tests.distributed.conftest import ROLES, Cluster, control_llm, redis_and_llm, running_cluster
from workers import names

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROUNDS = int(os.environ.get("LIGHTMEM_CHAOS_ROUNDS", "1"))
SESSIONS = int(os.environ.get("LIGHTMEM_CHAOS_SESSIONS", "8"))
LLM = "LIGHTMEM_MEMORY__MEMORY_MANAGER__CONFIGS__"
CHAOS_ENV = {
    "LIGHTMEM_VISIBILITY_TIMEOUT_S": "8",  # a killed worker's messages come back after 8 s
    "LIGHTMEM_BATCH_LEASE_S": "8",
    "LIGHTMEM_LOCK_TIMEOUT_S": "4",  # a killed worker's user lock frees after 4 s
    "LIGHTMEM_IDLE_CHECK_S": "3",  # beat's idle check: a batch whose owner died is taken over
    "LIGHTMEM_MAX_RETRIES": "1",  # Celery retries a drain once: an outage runs past the budget quickly
    "LIGHTMEM_RETRY_BACKOFF_MAX_S": "2",
    f"{LLM}TIMEOUT_S": "3",
    f"{LLM}MAX_RETRIES": "2",
    f"{LLM}SHORT_TERM_CAPACITY_TOKENS": "256",  # small batches: many LLM calls, a busy extract worker
}


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with redis_and_llm(tmp_path_factory.mktemp("lightmem-chaos")) as procs, \
            running_cluster(procs, "chaos", env=CHAOS_ENV, beat=True) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def sessions(data_dir: Path) -> list[Any]:
    return load_locomo(data_dir / "locomo10.json")[0].sessions[:SESSIONS]


@pytest.fixture(scope="module")
def reference(chaos: Cluster, sessions: list[Any]) -> list[tuple[str, tuple[str, ...], int, str]]:
    """What a clean run of the sessions leaves."""
    ids = [chaos.producer.enqueue_session("clean", s) for s in sessions]
    chaos.producer.flush("clean")
    assert set(chaos.producer.wait_indexed(ids, timeout_s=300).values()) == {"indexed"}
    entries = _entries(chaos, "clean")
    assert len(entries) > 50
    return entries


def _entries(cluster: Cluster, user: str) -> list[tuple[str, tuple[str, ...], int, str]]:
    """What a user's entries say, with their provenance and topic (ids differ between users)."""
    return sorted((e["memory"], tuple(e["source_ids"]), e["topic_id"], e["time_stamp"])
                  for e in cluster.producer.entries(user, timeout_s=120))


def _failures(cluster: Cluster) -> list[tuple[Any, Any, Any]]:
    """Task, user and reason of the failures recorded, newest first: what an assertion on states shows."""
    return [(f.get("task"), f.get("user_id"), f.get("reason")) for f in cluster.producer.state.failures()]


def _held(cluster: Cluster, queue: str) -> int:
    """Messages of ``queue`` delivered to a worker and not acknowledged (kombu's ``unacked`` hash)."""
    return sum(1 for raw in cluster.producer.state.r.hvals("unacked") if json.loads(raw)[2] == queue)


def _until(check: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(poll_s)


def _nothing_stuck(cluster: Cluster, user: str) -> None:
    """No batch in flight or failed, no message held or queued, every worker alive."""
    queues = [cluster.settings.queue(role) for role in ROLES]
    r = cluster.producer.state.r
    _until(lambda: not r.hlen("unacked") and not any(r.llen(q) for q in queues), 60, "queues and unacked empty")
    assert cluster.producer.state.in_flight(user) == [] and cluster.producer.state.failed(user) == []
    for role in ROLES:
        name = cluster.names[role]
        assert cluster.procs.procs[name].poll() is None, f"{name} died:\n{cluster.procs.log(name)[-2000:]}"


def _lightmem(cluster: Cluster, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "producers.cli", *args], env={**os.environ, **cluster.env},
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _chunks(items: list[Any], n: int) -> list[list[Any]]:
    size = -(-len(items) // n)
    return [items[i:i + size] for i in range(0, len(items), size)]


def test_redis_killed_and_restarted_during_ingestion_loses_nothing(chaos: Cluster, sessions: list[Any],
                                                                  reference: list[Any]) -> None:
    cluster, procs = chaos, chaos.procs
    control_llm(cluster, steps=[{"delay_s": 1.0}] * 6)
    ids = [cluster.producer.enqueue_session("redis-kill", s) for s in sessions]
    cluster.producer.flush("redis-kill")
    time.sleep(2.0)
    port = urlparse(procs.redis_url).port
    for _ in range(2):
        procs.procs["redis"].send_signal(signal.SIGKILL)
        procs.procs["redis"].wait(10)
        time.sleep(1.0)
        procs.start_redis(port=port)  # the same port and folder: the append-only file brings the data back
        time.sleep(3.0)
    states = cluster.producer.wait_indexed(ids, timeout_s=300)
    assert set(states.values()) == {"indexed"}, (states, _failures(cluster))
    assert _entries(cluster, "redis-kill") == reference  # nothing lost, nothing twice, the same topics
    _nothing_stuck(cluster, "redis-kill")


@pytest.mark.parametrize("role", ROLES)
def test_a_worker_killed_while_busy_loses_nothing(chaos: Cluster, sessions: list[Any], reference: list[Any],
                                                 role: str) -> None:
    """kill -9 of one worker kind while it holds a task, ``ROUNDS`` times; a supervisor starts it again.
    Its message comes back after the (short) visibility timeout and is done once."""
    cluster, user = chaos, f"kill-{role}"
    queue, name = cluster.settings.queue(role), cluster.names[role]
    control_llm(cluster, delay_s=0.3)  # extraction calls take a while: the extract worker is busy
    ids: list[str] = []
    try:
        for chunk in _chunks(sessions, ROUNDS):
            ids += [cluster.producer.enqueue_session(user, s) for s in chunk]
            if role == "extract":
                cluster.producer.flush(user)
            if role == "update":  # in embedded mode the update worker runs the idle checks: a burst of them
                for _ in range(300):
                    cluster.producer.app.send_task(names.UPDATE_FLUSH_IDLE)
            # A task may end between the check and the kill (a compress task takes about 10 ms here): the
            # worker is stopped first, and killed only if it holds a message while it cannot acknowledge
            # anything; otherwise it goes on, and the next task is tried.
            proc = cluster.procs.procs[name]
            for _attempt in range(50):
                _until(lambda: _held(cluster, queue) > 0, 120, f"the {role} worker busy", poll_s=0.002)
                proc.send_signal(signal.SIGSTOP)
                died_busy = _held(cluster, queue) > 0  # frozen while holding a message it had not acknowledged
                if died_busy:
                    break
                proc.send_signal(signal.SIGCONT)
            assert died_busy, f"the {role} worker was never stopped while holding a task"
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            cluster.restart(role)
        cluster.producer.flush(user)
        states = cluster.producer.wait_indexed(ids, timeout_s=300)
    finally:
        control_llm(cluster, delay_s=0.0)
    assert set(states.values()) == {"indexed"}, states
    assert _entries(cluster, user) == reference
    _nothing_stuck(cluster, user)


def test_an_llm_outage_past_the_retry_budget_then_lightmem_retry_loses_nothing(
        chaos: Cluster, sessions: list[Any], reference: list[Any]) -> None:
    cluster, user = chaos, "outage"
    control_llm(cluster, fail_marker="source_ids", fail_status=503)  # every extraction call fails
    try:
        ids = [cluster.producer.enqueue_session(user, s) for s in sessions]
        cluster.producer.flush(user)
        states = cluster.producer.wait_indexed(ids, timeout_s=300)
    finally:
        control_llm(cluster, fail_marker=None)
    assert set(states.values()) == {"failed"}, states
    assert cluster.producer.state.in_flight(user) == []  # failed, not "in flight"
    assert len(cluster.producer.state.failed(user)) >= 1
    assert user in _lightmem(cluster, "retry", "--all")
    assert set(cluster.producer.wait_indexed(ids, timeout_s=300).values()) == {"indexed"}
    assert _entries(cluster, user) == reference
    _nothing_stuck(cluster, user)


def test_a_fifth_of_llm_calls_failing_in_mixed_ways_loses_nothing(chaos: Cluster, sessions: list[Any],
                                                                 reference: list[Any]) -> None:
    """429s, 500s, timeouts past the client's and broken JSON on 20% of the calls. The client and Celery
    retry the transient ones; a batch whose reply stays broken after its repair is failed with the reply,
    and ``lightmem retry`` takes it once the LLM behaves."""
    cluster, user = chaos, "mixed-faults"
    # Seed 42 puts every kind among the first 12 draws; the rate over the run stays 20%.
    control_llm(cluster, faults={"rate": 0.2, "seed": 42, "timeout_s": 4})
    try:
        ids = [cluster.producer.enqueue_session(user, s) for s in sessions]
        cluster.producer.flush(user)
        states = cluster.producer.wait_indexed(ids, timeout_s=400)
    finally:
        served = control_llm(cluster, faults=None)["faults_served"]
    assert set(served) == {"429", "500", "timeout", "broken_json"}, served  # the faults did happen
    assert cluster.producer.state.in_flight(user) == []
    if "failed" in states.values():
        assert cluster.producer.state.failed(user), "failed items without a failed batch to retry"
        _lightmem(cluster, "retry", user)
        states = cluster.producer.wait_indexed(ids, timeout_s=300)
    assert set(states.values()) == {"indexed"}, states
    assert _entries(cluster, user) == reference
    _nothing_stuck(cluster, user)
