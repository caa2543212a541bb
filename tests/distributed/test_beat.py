"""Beat: a short schedule triggers the per-user offline update, only for users with new entries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.distributed.conftest import Cluster
from workers.launch import process_argv

pytestmark = pytest.mark.integration


def _session(day: int, text: str) -> dict[str, object]:
    return {"session_id": f"d{day}", "time_stamp": f"2025-04-{day:02d}T08:00:00Z", "turns": [{"role": "user", "content": text}]}


def _index(cluster: Cluster, user: str, session: dict[str, object]) -> None:
    tracking_id = cluster.producer.enqueue_session(user, session)
    cluster.producer.flush(user)
    assert cluster.producer.wait_indexed([tracking_id], timeout_s=60) == {tracking_id: "indexed"}


def _wait_runs(cluster: Cluster, want: dict[str, int], timeout_s: float = 60) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    while True:
        runs = cluster.producer.state.update_runs()
        if all(runs.get(u, 0) >= n for u, n in want.items()) or time.monotonic() > deadline:
            return runs
        time.sleep(0.3)


@pytest.fixture
def beat(cluster: Cluster, tmp_path: Path) -> Iterator[None]:
    cluster.procs.env["LIGHTMEM_UPDATE_INTERVAL_S"] = "1.5"
    try:
        cluster.procs.start("beat", process_argv("beat", cluster.settings, extra=["--schedule", str(tmp_path / "beat")]))
    finally:
        del cluster.procs.env["LIGHTMEM_UPDATE_INTERVAL_S"]
    yield
    cluster.procs.stop_process("beat")


def test_beat_updates_only_users_with_new_entries(cluster: Cluster, beat: None) -> None:
    _index(cluster, "beat-a", _session(1, "I moved to Porto in April."))
    _index(cluster, "beat-b", _session(1, "My sister Ana plays the cello."))
    runs = _wait_runs(cluster, {"beat-a": 1, "beat-b": 1})
    assert runs.get("beat-a") == 1 and runs.get("beat-b") == 1, cluster.procs.log("beat")[-2000:]

    _index(cluster, "beat-a", _session(2, "We found a flat near the river in Porto."))
    runs = _wait_runs(cluster, {"beat-a": 2})
    time.sleep(4)  # more ticks pass: nothing new for either user
    runs = cluster.producer.state.update_runs()
    assert runs["beat-a"] == 2
    assert runs["beat-b"] == 1
    assert len(cluster.producer.entries("beat-a")) == 2  # the scripted LLM decides "ignore"
