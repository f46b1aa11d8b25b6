"""Batched acknowledgements (pyramid_scheduler/acks.py) on a real RabbitMQ.

What matters: one frame acknowledges a settled prefix of deliveries, and a
message whose job is still running is never acknowledged with the others,
so closing the connection (as a crash would) gives exactly the unfinished
ones back to the queue.
"""
import threading
import uuid

import kombu
import pytest

from pyramid_scheduler.runtime.acks import Acknowledgements
from tests.daemon_helpers import AMQP_URL


@pytest.fixture
def amqp_queue():
    name = f'test-acks-{uuid.uuid4().hex[:8]}'
    queue = kombu.Queue(name, routing_key=name, auto_delete=False)
    with kombu.Connection(AMQP_URL) as connection:
        queue(connection.default_channel).declare()
        producer = connection.Producer()
        for number in range(5):
            producer.publish({'n': number}, routing_key=name, exchange='',
                             serializer='json')
    yield queue
    with kombu.Connection(AMQP_URL) as connection:
        queue(connection.default_channel).delete()


def receive_all(amqp_queue, connection):
    """The five messages, delivered (unacknowledged) on ``connection``."""
    received = []
    consumer = kombu.Consumer(
        connection.channel(), queues=[amqp_queue], accept=['json'],
        callbacks=[lambda body, message: received.append(message)],
        prefetch_count=10)
    consumer.consume()
    while len(received) < 5:
        connection.drain_events(timeout=10)
    return received


def count_basic_acks(channel):
    calls = []
    basic_ack = channel.basic_ack

    def counting(*args, **kwargs):
        calls.append((args, kwargs))
        return basic_ack(*args, **kwargs)
    channel.basic_ack = counting
    return calls


def left_in_queue(amqp_queue):
    with kombu.Connection(AMQP_URL) as connection:
        _, count, _ = amqp_queue(connection.default_channel).queue_declare(
            passive=True)
    return count


def settle_and_close(amqp_queue, finished_numbers):
    """Deliver all five, finish some, settle, close like a crash would."""
    acks = Acknowledgements()
    with kombu.Connection(AMQP_URL) as connection:
        messages = receive_all(amqp_queue, connection)
        for message in messages:
            acks.delivered(message)
        calls = count_basic_acks(messages[0].channel)
        for number in finished_numbers:
            acks.finished(messages[number])
        acks.settle()
        states = [m.acknowledged for m in messages]
    return calls, states


def test_a_settled_prefix_is_acknowledged_in_one_frame(amqp_queue):
    calls, states = settle_and_close(amqp_queue, range(5))

    assert len(calls) == 1 and calls[0][1] == {'multiple': True}
    assert states == [True] * 5
    assert left_in_queue(amqp_queue) == 0


def test_a_running_job_first_keeps_the_others_single(amqp_queue):
    calls, states = settle_and_close(amqp_queue, [1, 2, 3, 4])

    assert len(calls) == 4
    assert all(not kwargs.get('multiple') for _, kwargs in calls)
    assert states == [False, True, True, True, True]
    # Only the job still running comes back.
    assert left_in_queue(amqp_queue) == 1


def test_a_running_job_in_the_middle_is_never_covered(amqp_queue):
    calls, states = settle_and_close(amqp_queue, [0, 1, 3, 4])

    # One multiple ack up to the running job, single acks behind it.
    assert [kwargs.get('multiple', False) for _, kwargs in calls] == [
        True, False, False]
    assert states == [True, True, False, True, True]
    assert left_in_queue(amqp_queue) == 1


def test_a_message_settled_elsewhere_does_not_block_the_prefix(amqp_queue):
    acks = Acknowledgements()
    with kombu.Connection(AMQP_URL) as connection:
        messages = receive_all(amqp_queue, connection)
        for message in messages:
            acks.delivered(message)
        messages[0].ack()   # say, a deferred job stored by the consumer
        calls = count_basic_acks(messages[0].channel)
        for message in messages[1:]:
            acks.finished(message)
        acks.settle()
    assert len(calls) == 1 and calls[0][1] == {'multiple': True}
    assert left_in_queue(amqp_queue) == 0


def test_unsettled_counts_what_workers_hold_until_settled(amqp_queue):
    """What the consumer thread reads to know its prefetch window is full,
    and the wait it does then instead of a drain."""
    acks = Acknowledgements()
    with kombu.Connection(AMQP_URL) as connection:
        messages = receive_all(amqp_queue, connection)
        for message in messages:
            acks.delivered(message)
            acks.expect(message)
        assert (acks.unsettled(), acks.pending()) == (5, 0)
        assert not acks.wait_finished(0.01)   # nobody finished: times out
        threading.Timer(0.05, acks.finished, [messages[0]]).start()
        assert acks.wait_finished(10)
        assert (acks.unsettled(), acks.pending()) == (5, 1)
        acks.settle()
        assert (acks.unsettled(), acks.pending()) == (4, 0)
        assert [m.acknowledged for m in messages] == [True] + [False] * 4
    assert left_in_queue(amqp_queue) == 4
