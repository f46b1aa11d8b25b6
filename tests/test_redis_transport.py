"""Our Redis transport (pyramid_scheduler/transports/redis/) on a real Redis.

A single-queue channel takes waiting messages in batches (one Lua script
moves them into kombu's unacknowledged hash), blocks in BRPOPLPUSH when the
queue is empty, and acknowledges a turn's messages in one pipeline. These
tests check that every message is always somewhere: in the queue, in the
fetched list, or recorded as unacknowledged in kombu's own format.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid

import kombu
import pytest
import redis

from pyramid_scheduler import transports
from pyramid_scheduler.transports.redis import channel as redis_channel
from tests.conftest import poll
from tests.daemon_helpers import REDIS_URL

# Not in the fast lane (pytest -m "not slow"): starts consumer subprocesses on
# Redis.
pytestmark = pytest.mark.slow


DB = 12
URL = f'{REDIS_URL.rsplit("/", 1)[0]}/{DB}'


@pytest.fixture
def queue_name():
    name = f'test-redis-transport-{uuid.uuid4().hex[:8]}'
    yield name
    client = redis.Redis.from_url(URL)
    client.delete(name, redis_channel.fetched_key(name))
    client.close()


@pytest.fixture
def connection():
    conn = kombu.Connection(URL, transport=redis_channel.Transport)
    yield conn
    conn.release()


def publish(connection, queue_name, count):
    producer = connection.Producer()
    for number in range(count):
        producer.publish({'n': number}, routing_key=queue_name, exchange='',
                         serializer='json')


def consume(connection, queue_name, no_ack=False, prefetch=100):
    received = []
    channel = connection.channel()
    consumer = kombu.Consumer(
        channel, queues=[kombu.Queue(queue_name, routing_key=queue_name)],
        callbacks=[lambda body, message: received.append(message)],
        no_ack=no_ack, prefetch_count=prefetch, accept=['json'])
    consumer.consume()
    return channel, received


def recorded(channel, queue_name):
    """kombu's unacknowledged records of ``queue_name``: {tag: record}."""
    client = redis.Redis.from_url(URL)
    try:
        entries = client.hgetall(channel.unacked_key)
        index = {tag.decode() for tag in
                 client.zrange(channel.unacked_index_key, 0, -1)}
    finally:
        client.close()
    records = {}
    for tag, raw in entries.items():
        record = json.loads(raw)
        if record[2] == queue_name:
            assert tag.decode() in index
            records[tag.decode()] = record
    return records


def test_one_fetch_takes_a_batch_recorded_in_kombus_format(
        connection, queue_name):
    publish(connection, queue_name, 10)
    channel, received = consume(connection, queue_name)

    connection.drain_events(timeout=5)

    # All ten from one round trip, each recorded as kombu records them.
    assert [m.payload['n'] for m in received] == list(range(10))
    records = recorded(channel, queue_name)
    assert set(records) == {m.delivery_tag for m in received}
    for message in received:
        payload, exchange, routing_key = records[message.delivery_tag]
        assert payload['properties']['delivery_tag'] == message.delivery_tag
        assert (exchange, routing_key) == ('', queue_name)

    channel.basic_ack_many([m.delivery_tag for m in received])
    assert recorded(channel, queue_name) == {}
    assert channel.qos.can_consume_max_estimate() == 100


def test_the_batch_stays_within_the_prefetch_window(connection, queue_name):
    publish(connection, queue_name, 10)
    channel, received = consume(connection, queue_name, prefetch=4)

    connection.drain_events(timeout=5)

    assert len(received) == 4
    assert len(recorded(channel, queue_name)) == 4
    client = redis.Redis.from_url(URL)
    assert client.llen(queue_name) == 6
    client.close()


def test_an_empty_queue_blocks_and_then_delivers(connection, queue_name):
    channel, received = consume(connection, queue_name)
    with pytest.raises(TimeoutError):
        connection.drain_events(timeout=0.3)

    publish(kombu.Connection(URL), queue_name, 1)
    poll(lambda: connection.drain_events(timeout=1) or received, timeout=10)

    # Taken by BRPOPLPUSH, then (at the next fetch) recorded, and out of
    # the fetched list.
    assert len(received) == 1
    with pytest.raises(TimeoutError):
        connection.drain_events(timeout=0.3)
    assert set(recorded(channel, queue_name)) == {received[0].delivery_tag}
    client = redis.Redis.from_url(URL)
    assert client.llen(redis_channel.fetched_key(queue_name)) == 0
    client.close()
    received[0].ack()
    assert recorded(channel, queue_name) == {}


