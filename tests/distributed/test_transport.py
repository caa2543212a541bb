"""``workers.transport`` against the real Redis server: a consumer that lives keeps what it holds past
the visibility timeout, and what a dead one held goes back to its queue."""

from __future__ import annotations

import os
import time

import pytest
import redis
from kombu import Connection, Exchange, Queue

from tests.distributed.conftest import Cluster
from workers.launch import LocalCluster

pytestmark = pytest.mark.integration
VISIBILITY_S = 2


def _connection(url: str) -> Connection:
    return Connection(url, transport="workers.transport:Transport",
                      transport_options={"visibility_timeout": VISIBILITY_S})


def test_a_held_message_outlives_the_visibility_timeout_while_its_consumer_lives(redis_cluster: LocalCluster) -> None:
    name = f"held.{time.time_ns()}"
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name)
    client = redis.Redis.from_url(redis_cluster.redis_url)
    with _connection(redis_cluster.redis_url) as producer_conn:
        producer_conn.Producer().publish({"n": 1}, exchange=queue.exchange, routing_key=name, declare=[queue])
    consumer = _connection(redis_cluster.redis_url)
    channel = consumer.channel()
    message = queue(channel).get(no_ack=False)
    assert message is not None and client.llen(name) == 0
    tag = message.delivery_tag
    time.sleep(3 * VISIBILITY_S)  # well past the timeout: the keeper thread refreshed its delivery time
    channel.qos.restore_visible(num=100, interval=1)  # what any worker's periodic scan does
    assert client.llen(name) == 0 and client.hexists("unacked", tag), "a live consumer's message was restored"
    # The consumer dies without acknowledging (no close, no restore): the keeper stops with the channel,
    # the delivery time ages, and the next scan by anyone puts the message back.
    channel.qos._closed.set()
    time.sleep(VISIBILITY_S + 1)
    with _connection(redis_cluster.redis_url) as other:
        other.channel().qos.restore_visible(num=100, interval=1)
    assert client.llen(name) == 1 and not client.hexists("unacked", tag)
    with _connection(redis_cluster.redis_url) as again:
        redelivered = queue(again.channel()).get(no_ack=True)
        assert redelivered is not None and redelivered.payload == {"n": 1}
    consumer.release()
    client.delete(name)
    client.close()


def test_workers_run_at_a_lower_cpu_priority(cluster: Cluster) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    for role in ("compress", "extract", "store", "update"):
        pid = cluster.procs.procs[role].pid
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, base + cluster.settings.worker_nice)


def test_a_scanner_that_dies_holding_the_restore_mutex_delays_redelivery_by_seconds(redis_cluster: LocalCluster) -> None:
    """Every worker's periodic scan holds kombu's ``unacked_mutex`` in Redis for a moment. A worker killed
    (or SIGSTOPped) inside that moment left it held for kombu's default 5 minutes, and no dead worker's
    message came back meanwhile; the workers' app lets it expire after a sixth of the visibility timeout."""
    from workers.app import make_app
    from workers.settings import DistributedSettings

    app = make_app(DistributedSettings(redis_url=redis_cluster.redis_url, visibility_timeout_s=4))
    name = f"mutex.{time.time_ns()}"
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name)
    client = redis.Redis.from_url(redis_cluster.redis_url)
    with app.connection_for_write() as producer_conn:
        producer_conn.Producer().publish({"n": 1}, exchange=queue.exchange, routing_key=name, declare=[queue])
    consumer = app.connection_for_write()
    channel = consumer.channel()
    assert queue(channel).get(no_ack=False) is not None
    channel.qos._closed.set()  # the consumer dies: its message ages past the visibility timeout
    time.sleep(4 + 1)
    with app.connection_for_write() as other:
        qos = other.channel().qos
        expire = qos.unacked_mutex_expire
        assert expire <= 4, "kombu's default: a dead scanner blocks redelivery for minutes"
        dead_scanner = client.lock(qos.unacked_mutex_key, timeout=expire)
        deadline = time.monotonic() + 30
        while not dead_scanner.acquire(blocking=False):  # other clusters' workers scan now and then
            assert time.monotonic() < deadline
            time.sleep(0.01)
        qos.restore_visible(num=100, interval=1)
        assert client.llen(name) == 0, "restored while the mutex was held"
        time.sleep(expire + 0.5)  # the holder never releases it: it died
        qos.restore_visible(num=100, interval=1)
    assert client.llen(name) == 1
    consumer.release()
    client.delete(name)
    client.close()
