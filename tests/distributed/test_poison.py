"""Every poison kind in every queue: the worker that pops it keeps it in the dead-letter list with its raw
body and the reason, logs no body, stays alive, and the pipeline goes on (a good session is indexed)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery

from tests.distributed.conftest import Cluster
from workers import names

pytestmark = pytest.mark.integration

# A task of each queue (embedded store: the per-user update runs on the store queue, but the update
# worker knows every task, so a message for it on the update queue reaches its code all the same).
TASK_OF = {"compress": names.COMPRESS_SESSIONS, "extract": names.EXTRACT_DRAIN, "store": names.STORE_INDEX,
           "update": names.UPDATE_USER}
PROBE = "poison-probe-ocelot"  # in every poison body: must show up in the dead letters, never in a log


def _envelope(body: str) -> bytes:
    return json.dumps({"body": body, "content-encoding": "utf-8", "content-type": "application/json",
                       "headers": {"task": "lightmem.compress.sessions", "id": PROBE},
                       "properties": {"body_encoding": "base64", "delivery_tag": "t", "delivery_info": {}}}).encode()


Put = Callable[[Cluster, str, str, Celery], Any]  # (cluster, queue, a task of the queue, a foreign Celery app)


def _push(raw: bytes) -> Put:
    return lambda cluster, queue, task, stranger: cluster.producer.state.r.lpush(queue, raw)


def _send(args: list[Any], name: str | None = None) -> Put:
    return lambda cluster, queue, task, stranger: stranger.send_task(name or task, args=args, queue=queue)


POISONS: dict[str, tuple[Put, str]] = {
    # kind: (how it gets into the queue, how its dead letter's reason starts)
    "not-json": (_push(b"\xff\xfe not json \x00 " + PROBE.encode()), "unreadable queue item"),
    "not-an-envelope": (_push(json.dumps([1, 2, PROBE]).encode()), "unreadable queue item"),
    "body-not-base64": (_push(_envelope(f"!!not base64 {PROBE}!!")), "unreadable queue item"),
    "oversized": (_push(PROBE.encode() + b"x" * (6 * 1024 * 1024)), "oversized queue item"),
    "unregistered": (_send([{"v": 1, "marker": PROBE}], "lightmem.nope"), "unregistered task 'lightmem.nope'"),
    "wrong-schema": (_send([{"v": 99, "marker": PROBE}]), "wrong schema"),
    "wrong-arity": (_send([PROBE, 2, 3]), "wrong arguments"),
}


def _good_session(user: str) -> dict[str, Any]:
    return {"session_id": f"{user}-s1", "time_stamp": "2025-03-01T10:00:00Z",
            "turns": [{"role": "user", "content": "I planted three tomato seedlings in the greenhouse today."}]}


@pytest.mark.parametrize("role", list(TASK_OF))
def test_every_poison_kind_is_a_dead_letter_and_the_worker_goes_on(cluster: Cluster, role: str) -> None:
    queue, task = cluster.settings.queue(role), TASK_OF[role]
    before = cluster.producer.status()["dead_letters"]
    log_before = len(cluster.procs.log(role))
    stranger = Celery("stranger", broker=cluster.settings.redis_url)  # no lightmem routes: anything goes out
    try:
        for put, _ in POISONS.values():
            put(cluster, queue, task, stranger)
    finally:
        stranger.close()
    deadline = time.monotonic() + 60
    while cluster.producer.status()["dead_letters"] < before + len(POISONS) and time.monotonic() < deadline:
        time.sleep(0.2)
    status = cluster.producer.status()
    assert status["dead_letters"] == before + len(POISONS), status["recent_dead_letters"][:3]
    letters = cluster.producer.state.dead_letters(limit=len(POISONS))
    assert all(PROBE in letter["raw"] for letter in letters)  # the raw body is kept...
    reasons = sorted(letter["reason"] for letter in letters)
    for kind, (_, reason) in POISONS.items():
        assert any(r.startswith(reason) for r in reasons), f"{kind}: no dead letter starting {reason!r} in {reasons}"
    assert cluster.procs.procs[role].poll() is None, f"the {role} worker died"
    assert PROBE not in cluster.procs.log(role)[log_before:]  # ...and never logged
    user = f"after-poison-{role}"
    good = cluster.producer.enqueue_session(user, _good_session(user))
    cluster.producer.flush(user)
    assert cluster.producer.wait_indexed([good], timeout_s=90) == {good: "indexed"}  # the pipeline goes on

