"""Per-user state and the shared LLM rate limit against the real Redis server."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from lightmem_core import pipeline
from lightmem_core.models import Message
from lightmem_core.state import BufferedSegment, earliest_key, segment_key
from tests.distributed.conftest import Cluster
from workers.launch import LocalCluster
from workers.messages import send as send_payload
from workers.ratelimit import RedisRateLimiter
from workers.redis_state import RedisState

pytestmark = pytest.mark.integration


def _client(redis_cluster: LocalCluster) -> redis.Redis:
    return redis.Redis.from_url(redis_cluster.redis_url)


def test_a_dead_workers_lock_expires(redis_cluster: LocalCluster) -> None:
    client = _client(redis_cluster)
    state = RedisState(client, prefix=f"lock{time.time_ns()}", lock_timeout_s=1.0)
    dead = state.lock("u1").lock  # the bare redis-py lock: taken, never renewed nor released (a killed worker)
    assert dead.acquire(blocking=False)
    start = time.monotonic()
    with state.lock("u1"):
        waited = time.monotonic() - start
    assert 0.5 < waited < 5
    client.close()


def test_a_live_holder_keeps_its_lock_past_the_timeout(redis_cluster: LocalCluster) -> None:
    client = _client(redis_cluster)
    state = RedisState(client, prefix=f"lock{time.time_ns()}", lock_timeout_s=0.6)
    with state.lock("u1"):
        time.sleep(2.0)  # over three timeouts: the keeper renews it
        assert not state.lock("u1").acquire(blocking=False)
    with state.lock("u1"):  # released on exit: free at once
        pass
    client.close()


def test_appends_are_idempotent_and_ordered_by_time_then_turn(redis_cluster: LocalCluster) -> None:
    client = _client(redis_cluster)
    state = RedisState(client, prefix=f"order{time.time_ns()}")

    def msg(session: str, day: int, turn: int) -> Message:
        return Message(id=f"{session}-{turn}", user_id="u", session_id=session, turn_index=turn, role="user",
                       content="x", time_stamp=f"2025-01-{day:02d}T00:00:00Z")

    def seg(messages: list[Message], tokens: int) -> BufferedSegment:
        return BufferedSegment(key=segment_key(messages), session_id=messages[0].session_id, tokens=tokens,
                               messages=messages, tracking_id="t")

    late, early = [msg("b", 9, 0), msg("b", 9, 1)], [msg("a", 2, 0)]
    assert state.append("u", seg(late, 5))
    assert not state.append("u", seg(late, 5))  # the same segment again: nothing added
    assert state.append("u", seg(early, 3))
    assert state.info("u").tokens == 8
    batch = pipeline.take_batch(state, "u", owner="task-1", threshold_tokens=1, lease_s=60)
    assert batch is not None
    assert [s.session_id for s in batch.segments] == ["a"]  # the earlier session first, alone
    again = pipeline.take_batch(state, "u", owner="task-1", threshold_tokens=1, lease_s=60)
    assert again is not None and again.batch_id == batch.batch_id  # a re-run takes its own batch
    nxt = pipeline.take_batch(state, "u", owner="task-2", threshold_tokens=1, lease_s=60)
    assert nxt is not None and [s.topic_id for s in nxt.segments] == [2]
    assert state.finish_batch(batch)
    assert not state.finish_batch(batch)  # counted once
    client.close()


def test_queued_input_holds_back_only_the_segments_it_can_come_before(redis_cluster: LocalCluster) -> None:
    """A user's later sessions still in the queue do not hold back a full batch of earlier ones; a session
    queued out of order (earlier in time) holds back everything after it, and a flush waits for all."""
    client = _client(redis_cluster)
    state = RedisState(client, prefix=f"pending{time.time_ns()}")

    def session(name: str, day: int) -> list[Message]:
        return [Message(id=f"{name}-{t}", user_id="u", session_id=name, turn_index=t, role="user", content="x",
                        time_stamp=f"2025-01-{day:02d}T00:00:00Z") for t in range(2)]

    def queue(tracking_id: str, messages: list[Message], known: bool = True) -> None:
        pipe = client.pipeline()
        state.track_queued(pipe, tracking_id, "u", messages[0].session_id, len(messages),
                           first_key=earliest_key(messages) if known else "")
        pipe.execute()

    def buffer(tracking_id: str, messages: list[Message]) -> None:
        state.append("u", BufferedSegment(key=segment_key(messages), session_id=messages[0].session_id, tokens=10,
                                          messages=messages, tracking_id=tracking_id))
        state.item_buffered(tracking_id, "u", [segment_key(messages)])

    s1, s2, s3, s0 = session("s1", 2), session("s2", 3), session("s3", 4), session("s0", 1)
    for tracking_id, messages in (("t1", s1), ("t2", s2), ("t3", s3)):
        queue(tracking_id, messages)
    buffer("t1", s1)
    info = state.info("u")
    assert (info.pending_items, info.tokens_before_pending) == (2, 10)
    assert pipeline.take_batch(state, "u", "d", threshold_tokens=20, lease_s=60) is None  # 10 < 20 ready
    buffer("t2", s2)
    state.request_flush("u")
    assert pipeline.should_drain(state.info("u"), 20)
    batch = pipeline.take_batch(state, "u", "d", threshold_tokens=20, lease_s=60)  # s3 still queued
    assert batch is not None and [s.session_id for s in batch.segments] == ["s1", "s2"]
    assert state.info("u").flush  # the batch took the whole buffer, but the flush is for s3 too

    queue("t0", s0)  # queued late, but earlier in time than anything
    buffer("t3", s3)
    assert not pipeline.should_drain(state.info("u"), 10)  # s3 waits: s0 may come before it
    buffer("t0", s0)
    assert pipeline.should_drain(state.info("u"), 10)
    batch = pipeline.take_batch(state, "u", "d2", threshold_tokens=10, lease_s=60)
    assert batch is not None and [s.session_id for s in batch.segments] == ["s0"]

    queue("t4", session("s4", 9), known=False)  # tracked without its place: it holds back every drain
    assert not pipeline.should_drain(state.info("u"), 10)
    assert pipeline.take_batch(state, "u", "d3", threshold_tokens=10, lease_s=60) is None
    state.item_buffered("t4", "u", [])
    assert pipeline.should_drain(state.info("u"), 10)  # the flush asked before goes ahead now
    client.close()


def test_rate_limit_is_shared_through_redis(redis_cluster: LocalCluster) -> None:
    client = _client(redis_cluster)
    key = f"rl{time.time_ns()}"
    waits: list[float] = []

    def fake_sleep(s: float) -> None:
        waits.append(s)
        client.delete(key)  # as if the minute had passed

    first = RedisRateLimiter(client, key, requests_per_minute=2, sleep=fake_sleep)
    second = RedisRateLimiter(client, key, requests_per_minute=2, sleep=fake_sleep)  # another worker
    first.acquire(10)
    second.acquire(10)
    assert waits == []
    first.acquire(10)  # the third request in the minute, whichever worker sends it, waits
    assert len(waits) == 1 and waits[0] > 0
    client.delete(key)
    waits.clear()
    tokens = RedisRateLimiter(client, key, tokens_per_minute=100, sleep=fake_sleep)
    tokens.acquire(80)
    tokens.acquire(30)  # 80 + 30 > 100 tokens in the minute
    assert len(waits) == 1
    client.close()


def test_a_task_delivered_twice_leaves_one_result(cluster: Cluster) -> None:
    from producers.sdk import _session_item
    from workers.messages import CompressPayload, encode

    item = _session_item("twice-user", {"session_id": "t", "time_stamp": "2025-06-01T10:00:00Z",
                                        "turns": [{"role": "user", "content": "My favourite tea is sencha."}]}, None)
    pipe = cluster.producer.state.r.pipeline()
    cluster.producer.state.track_queued(pipe, item.tracking_id, item.user_id, item.session_id, 1)
    pipe.execute()
    payload = encode(CompressPayload(sessions=[item]))
    for _ in range(2):
        cluster.producer.app.send_task("lightmem.compress.sessions", args=[payload])
    cluster.producer.flush("twice-user")
    assert cluster.producer.wait_indexed([item.tracking_id], timeout_s=60) == {item.tracking_id: "indexed"}
    time.sleep(1)
    assert len(cluster.producer.entries("twice-user")) == 1


def test_idle_buffers_are_flushed(cluster: Cluster) -> None:
    """A buffer below the threshold, never flushed by its producer, is drained by the idle flush
    (``lightmem.update.flush_idle``, which beat runs every ``idle_check_s``)."""
    from workers.app import build_parts
    from workers.tasks.update import flush_idle_users

    tracking_id = cluster.producer.enqueue_session("idle-user", {
        "session_id": "i1", "time_stamp": "2025-07-01T10:00:00Z",
        "turns": [{"role": "user", "content": "I keep my spare key under the blue flowerpot."}]})
    deadline = time.monotonic() + 30
    while cluster.producer.status(tracking_id)["state"] != "buffered" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cluster.producer.status(tracking_id)["state"] == "buffered"  # below the threshold: it waits
    parts = build_parts(cluster.settings_with(idle_flush_s=0.1))

    def send(payload: Any) -> None:
        send_payload(cluster.producer.app, payload)

    assert "idle-user" in flush_idle_users(parts, send)
    assert cluster.producer.wait_indexed([tracking_id], timeout_s=60) == {tracking_id: "indexed"}
    parts.state.r.close()


def test_workers_serve_prometheus_metrics(cluster: Cluster) -> None:
    import httpx

    tracking_id = cluster.producer.enqueue_session("metrics-user", {
        "session_id": "m1", "time_stamp": "2025-08-01T10:00:00Z",
        "turns": [{"role": "user", "content": "I run the Lisbon half marathon every March."}]})
    cluster.producer.flush("metrics-user")
    assert cluster.producer.wait_indexed([tracking_id], timeout_s=60) == {tracking_id: "indexed"}
    store = httpx.get(f"http://127.0.0.1:{cluster.metrics_ports['store']}/metrics", timeout=10).text
    assert 'lightmem_stage_seconds_count{task="lightmem.store.index"}' in store
    entries = [line for line in store.splitlines() if line.startswith("lightmem_entries_stored_total ")]
    assert entries and float(entries[0].split()[1]) >= 1
    extract = httpx.get(f"http://127.0.0.1:{cluster.metrics_ports['extract']}/metrics", timeout=10).text
    assert 'lightmem_llm_calls_total{outcome="ok",purpose="extraction"}' in extract
    # Every worker's endpoint shows the depth of every queue (read from Redis at scrape time).
    for role in ("compress", "update"):
        text = httpx.get(f"http://127.0.0.1:{cluster.metrics_ports[role]}/metrics", timeout=10).text
        depths = {line.split('"')[1]: float(line.split()[-1]) for line in text.splitlines()
                  if line.startswith("lightmem_queue_depth{")}
        assert set(depths) == {cluster.settings.queue(r) for r in ("compress", "extract", "store", "update")}, role
        assert all(n >= 0 for n in depths.values())
        assert "lightmem_queue_held{" in text


def test_the_queue_gauges_report_what_redis_holds() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from workers.metrics import QueueDepth

    registry = CollectorRegistry()
    registry.register(QueueDepth(lambda: ({"lm.compress": 3, "lm.store": 0}, {"lm.store": 1})))
    text = generate_latest(registry).decode()
    assert 'lightmem_queue_depth{queue="lm.compress"} 3.0' in text
    assert 'lightmem_queue_held{queue="lm.store"} 1.0' in text and 'lightmem_queue_held{queue="lm.compress"} 0.0' in text

    def broken() -> tuple[dict[str, int], dict[str, int]]:
        raise ConnectionError("Redis down")

    down = CollectorRegistry()
    down.register(QueueDepth(broken))
    assert "lightmem_queue_depth" not in generate_latest(down).decode()  # absent, and the scrape still answers


def test_a_compress_task_killed_after_its_appends_and_run_again_does_not_report_indexed(
        redis_cluster: LocalCluster) -> None:
    """The first delivery buffers the item's segments and dies before reporting; the second finds every
    message known. The item is ``buffered`` until its segments are stored, then ``indexed``."""
    from lightmem_core.config import parse_config
    from lightmem_core.spec import PipelineSpec
    from lightmem_core.tokens import count_tokens

    client = _client(redis_cluster)
    state = RedisState(client, prefix=f"redeliver{time.time_ns()}")
    spec = PipelineSpec.of(parse_config({"memory_manager": {"model_name": "verbatim"}}))
    messages = [Message(id=f"m{i}", user_id="u", session_id="s", turn_index=i, role="user", content=f"fact {i}",
                        time_stamp="2025-01-02T00:00:00Z") for i in range(2)]
    pipe = client.pipeline()
    state.track_queued(pipe, "t1", "u", "s", len(messages))
    pipe.execute()

    def deliver() -> list[str]:
        fresh = pipeline.fresh_messages(state, messages)
        return pipeline.buffer_messages(state, "u", fresh, None, spec, count_tokens, force=True, tracking_id="t1")

    assert deliver()  # the first delivery appends, then its worker is killed before item_buffered
    assert deliver() == []  # the redelivery finds every message known
    state.item_buffered("t1", "u", [])
    assert state.tracking("t1")["state"] == "buffered"  # not "indexed": its data is only buffered
    assert state.info("u").pending_items == 0  # and it no longer holds back the drains
    batch = pipeline.take_batch(state, "u", owner="d1", threshold_tokens=1, lease_s=60)
    assert batch is not None and state.finish_batch(batch)
    assert state.tracking("t1")["state"] == "indexed"
    client.close()


def test_a_dead_owners_batch_is_taken_over_after_its_lease_and_a_renewed_one_is_not(
        redis_cluster: LocalCluster) -> None:
    from types import SimpleNamespace

    from workers.tasks.extract import lease_kept

    client = _client(redis_cluster)
    state = RedisState(client, prefix=f"lease{time.time_ns()}")
    client.sadd(state.keys.users, "u")
    first = [Message(id="m1", user_id="u", session_id="s", turn_index=0, role="user", content="x",
                     time_stamp="2025-01-02T00:00:00Z")]
    assert state.append("u", BufferedSegment(key=segment_key(first), session_id="s", tokens=5, messages=first))
    batch = pipeline.take_batch(state, "u", owner="worker-a", threshold_tokens=1, lease_s=0.6)
    assert batch is not None
    parts = SimpleNamespace(state=state, settings=SimpleNamespace(batch_lease_s=0.6))
    with lease_kept(parts, batch):  # type: ignore[arg-type]  # a live owner renews while it works
        time.sleep(1.5)
        assert pipeline.take_batch(state, "u", owner="worker-b", threshold_tokens=1, lease_s=0.6) is None
        assert state.stale_users(0.6) == []
    time.sleep(0.8)  # then the owner dies: nobody renews
    assert state.stale_users(0.6) == ["u"]  # the idle check drains this user...
    taken = pipeline.take_batch(state, "u", owner="worker-b", threshold_tokens=1, lease_s=0.6)
    assert taken is not None and taken.batch_id == batch.batch_id  # ...and another worker takes the batch over
    assert [s.topic_id for s in taken.segments] == [s.topic_id for s in batch.segments]
    assert state.stale_users(0.6) == []
    client.close()
