"""Flower, started by the test on the same broker: its API lists the workers and the finished tasks,
and its page loads in headless Chromium (the screenshot is saved under artifacts/)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.distributed.conftest import ROLES, Cluster
from workers import names
from workers.launch import free_port, process_argv

pytestmark = pytest.mark.integration
AUTH = ("tester", "s3cret")


@pytest.fixture(scope="module")
def flower(cluster: Cluster) -> Iterator[str]:
    port = free_port()
    settings = cluster.settings_with(flower_port=port, flower_basic_auth=":".join(AUTH))
    cluster.procs.start("flower", process_argv("flower", settings))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthcheck", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("flower did not start:\n" + cluster.procs.log("flower")[-3000:])
        time.sleep(0.3)
    # Flower answers HTTP before its event receiver listens; a task sent before that shows without its
    # name. Wait until a probe task shows whole, so the tests below see every event of theirs.
    deadline = time.monotonic() + 60
    while True:
        probe = cluster.producer.app.send_task(names.UPDATE_NIGHTLY).id
        time.sleep(1.0)
        found = httpx.get(f"{url}/api/tasks", auth=AUTH, timeout=20).json().get(probe) or {}
        if found.get("name") == names.UPDATE_NIGHTLY or time.monotonic() > deadline:
            break
    yield url
    cluster.procs.stop_process("flower")


def _poll(fetch: Any, ok: Any, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = fetch()
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_flower_requires_basic_auth(flower: str) -> None:
    assert httpx.get(f"{flower}/api/workers", timeout=10).status_code == 401


def test_flower_lists_workers_and_finished_tasks(cluster: Cluster, flower: str) -> None:
    tracking_id = cluster.producer.enqueue_session("flower-user", {
        "session_id": "f1", "time_stamp": "2025-05-01T12:00:00Z",
        "turns": [{"role": "user", "content": "My bike is a green Brompton."}]})
    cluster.producer.flush("flower-user")
    assert cluster.producer.wait_indexed([tracking_id], timeout_s=60) == {tracking_id: "indexed"}
    cluster.producer.app.send_task("lightmem.extract.drain", args=[{"v": 1}])  # no user_id: fails

    workers = _poll(lambda: httpx.get(f"{flower}/api/workers", params={"refresh": "true"}, auth=AUTH, timeout=20).json(),
                    lambda w: {n.split("@")[0] for n in w} >= set(ROLES))
    assert {n.split("@")[0] for n in workers} >= set(ROLES)

    def tasks() -> dict[str, Any]:
        return dict(httpx.get(f"{flower}/api/tasks", auth=AUTH, timeout=20).json())

    def seen(found: dict[str, Any]) -> set[tuple[str, str]]:
        return {(t.get("name") or "", t.get("state") or "") for t in found.values()}

    wanted = {("lightmem.compress.sessions", "SUCCESS"), ("lightmem.extract.drain", "SUCCESS"),
              ("lightmem.store.index", "SUCCESS"), ("lightmem.extract.drain", "FAILURE")}
    found = _poll(tasks, lambda t: seen(t) >= wanted)
    assert seen(found) >= wanted
    failed = [t for t in found.values() if t.get("state") == "FAILURE"]
    assert any("DrainPayload" in str(t.get("exception")) and "user_id" in str(t.get("exception")) for t in failed)


def test_flower_page_loads_in_headless_chromium(flower: str, artifacts: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (make test installs it)")
        pytest.skip("chromium is not installed")
    shot = artifacts / "flower-workers.png"
    shot.unlink(missing_ok=True)
    page = flower.replace("http://", f"http://{AUTH[0]}:{AUTH[1]}@") + "/workers"
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--hide-scrollbars", "--window-size=1400,900", f"--user-data-dir={tmp_path / 'chromium'}"]
    dom = subprocess.run([*common, "--virtual-time-budget=5000", "--dump-dom", page], capture_output=True, text=True,
                         timeout=120)
    assert "compress@" in dom.stdout, dom.stderr[-2000:]
    subprocess.run([*common, "--virtual-time-budget=5000", f"--screenshot={shot}", page], capture_output=True,
                   timeout=120, check=True)
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_flower_lists_every_configured_queue(cluster: Cluster, flower: str) -> None:
    lengths = _poll(lambda: httpx.get(f"{flower}/api/queues/length", auth=AUTH, timeout=20).json(),
                    lambda body: len(body.get("active_queues", [])) >= len(ROLES))
    shown = {q["name"] for q in lengths["active_queues"]}
    assert {cluster.settings.queue(role) for role in ROLES} <= shown


def test_flower_shows_the_backlog_of_a_queue_no_worker_consumes(tmp_path: Path) -> None:
    """The broker page reads every configured queue's length from Redis, with no worker alive: the
    backlog an operator most needs to see when a role is down."""
    from workers.launch import LocalCluster
    from workers.settings import DistributedSettings

    procs = LocalCluster(tmp_path)
    try:
        url = procs.start_redis()
        port = free_port()
        settings = DistributedSettings(redis_url=url, key_prefix="flowerq", flower_port=port,
                                       flower_basic_auth=":".join(AUTH))
        for _ in range(3):
            redis_client(url).lpush(settings.queue("store"), b"{}")
        procs.start("flower", process_argv("flower", settings))
        body = _poll(lambda: _json_or_none(f"http://127.0.0.1:{port}/api/queues/length"),
                     lambda b: b is not None, timeout_s=60)
        assert body is not None, procs.log("flower")[-2000:]
        lengths = {q["name"]: q["messages"] for q in body["active_queues"]}
        assert lengths == {settings.queue(role): 3 if role == "store" else 0 for role in ROLES}
    finally:
        procs.stop()


def _json_or_none(url: str) -> Any:
    try:
        reply = httpx.get(url, auth=AUTH, timeout=5)
    except httpx.TransportError:
        return None
    return reply.json() if reply.status_code == 200 else None


def redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)
