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


def test_unreachable_redis_fails_after_the_retry_window_with_a_clear_error() -> None:
    settings = DistributedSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_connect_timeout_s=0.5,
                                   producer_retry_s=1.0)
    producer = MemoryProducer(settings)
    start = time.monotonic()
    try:
        with pytest.raises(TransientError, match=r"unreachable \(retried for 1 s"):
            producer.enqueue_session("u1", SESSION)
    finally:
        producer.close()
    assert 0.9 < time.monotonic() - start < 5


def test_a_send_waits_across_a_short_redis_restart(tmp_path: Path) -> None:
    """Redis down for a second and a half: enqueue retries within its window, and the work is queued once."""
    import threading

    procs = LocalCluster(tmp_path, {})
    try:
        procs.start_redis()
        port = int(procs.redis_url.rsplit(":", 1)[1].split("/")[0])
        producer = MemoryProducer(DistributedSettings(redis_url=procs.redis_url, producer_retry_s=8.0,
                                                      queue_compress="restart.compress"))
        try:
            producer.enqueue_session("u1", SESSION)  # connected before the outage
            procs.stop_process("redis")
            restart = threading.Timer(1.5, lambda: procs.start_redis(port=port))
            restart.start()
            start = time.monotonic()
            tracking_id = producer.enqueue_session("u1", SESSION)
            waited = time.monotonic() - start
            restart.join()
            assert 1.0 < waited < 8.0
            assert producer.status(tracking_id)["state"] == "queued"
            assert producer.state.r.llen("restart.compress") == 2  # the first (append-only file) and the second
        finally:
            producer.close()
    finally:
        procs.stop()


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


def test_a_payload_over_the_size_limit_is_refused_and_nothing_is_queued(redis_cluster: LocalCluster) -> None:
    from workers.messages import PayloadTooLarge

    queue = f"big.compress.{time.time_ns()}"
    settings = DistributedSettings(redis_url=redis_cluster.redis_url, key_prefix=f"big{time.time_ns()}",
                                   queue_compress=queue, max_payload_bytes=2048)
    producer = MemoryProducer(settings)
    try:
        long_turn = {"session_id": "s1", "turns": [{"role": "user", "content": "word " * 1000}]}
        with pytest.raises(PayloadTooLarge, match=r"over the limit of 2,048 \(LIGHTMEM_MAX_PAYLOAD_BYTES\)"):
            producer.enqueue_session("u1", long_turn)
        assert isinstance(PayloadTooLarge("x"), ValueError)
        assert producer.state.r.llen(queue) == 0
        assert producer.state.info("u1").pending_items == 0  # nothing tracked either
        assert producer.enqueue_session("u1", SESSION)  # a small one goes through
        assert producer.state.r.llen(queue) == 1
    finally:
        producer.state.r.delete(queue)
        producer.close()


def test_wait_indexed_reads_the_oldest_items_first_and_reports_every_state(idle_producer: MemoryProducer) -> None:
    """States are read a chunk at a time, oldest first; whatever the mix, the answer names every item, and a
    wait that runs out counts the items still on their way."""
    producer = idle_producer
    ids = [f"w{k:03d}" for k in range(150)]
    states = {tid: "failed" if k % 7 == 0 else "indexed" for k, tid in enumerate(ids)}
    states[ids[100]] = "extracting"
    for tid, state in states.items():
        producer.state.r.hset(producer.state.keys.track(tid), "state", state)
    with pytest.raises(TimeoutError, match="1 of 150 items not indexed"):
        producer.wait_indexed(ids, timeout_s=0.3, poll_s=0.05)
    producer.state.r.hset(producer.state.keys.track(ids[100]), "state", "indexed")
    states[ids[100]] = "indexed"
    assert producer.wait_indexed(ids, timeout_s=5, poll_s=0.05) == states
