"""The producer against a real Redis server: validation before queueing, durability, unreachable Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lightmem_core.errors import TransientError
from producers.sdk import MemoryProducer
from workers.launch import LocalCluster, free_port
from workers.settings import DistributedSettings

pytestmark = pytest.mark.integration

SESSION = {"session_id": "s1", "time_stamp": "2025-01-10T09:00:00Z",
           "turns": [{"role": "user", "content": "I adopted a cat named Miso."},
                     {"role": "assistant", "content": "Lovely name."}]}


@pytest.fixture
def idle_producer(redis_cluster: LocalCluster) -> Iterator[MemoryProducer]:
    """A producer whose compress queue no worker consumes, so what it queues stays in the broker list."""
    settings = DistributedSettings(redis_url=redis_cluster.redis_url, key_prefix=f"idle{time.time_ns()}",
                                   queue_compress=f"idle.compress.{time.time_ns()}")
    producer = MemoryProducer(settings)
    yield producer
    producer.state.r.delete(settings.queue_compress)
    producer.close()


def _queued(producer: MemoryProducer) -> list[dict[str, Any]]:
    raw = producer.state.r.lrange(producer.settings.queue_compress, 0, -1)
    return [json.loads(m) for m in raw]


@pytest.mark.parametrize(
    ("session", "field"),
    [
        ({"session_id": "s1", "turns": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"session_id": "s1", "turns": [{"role": "user"}]}, "messages[0].content"),
        ({"session_id": "s1", "turns": [{"role": "user", "content": "x", "time_stamp": "not a date"}]},
         "messages[0].time_stamp"),
        ({"session_id": "s1", "turns": []}, "session.turns"),
        ({"session_id": "", "turns": [{"role": "user", "content": "x"}]}, "session.session_id"),
    ],
)
def test_invalid_input_names_the_field_and_queues_nothing(idle_producer: MemoryProducer, session: dict[str, Any],
                                                         field: str) -> None:
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        idle_producer.enqueue_session("u1", session)
    assert _queued(idle_producer) == []
    assert idle_producer.state.users() == []


def test_invalid_user_id_is_refused(idle_producer: MemoryProducer) -> None:
    with pytest.raises(ValueError, match="user_id"):
        idle_producer.enqueue_session("", SESSION)
    assert _queued(idle_producer) == []


def test_enqueue_is_in_the_broker_list_when_it_returns(idle_producer: MemoryProducer) -> None:
    tracking_id = idle_producer.enqueue_session("u1", SESSION)
    queued = _queued(idle_producer)
    assert len(queued) == 1
    body = queued[0]
    assert body["headers"]["task"] == "lightmem.compress.sessions"
    assert body["content-type"] == "application/json"
    assert idle_producer.status(tracking_id)["state"] == "queued"


def test_enqueue_turns_numbers_turns_after_earlier_ones(idle_producer: MemoryProducer) -> None:
    idle_producer.enqueue_turns("u2", "chat", [{"role": "user", "content": "one"}])
    idle_producer.enqueue_turns("u2", "chat", [{"role": "user", "content": "two"}, {"role": "user", "content": "three"}])
    import base64

    turns = []
    for body in reversed(_queued(idle_producer)):  # LPUSH: newest first
        args = json.loads(base64.b64decode(body["body"]))[0]
        turns += [m["turn_index"] for s in args[0]["sessions"] for m in s["messages"]]
    assert turns == [0, 1, 2]


def test_unreachable_redis_fails_fast_with_a_clear_error() -> None:
    settings = DistributedSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_connect_timeout_s=0.5)
    producer = MemoryProducer(settings)
    start = time.monotonic()
    try:
        with pytest.raises(TransientError, match="unreachable within 0.5 s"):
            producer.enqueue_session("u1", SESSION)
    finally:
        producer.close()
    assert time.monotonic() - start < 5
