"""Nothing accepted is lost when the broker is killed (issue 13, finding 1).

RabbitMQ: every publish waits for the broker's confirm, so a job whose
``add_async_job`` returned is on the node's disk; a private node is killed
with SIGKILL right after the last send and restarted, and a daemon runs
every job. Redis: a server that would lose what it holds (append-only
off) is reported with a WARNING at start.
"""
import contextlib
import logging
import time
import types
import uuid
from collections import Counter

import pytest

from pyramid_scheduler import transports
from pyramid_scheduler.producer import Producer
from pyramid_scheduler.scheduler import Scheduler
from pyramid_scheduler.settings import parse_settings
from tests import jobs
from tests.daemon_helpers import (
    AMQP_URL, PersistentRedis, _free_port, producer, write_ini)
from tests.private_rabbit import PrivateRabbit

JOBS = 2000


def report(text):
    print(f'\n[confirms] {text}')


def ran(path):
    return Counter(job_id for job_id, _, _ in jobs.read_ids(path))


# --- RabbitMQ: publisher confirms --------------------------------------------

@pytest.mark.parametrize('url', [
    'amqp://guest:guest@127.0.0.1:5672//',
    'pyamqp://guest:guest@127.0.0.1:5672//',
    'amqps://guest:guest@127.0.0.1:5671//',
])
def test_amqp_connections_confirm_every_publish(tmp_path, url):
    settings = parse_settings({'scheduler.broker.url': url},
                              here=str(tmp_path))
    assert transports.connect(settings).transport_options[
        'confirm_publish'] is True
    # The daemon's consumer connection too: its outbox publishes (dead
    # letters, jobs passed on to the store owner, replies) on its channel.
    assert transports.connect(settings, consumer_slot=1).transport_options[
        'confirm_publish'] is True


def test_the_producers_channel_is_in_confirm_mode(tmp_path):
    settings = parse_settings({'scheduler.broker.url': AMQP_URL},
                              here=str(tmp_path))
    producer = Producer(settings)
    try:
        with producer._connections().acquire(block=True) as connection:
            connection.ensure_connection(timeout=5)
            assert connection.connection.confirm_publish is True
            channel = connection.default_channel
            assert channel.basic_publish == channel.basic_publish_confirm
    finally:
        producer.close()


def test_a_message_the_broker_refuses_raises_broker_unavailable(tmp_path):
    """A nack (here: a full queue that rejects publishes) is a job not
    sent, said as BrokerUnavailable, not a raw py-amqp error."""
    import kombu
    from pyramid_scheduler.errors import BrokerUnavailable
    settings = parse_settings({'scheduler.broker.url': AMQP_URL,
                               'scheduler.broker.send_timeout': '1s'},
                              here=str(tmp_path))
    full = kombu.Queue(f'pst-full-{uuid.uuid4().hex[:8]}', durable=False,
                       queue_arguments={'x-max-length': 1,
                                        'x-overflow': 'reject-publish'})
    producer = Producer(settings)
    try:
        producer.publish({'n': 1}, full.name, declare=[full])
        with pytest.raises(BrokerUnavailable) as raised:
            producer.publish({'n': 2}, full.name, declare=[full])
        assert 'MessageNacked' in str(raised.value)
    finally:
        with producer._connections().acquire(block=True) as connection:
            connection.default_channel.queue_delete(full.name)
        producer.close()


def test_the_daemons_outbox_publishes_are_confirmed(tmp_path):
    """Pass-ons, dead letters and replies go out on the consumer's channel:
    in confirm mode, and one really is confirmed by the broker."""
    import kombu
    from pyramid_scheduler.runtime.outbox import Outbox
    settings = parse_settings({'scheduler.broker.url': AMQP_URL},
                              here=str(tmp_path))
    connection = transports.connect(settings, consumer_slot=0)
    target = kombu.Queue(f'pst-confirm-{uuid.uuid4().hex[:8]}',
                         durable=False, auto_delete=False)
    try:
        channel = connection.channel()
        outbox = Outbox(settings, channel)
        producer = outbox._producer()
        assert producer.channel.basic_publish == \
            producer.channel.basic_publish_confirm
        message = types.SimpleNamespace(body=b'{}', content_type=None,
                                        content_encoding=None)
        outbox.republish(message, target, headers={})
        assert outbox.bind(target).queue_declare(passive=True)[1] == 1
    finally:
        with contextlib.suppress(Exception):
            connection.channel().queue_delete(target.name)
        connection.close()


def test_other_brokers_get_no_confirm_option(tmp_path):
    for url in ('redis://127.0.0.1:6379/11', None):
        raw = {'scheduler.broker.url': url} if url else {}
        settings = parse_settings(raw, here=str(tmp_path))
        assert 'confirm_publish' not in transports.transport_options(settings)


