"""The producer's cheap paths, against real servers.

On a plain ``redis://`` URL a message goes out in one LPUSH of the envelope
kombu would have written (pyramid_scheduler/transports/redis/publish.py):
kombu's own consumers, ours and pscheduler must read it unchanged, signed
and compressed, and every failure must still end in kombu's bounded
retries.
On the other brokers a kombu Producer is kept per pooled connection and
used without kombu's retry wrappers until something fails.
"""
import gc
import json
import logging
import os
import socket
import threading
import time

import kombu
import pytest
import redis

from pyramid_scheduler import naming, signing, wire
from pyramid_scheduler.transports.redis import publish as redis_publish
from pyramid_scheduler.errors import BrokerUnavailable
from pyramid_scheduler.producer import Producer
from pyramid_scheduler.scheduler import Scheduler
from pyramid_scheduler.settings import parse_settings
from tests import jobs
from tests.conftest import poll, queued
from tests.daemon_helpers import (
    AMQP_URL, delete_broker_queues, producer, redis_settings, write_ini)

# Not in the fast lane (pytest -m "not slow"): starts daemons and publishes to
# Redis and RabbitMQ.
pytestmark = pytest.mark.slow

SECRET = 'fast-path-secret-0123456789abcdef'
SIGNED_AND_COMPRESSED = {'scheduler.broker.secret': SECRET,
                         'scheduler.broker.compressor': 'zlib'}


@pytest.fixture
def redis_conf(tmp_path):
    conf = dict(redis_settings(),
                **{'scheduler.database': str(tmp_path / 'db.sqlite'),
                   'scheduler.allowed_modules': 'tests.jobs'})
    yield conf
    delete_broker_queues(conf)


@pytest.fixture
def amqp_conf(tmp_path):
    conf = {'scheduler.broker.url': AMQP_URL,
            'scheduler.id': f'fast{os.getpid()}x{time.monotonic_ns()}',
            'scheduler.allowed_modules': 'tests.jobs',
            'scheduler.database': str(tmp_path / 'db.sqlite')}
    yield conf
    delete_broker_queues(conf)


@pytest.fixture
def make_producer():
    """``make_producer(settings)`` -> a Producer, closed after the test."""
    made = []

    def make(settings):
        made.append(Producer(settings))
        return made[-1]
    yield make
    for made_producer in made:
        made_producer.close()


def job_body(queue='jobs', value='x'):
    spec = {'id': 'job-1', 'kind': 'async', 'func': 'tests.jobs:noop',
            'args': [value], 'kwargs': {}, 'trigger': {}, 'options': {}}
    return wire.job_created(queue, spec)


def publish(producer, settings, body):
    target = naming.job_queue(settings, 'jobs')
    producer.publish(body, target.name, declare=[target])


def raw_messages(settings):
    """The texts on the job queue, oldest first, each delivery tag (unique
    to each message) replaced by TAG."""
    client = redis.Redis.from_url(settings.broker_url)
    try:
        name = naming.queue_name(settings, 'jobs')
        texts = [m.decode() for m in reversed(client.lrange(name, 0, -1))]
    finally:
        client.close()
    return [text.replace(json.loads(text)['properties']['delivery_tag'],
                         'TAG') for text in texts]


# --- the envelope ------------------------------------------------------------

@pytest.mark.parametrize('serializer', ['json', 'pickle'])
@pytest.mark.parametrize('compressor', ['none', 'zlib'])
def test_direct_publish_writes_what_kombu_writes(redis_conf, make_producer,
                                                 serializer, compressor):
    conf = dict(redis_conf, **{'scheduler.broker.secret': SECRET,
                               'scheduler.broker.serializer': serializer,
                               'scheduler.broker.compressor': compressor})
    settings = parse_settings(conf)
    ours = make_producer(settings)
    payload, content_type, encoding, headers = ours.encode(job_body())
    target = naming.job_queue(settings, 'jobs')
    # kombu's own Redis transport, as any kombu producer would use it.
    with kombu.Connection(settings.broker_url) as connection:
        connection.Producer().publish(
            payload, routing_key=target.name, exchange='',
            content_type=content_type, content_encoding=encoding,
            headers=dict(headers), declare=[target], delivery_mode=2,
            compression=settings.compressor)
    ours._direct.publish(target.name, payload, content_type, encoding,
                         headers, compression=settings.compressor)
    by_kombu, direct = raw_messages(settings)
    assert direct == by_kombu


def test_each_message_has_a_delivery_tag_of_its_own():
    first, second = (json.loads(redis_publish.envelope(
        'q', '{}', 'application/json', 'utf-8', {})) for _ in range(2))
    assert first['properties']['delivery_tag'] != \
        second['properties']['delivery_tag']


