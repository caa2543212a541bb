"""The producer against a real Redis server: validation before queueing, durability, unreachable Redis."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

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


def test_a_redis_that_never_answers_is_told_apart_from_an_unreachable_one() -> None:
    """A server that accepts connections and says nothing: the error names the socket timeout, not the connect one."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # keep it open, never answer
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    settings = DistributedSettings(redis_url=f"redis://127.0.0.1:{port}/0", redis_connect_timeout_s=5,
                                   redis_socket_timeout_s=0.5)
    producer = MemoryProducer(settings)
    try:
        with pytest.raises(TransientError, match=r"not answering \(no reply within 0.5 s\)"):
            producer.status("some-id")
    finally:
        producer.close()
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


def test_a_wrong_password_is_an_authentication_error(tmp_path: Path) -> None:
    from lightmem_core.errors import ConfigError
    from workers.launch import redis_server_binary

    port = free_port()
    server = subprocess.Popen([redis_server_binary(), "--port", str(port), "--requirepass", "right",
                               "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port, password="right").ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        producer = MemoryProducer(DistributedSettings(redis_url=f"redis://:wrong@127.0.0.1:{port}/0"))
        try:
            with pytest.raises(ConfigError, match="authentication failed"):
                producer.status("some-id")
        finally:
            producer.close()
    finally:
        server.terminate()
        server.wait(10)