def consume_settling(connection, queue_name, settle):
    """A consumer whose callback notes where its message is (the fetched
    list's length, the records), then settles it with ``settle(message)``."""
    seen = []
    client = redis.Redis.from_url(URL)
    channel = connection.channel()

    def on_message(body, message):
        seen.append((client.llen(channel.fetched_key(queue_name)),
                     set(recorded(channel, queue_name))))
        settle(message)
    consumer = kombu.Consumer(
        channel, queues=[kombu.Queue(queue_name, routing_key=queue_name)],
        callbacks=[on_message], accept=['json'])
    consumer.consume()
    with pytest.raises(TimeoutError):   # the queue is empty: BRPOPLPUSH
        connection.drain_events(timeout=0.3)
    publish(kombu.Connection(URL), queue_name, 1)
    poll(lambda: connection.drain_events(timeout=1) or seen, timeout=10)
    return channel, client, seen


def test_a_fetched_message_is_recorded_once_handed_on(
        connection, queue_name):
    held = []
    channel, client, seen = consume_settling(connection, queue_name,
                                             held.append)

    # While the callback ran, and until the next fetch, the message was
    # safe in the fetched list: the record (one round trip) does not hold
    # up its job.
    assert seen == [(1, set())]
    assert client.llen(channel.fetched_key(queue_name)) == 1
    with pytest.raises(TimeoutError):
        connection.drain_events(timeout=0.3)
    assert set(recorded(channel, queue_name)) == {held[0].delivery_tag}
    assert client.llen(channel.fetched_key(queue_name)) == 0
    held[0].ack()
    assert recorded(channel, queue_name) == {}
    client.close()


@pytest.mark.parametrize('settle, left_in_queue', [
    (lambda message: message.ack(), 0),
    (lambda message: message.reject(), 0),
    (lambda message: message.reject(requeue=True), 1),
    (lambda message: message.requeue(), 1),
])
def test_a_message_settled_by_its_callback_is_settled_once(
        connection, queue_name, settle, left_in_queue):
    channel, client, seen = consume_settling(connection, queue_name, settle)

    assert seen == [(1, set())]
    assert recorded(channel, queue_name) == {}
    assert client.llen(channel.fetched_key(queue_name)) == 0
    assert client.llen(queue_name) == left_in_queue
    client.close()


def test_an_unreadable_item_is_dropped_and_the_rest_delivered(
        connection, queue_name, caplog):
    publish(connection, queue_name, 2)
    client = redis.Redis.from_url(URL)
    client.lpush(queue_name, b'not json {')
    publish(connection, queue_name, 2)
    channel, received = consume(connection, queue_name)

    connection.drain_events(timeout=5)

    assert [m.payload['n'] for m in received] == [0, 1, 0, 1]
    assert 'not a kombu message' in caplog.text
    assert client.llen(redis_channel.fetched_key(queue_name)) == 0
    assert client.llen(queue_name) == 0
    client.close()


def test_a_consumer_without_acks_leaves_nothing_recorded(
        connection, queue_name):
    publish(connection, queue_name, 5)
    channel, received = consume(connection, queue_name, no_ack=True)

    connection.drain_events(timeout=5)

    assert len(received) == 5
    assert recorded(channel, queue_name) == {}


def test_a_consumer_killed_holding_a_batch_loses_none_of_it(
        tmp_path, connection, queue_name):
    publish(connection, queue_name, 20)
    script = tmp_path / 'consume.py'
    script.write_text(textwrap.dedent(f'''
        import os, signal, sys, kombu
        from pyramid_scheduler.transports.redis import channel as redis_channel
        conn = kombu.Connection({URL!r}, transport=redis_channel.Transport)
        got = []
        consumer = kombu.Consumer(
            conn.channel(), queues=[kombu.Queue({queue_name!r})],
            callbacks=[lambda body, message: got.append(message)],
            prefetch_count=100, accept=['json'])
        consumer.consume()
        conn.drain_events(timeout=10)
        print(len(got), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    '''))
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    result = subprocess.run([sys.executable, str(script)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert result.stdout.strip() == '20'

    # The next consumer of the queue puts back what the dead one held.
    channel = connection.channel()
    assert transports.restore_orphaned_messages(channel, {queue_name}) == 20
    channel, received = consume(connection, queue_name)
    connection.drain_events(timeout=5)
    assert sorted(m.payload['n'] for m in received) == list(range(20))


def test_after_a_reconnect_only_what_the_process_holds_stays_recorded(
        connection, queue_name):
    # A fetch whose reply a connection loss cut short leaves its messages
    # recorded as unacknowledged with nobody holding them; the runtime
    # restores those when it reconnects, and keeps the ones it holds.
    publish(connection, queue_name, 3)
    channel, received = consume(connection, queue_name)
    connection.drain_events(timeout=5)
    held = received[0].delivery_tag

    restored = transports.restore_orphaned_messages(
        connection.channel(), {queue_name}, keep={held})

    assert restored == 2
    assert set(recorded(channel, queue_name)) == {held}
    client = redis.Redis.from_url(URL)
    assert client.llen(queue_name) == 2
    client.close()