@pytest.mark.slow
def test_rabbitmq_killed_after_the_last_send_loses_no_job(tmp_path, daemons):
    node = PrivateRabbit(tmp_path / 'rabbit').start()
    try:
        settings = {'scheduler.broker.url': node.url,
                    'scheduler.id': f'pst-{uuid.uuid4().hex[:12]}'}
        ini = write_ini(tmp_path / 'app.ini', settings=settings)
        out = str(tmp_path / 'ids')
        sent = []
        started = time.monotonic()
        with producer(ini) as scheduler:
            for n in range(JOBS):
                scheduler.add_async_job(jobs.append_id, args=(out, f'j{n}'))
                sent.append(f'j{n}')
            node.kill()  # right after the last add_async_job returned
        sending = time.monotonic() - started
        node.start()
        daemon = daemons(ini)
        daemon.wait_ready({'jobs'}, timeout=30)
        counts = _wait_until_all_ran_or_stalled(out, sent)
        lost = [i for i in sent if not counts[i]]
        doubled = [i for i in sent if counts[i] > 1]
        report(f'RabbitMQ killed after {JOBS} sends ({sending:.1f}s to '
               f'send): sent {len(sent)}, ran once '
               f'{len(sent) - len(lost) - len(doubled)}, lost {len(lost)}, '
               f'doubled {len(doubled)}')
        assert not lost, f'{len(lost)} of {JOBS} jobs lost: {lost[:10]}'
    finally:
        node.kill()


def _wait_until_all_ran_or_stalled(out, sent, timeout=90, stall=15):
    """Counts once every job ran, or once none more ran for ``stall`` s."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        counts = ran(out)
        if all(counts[i] for i in sent):
            return counts
        if len(counts) != last:
            last, last_change = len(counts), time.monotonic()
        elif time.monotonic() - last_change > stall:
            return counts
        time.sleep(0.2)
    return ran(out)


# --- Redis: a warning when the server does not persist -----------------------

class VolatileRedis(PersistentRedis):
    """A private redis-server with the given ``appendonly`` and extra
    arguments (``--rename-command CONFIG ""``: one that refuses CONFIG)."""

    def __init__(self, directory, appendonly, *extra):
        super().__init__(directory, port=_free_port())
        self.arguments = ['--appendonly', appendonly, *extra]


def _persistence_warnings(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING
            and 'append-only persistence off' in r.getMessage()]


@pytest.mark.parametrize('appendonly, extra, warns', [
    ('no', (), True),
    ('yes', (), False),
    ('no', ('--rename-command', 'CONFIG', '""'), True),
    ('yes', ('--rename-command', 'CONFIG', '""'), False),
], ids=['appendonly-no', 'appendonly-yes', 'no-config-command-aof-off',
        'no-config-command-aof-on'])
def test_redis_without_append_only_is_reported_at_start(
        tmp_path, caplog, appendonly, extra, warns):
    caplog.set_level(logging.WARNING)
    server = VolatileRedis(tmp_path / 'redis', appendonly, *extra).start()
    try:
        settings = parse_settings({'scheduler.broker.url': server.url},
                                  here=str(tmp_path))
        scheduler = Scheduler(settings)
        scheduler.shutdown()
        found = _persistence_warnings(caplog)
        assert len(found) == (1 if warns else 0), caplog.text
        if warns:
            assert f'127.0.0.1:{server.port}' in found[0].getMessage()
    finally:
        server.kill()


def test_a_redis_that_answers_nothing_does_not_stop_a_start(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger='pyramid_scheduler')
    url = f'redis://127.0.0.1:{_free_port()}/0'  # nobody listens
    settings = parse_settings({'scheduler.broker.url': url},
                              here=str(tmp_path))
    Scheduler(settings).shutdown()
    assert not _persistence_warnings(caplog)
    assert 'could not ask the Redis broker' in caplog.text


@pytest.mark.slow
def test_the_daemon_child_warns_once_about_a_volatile_redis(tmp_path,
                                                             daemons):
    server = VolatileRedis(tmp_path / 'redis', 'no').start()
    try:
        ini = write_ini(tmp_path / 'app.ini', settings={
            'scheduler.broker.url': server.url,
            'scheduler.id': f'pst-{uuid.uuid4().hex[:12]}'})
        daemon = daemons(ini)
        child = daemon.wait_ready({'jobs'})['jobs']
        lines = [line for line in daemon.log().splitlines()
                 if 'append-only persistence off' in line]
        assert len(lines) == 1, daemon.log()
        assert 'WARN' in lines[0] and f':{child}]' in lines[0]
    finally:
        server.kill()
