"""Broker outages and crashed consumers, against real servers.

A private redis-server (on a free loopback port) is started for the outage
test, because the test kills it; the shared servers are left alone.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from pyramid_scheduler.errors import BrokerUnavailable
from pyramid_scheduler.scheduler import Scheduler
from pyramid_scheduler.settings import parse_settings
from tests.conftest import kill_processes, poll
from tests.jobs import read_records

# Not in the fast lane (pytest -m "not slow"): starts subprocesses and waits
# out broker outages.
pytestmark = pytest.mark.slow

REDIS_URL = os.environ.get('PSCHEDULER_TEST_REDIS_URL',
                           'redis://127.0.0.1:6379/0')
AMQP_URL = os.environ.get('PSCHEDULER_TEST_AMQP_URL',
                          'pyamqp://guest:guest@127.0.0.1:5672//')


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """A redis-server of our own, that a test may kill and restart."""

    def __init__(self, directory):
        self.port = free_port()
        self.directory = directory
        self.process = None

    @property
    def url(self):
        return f'redis://127.0.0.1:{self.port}/0'

    def start(self):
        self.process = subprocess.Popen(
            [shutil.which('redis-server'), '--port', str(self.port),
             '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
             '--dir', str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        poll(self._answers, message='private redis-server did not start')

    def _answers(self):
        try:
            with socket.create_connection(('127.0.0.1', self.port), 0.2):
                return True
        except OSError:
            return False

    def kill(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


def make_settings(tmp_path, url, **extra):
    conf = {'scheduler.broker.url': url,
            'scheduler.database': str(tmp_path / 'db.sqlite'),
            'scheduler.allowed_modules': 'tests.jobs',
            'scheduler.id': f'outage{os.getpid()}x{time.monotonic_ns()}'}
    conf.update(extra)
    return parse_settings(conf)


def test_redis_outage_producer_bounded_and_consumer_resumes(
        tmp_path, private_redis):
    settings = make_settings(tmp_path, private_redis.url,
                             **{'scheduler.broker.send_timeout': '1s'})
    out = str(tmp_path / 'out')
    worker = Scheduler(settings)
    producer = Scheduler(settings)
    worker.start()
    try:
        assert worker.runtime.wait_ready(10)
        producer.add_async_job('tests.jobs:record', args=[out, 'before'])
        poll(lambda: len(read_records(out)) == 1)

        private_redis.kill()
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as error:
            producer.add_async_job('tests.jobs:record', args=[out, 'lost'])
        waited = time.monotonic() - started
        assert waited < 1 + 1.5, f'producer blocked {waited:.2f}s'
        assert 'send_timeout' in str(error.value)

        private_redis.start()
        # Accepted once the broker is back, and run by the same runtime,
        # which reconnected by itself.
        poll(lambda: _try_add(producer, out, 'after'), timeout=20)
        poll(lambda: [r['values'] for r in read_records(out)]
             == [['before'], ['after']], timeout=20)
        assert worker.runtime.running
    finally:
        worker.shutdown(timeout=5)
        producer.shutdown()


def _try_add(scheduler, out, value):
    try:
        scheduler.add_async_job('tests.jobs:record', args=[out, value])
        return True
    except BrokerUnavailable:
        return False


WORKER = """
import sys, time
from pyramid_scheduler.scheduler import Scheduler
from pyramid_scheduler.settings import parse_settings
scheduler = Scheduler(parse_settings({conf!r}))
scheduler.start()
time.sleep(120)
"""


@pytest.mark.parametrize('url', [REDIS_URL, AMQP_URL],
                         ids=['redis', 'rabbitmq'])
def test_async_job_of_a_killed_consumer_runs_again(tmp_path, url):
    """At-least-once: a job running when its consumer dies runs again.

    On Redis this does not wait for the visibility timeout (an hour): the
    next runtime of the queue restores its dead predecessor's messages.
    """
    conf = {'scheduler.broker.url': url,
            'scheduler.database': str(tmp_path / 'db.sqlite'),
            'scheduler.allowed_modules': 'tests.jobs',
            'scheduler.id': f'killed{os.getpid()}x{time.monotonic_ns()}'}
    out = str(tmp_path / 'out')
    producer = Scheduler(parse_settings(conf))
    producer.add_async_job('tests.jobs:record_then_sleep',
                           args=[out, 60, 'once'])
    code = WORKER.format(conf=conf)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    first = subprocess.Popen([sys.executable, '-c', code], env=env)
    second = None
    try:
        poll(lambda: len(read_records(out)) == 1, timeout=20)
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = subprocess.Popen([sys.executable, '-c', code], env=env)
        poll(lambda: len(read_records(out)) == 2, timeout=20,
             message='the killed consumer\'s job did not run again')
        assert read_records(out)[1]['pid'] == second.pid
    finally:
        kill_processes(first, second)
        producer.shutdown()


def test_stop_during_an_outage_does_not_wait_for_the_broker(
        tmp_path, private_redis):
    settings = make_settings(tmp_path, private_redis.url,
                             **{'scheduler.shutdown_timeout': '20s'})
    worker = Scheduler(settings)
    worker.start()
    runtime = worker.runtime
    assert runtime.wait_ready(10)
    private_redis.kill()
    started = time.monotonic()
    worker.shutdown()
    took = time.monotonic() - started
    poll(lambda: not runtime.running, message='consumer thread still runs')
    # Nothing runs, so nothing is worth waiting the 20 s drain for.
    assert took < 5, f'shutdown took {took:.1f}s'