# --- who reads it ------------------------------------------------------------

def test_a_plain_kombu_consumer_reads_a_direct_message(redis_conf,
                                                       make_producer):
    settings = parse_settings(dict(redis_conf, **SIGNED_AND_COMPRESSED))
    ours = make_producer(settings)
    body = job_body(value='plain kombu')
    publish(ours, settings, body)
    assert ours._pool is None, 'the message went through kombu'

    received = []
    # kombu's own Redis transport, not pyramid_scheduler's.
    with kombu.Connection(settings.broker_url) as connection:
        queue = naming.job_queue(settings, 'jobs')
        with connection.Consumer(queue, accept=['json'],
                                 callbacks=[lambda b, m: received.append(
                                     (b, m)) or m.ack()]):
            poll(lambda: connection.drain_events(timeout=1) or received,
                 message='kombu got nothing')
    decoded, message = received[0]
    assert decoded == body
    assert message.headers['compression'] == 'application/x-gzip'
    signing.verify(settings.secrets, message.headers[signing.HEADER],
                   message.body, message.content_type,
                   message.content_encoding)


def test_the_runtime_runs_a_direct_job_signed_and_compressed(redis_conf,
                                                             tmp_path):
    settings = parse_settings(dict(redis_conf, **SIGNED_AND_COMPRESSED))
    out = str(tmp_path / 'out')
    worker, sender = Scheduler(settings), Scheduler(settings)
    worker.start()
    try:
        assert worker.runtime.wait_ready(10)
        sender.add_async_job(jobs.record, args=[out, 'direct'])
        assert sender.producer._pool is None
        poll(lambda: jobs.read_records(out), message='the job never ran')
        assert [r['values'] for r in jobs.read_records(out)] == [['direct']]
    finally:
        worker.shutdown(timeout=5)
        sender.shutdown()


def test_pscheduler_runs_a_direct_job_signed_and_compressed(tmp_path,
                                                            daemons):
    conf = dict(redis_settings(), **SIGNED_AND_COMPRESSED)
    ini = write_ini(tmp_path / 'app.ini', settings=conf)
    out = str(tmp_path / 'out')
    try:
        daemons(ini).wait_ready({'jobs'})
        with producer(ini) as scheduler:
            scheduler.add_async_job(jobs.record, args=[out, 'daemon'])
            assert scheduler.producer._pool is None
        poll(lambda: jobs.read_records(out), timeout=20,
             message='pscheduler never ran the job')
        assert [r['values'] for r in jobs.read_records(out)] == [['daemon']]
    finally:
        delete_broker_queues(conf)


# --- when it is used ---------------------------------------------------------

@pytest.mark.parametrize('url, expected', [
    ('redis://127.0.0.1:6379/3', dict(host='127.0.0.1', port=6379, db=3,
                                      username=None, password=None)),
    ('redis://', dict(host='127.0.0.1', port=6379, db=0)),
    ('redis://h:7000', dict(host='h', port=7000, db=0)),
    ('redis://user:p%40ss@h//5', dict(username='user', password='p@ss',
                                      db=5)),
    ('redis://:pw@h/', dict(username=None, password='pw', db=0)),
])
def test_plain_redis_urls_are_read_as_kombu_reads_them(url, expected):
    options = redis_publish.connection_options(url, send_timeout=2)
    assert {k: options[k] for k in expected} == expected
    assert options['socket_timeout'] == options['socket_connect_timeout'] == 2


@pytest.mark.parametrize('url', [
    'rediss://127.0.0.1:6379/0',
    'sentinel://127.0.0.1:26379',
    'redis+socket:///tmp/redis.sock',
    'redis://127.0.0.1:6379/0?global_keyprefix=app:',
    'redis://127.0.0.1:6379/0;redis://127.0.0.1:6380/0',
    'redis://127.0.0.1:6379/notanumber',
    'redis://127.0.0.1:6379///1',
    'pyamqp://guest:guest@127.0.0.1:5672//',
    'sqlite:///x.sqlite',
])
def test_other_urls_go_through_kombu(url):
    assert redis_publish.connection_options(url, send_timeout=2) is None


def test_only_queues_whose_declaration_sends_nothing_skip_kombu():
    plain = naming.kombu_queue('q')
    assert redis_publish.declares_nothing([plain, naming.kombu_queue('r')])
    assert redis_publish.declares_nothing([])
    for needs_kombu in (
            naming.reply_queue('q'),                      # auto-delete
            kombu.Queue('q', exchange=kombu.Exchange(''), expires=10),
            kombu.Queue('q', exchange=kombu.Exchange(''),
                        queue_arguments={'x-expires': 10000}),
            kombu.Queue('q', exchange=kombu.Exchange('named'),
                        routing_key='q')):
        assert not redis_publish.declares_nothing([plain, needs_kombu])


def test_a_queue_needing_kombu_goes_through_kombu(redis_conf, make_producer):
    settings = parse_settings(redis_conf)
    ours = make_producer(settings)
    target = kombu.Queue(naming.queue_name(settings, 'jobs'),
                         exchange=kombu.Exchange(''),
                         routing_key=naming.queue_name(settings, 'jobs'),
                         expires=60)
    ours.publish(job_body(), target.name, declare=[target])
    assert ours._pool is not None
    assert queued(settings) == 1


# --- failures ----------------------------------------------------------------

def test_a_failed_direct_publish_is_sent_through_kombu(redis_conf,
                                                       make_producer,
                                                       monkeypatch):
    settings = parse_settings(redis_conf)
    ours = make_producer(settings)

    def broken(*args, **kwargs):
        raise redis.ConnectionError('connection reset')
    monkeypatch.setattr(ours._direct, 'publish', broken)
    publish(ours, settings, job_body())
    assert ours._pool is not None
    assert queued(settings) == 1


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_unreachable_redis_is_broker_unavailable_without_password(
        tmp_path, make_producer):
    url = f'redis://:hunter2pw@127.0.0.1:{free_port()}/0'
    settings = parse_settings({
        'scheduler.broker.url': url,
        'scheduler.database': str(tmp_path / 'db.sqlite'),
        'scheduler.broker.send_timeout': '0.5s'})
    ours = make_producer(settings)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as error:
        publish(ours, settings, job_body())
    assert time.monotonic() - started < 0.5 + 1.5
    text = str(error.value) + repr(error.value.__cause__)
    assert 'hunter2pw' not in text
    assert ':***@' in str(error.value)


def test_a_forked_child_publishes_on_connections_of_its_own(redis_conf,
                                                            make_producer):
    settings = parse_settings(redis_conf)
    ours = make_producer(settings)
    publish(ours, settings, job_body(value='parent'))
    parents = list(ours._direct._idle)
    pid = os.fork()
    if pid == 0:    # the child: report through the exit code only
        code = 1
        try:
            publish(ours, settings, job_body(value='child'))
            mine = list(ours._direct._idle)
            code = 0 if mine and not set(mine) & set(parents) else 2
            # Closing, and collecting the copies of the parent's
            # connections, must leave the parent's sockets working.
            ours.close()
            parents.clear()
            gc.collect()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    publish(ours, settings, job_body(value='parent again'))
    assert ours._direct._idle == parents    # the same connection, still up
    assert queued(settings) == 3


def test_threads_publish_at_once_each_on_a_connection(redis_conf,
                                                      make_producer):
    settings = parse_settings(redis_conf)
    ours = make_producer(settings)
    threads = [threading.Thread(target=lambda: [
        publish(ours, settings, job_body(value=n)) for n in range(50)])
        for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert queued(settings) == 8 * 50
    assert 1 <= len(ours._direct._idle) <= 8
    assert ours._pool is None


# --- kombu, kept per connection ----------------------------------------------

def test_rabbitmq_keeps_one_producer_and_declares_once(amqp_conf,
                                                       make_producer,
                                                       monkeypatch):
    settings = parse_settings(amqp_conf)
    ours = make_producer(settings)
    declared = []
    real_declare = kombu.Queue.declare

    def counting_declare(queue, *args, **kwargs):
        declared.append(queue.name)
        return real_declare(queue, *args, **kwargs)
    monkeypatch.setattr(kombu.Queue, 'declare', counting_declare)
    for value in ('one', 'two', 'three'):
        publish(ours, settings, job_body(value=value))
    assert declared == [naming.queue_name(settings, 'jobs')]
    assert len(ours._producers) == 1
    assert queued(settings) == 3


def test_rabbitmq_publish_survives_a_broken_connection(amqp_conf,
                                                       make_producer, caplog):
    caplog.set_level(logging.DEBUG, logger='pyramid_scheduler.producer')
    settings = parse_settings(amqp_conf)
    ours = make_producer(settings)
    publish(ours, settings, job_body(value='before'))
    with ours._connections().acquire(block=True, timeout=5) as connection:
        # The broker side is gone; kombu still believes it is connected.
        connection.connection.sock.shutdown(socket.SHUT_RDWR)
    publish(ours, settings, job_body(value='after'))
    assert 'retrying until the deadline' in caplog.text
    poll(lambda: queued(settings) == 2,
         message=lambda: f'{queued(settings)} message(s) queued, not 2')
