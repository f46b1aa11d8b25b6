"""Poison messages: logged, moved to the dead-letter queue, never fatal."""
import json
import os
import time

import pytest

from pyramid_scheduler import broker, wire
from pyramid_scheduler.scheduler import Scheduler
from pyramid_scheduler.settings import parse_settings
from tests.conftest import poll
from tests.jobs import read_records

# Not in the fast lane (pytest -m "not slow"): waits on retries and dead
# letters on every broker.
pytestmark = pytest.mark.slow

REDIS_URL = os.environ.get('PSCHEDULER_TEST_REDIS_URL',
                           'redis://127.0.0.1:6379/0')
COUNT = 1000


def malformed_messages(queue):
    """(body, content_type) pairs, each wrong in its own way."""
    valid_job = {'id': 'x', 'kind': 'async', 'func': 'tests.jobs:noop',
                 'args': [], 'kwargs': {}, 'trigger': {}, 'options': {}}
    kinds = [
        (b'\x00\xffnot json at all', 'application/json'),
        (b'{"truncated": ', 'application/json'),
        (json.dumps([1, 2, 3]), 'application/json'),
        (json.dumps({'protocol': 'other'}), 'application/json'),
        (json.dumps(dict(wire.job_created(queue, valid_job), version=99)),
         'application/json'),
        (json.dumps(dict(wire.job_created(queue, valid_job), type='job.eaten')),
         'application/json'),
        (json.dumps(wire.job_created(queue, dict(
            valid_job, func='no.such.module:gone'))), 'application/json'),
        (json.dumps(wire.job_created(queue, dict(
            valid_job, func='tests.jobs:no_such_function'))),
         'application/json'),
        (json.dumps(wire.job_created(queue, dict(valid_job, kind='weekly'))),
         'application/json'),
        (b'\x80\x04K\x01.', 'application/x-python-serialize'),
    ]
    for index in range(COUNT):
        yield kinds[index % len(kinds)]


@pytest.mark.parametrize('url', ['', REDIS_URL], ids=['sqlite', 'redis'])
def test_malformed_messages_are_dead_lettered(tmp_path, url, caplog):
    conf = {'scheduler.database': str(tmp_path / 'db.sqlite'),
            'scheduler.allowed_modules': 'tests.jobs',
            'scheduler.id': f'poison{os.getpid()}x{time.monotonic_ns()}'}
    if url:
        conf['scheduler.broker.url'] = url
    settings = parse_settings(conf)
    scheduler = Scheduler(settings)
    scheduler.start()
    out = str(tmp_path / 'out')
    try:
        assert scheduler.runtime.wait_ready(10)
        target = broker.job_queue(settings, 'jobs')
        with broker.connect(settings) as connection:
            producer = connection.Producer()
            for body, content_type in malformed_messages('jobs'):
                producer.publish(body, routing_key=target.name, exchange='',
                                 content_type=content_type,
                                 content_encoding='utf-8', declare=[target])
        scheduler.add_async_job('tests.jobs:record', args=[out, 'valid'])
        poll(lambda: read_records(out), timeout=60,
             message='a valid job after the poison did not run')
        runtime = scheduler.runtime
        assert runtime.running
        poll(lambda: runtime.stats.snapshot()['dead_lettered'] == COUNT)
        replies, missing = scheduler.send_message('dead-letters', wait=True)
        assert not missing
        assert replies[0]['result']['count'] == COUNT
        reasons = {d['reason'].split(':')[0] for d in runtime.dead_letters}
        assert len(reasons) > 3, reasons
        scheduler.send_message('purge-dead-letters', wait=True)
        replies, _ = scheduler.send_message('dead-letters', wait=True)
        assert replies[0]['result']['count'] == 0
    finally:
        scheduler.shutdown(timeout=5)


def test_handling_errors_retry_then_dead_letter(tmp_path, monkeypatch):
    """A failure in storing a job: transient ones are retried until they
    pass; any other goes to the dead-letter queue after a few tries instead
    of blocking the queue forever."""
    from sqlalchemy.exc import OperationalError

    settings = parse_settings({
        'scheduler.database': str(tmp_path / 'db.sqlite'),
        'scheduler.allowed_modules': 'tests.jobs',
        'scheduler.id': f'retry{os.getpid()}x{time.monotonic_ns()}'})
    scheduler = Scheduler(settings)
    scheduler.start()
    runtime = scheduler.runtime
    deferred = runtime.deferred
    real_store = deferred.store
    calls = {'transient': 0, 'broken': 0}

    def flaky_store(job):
        spec = job.spec
        if spec['args'] == ['transient'] and calls['transient'] < 5:
            calls['transient'] += 1
            raise OperationalError('INSERT', {}, Exception('database down'))
        if spec['args'] == ['broken']:
            calls['broken'] += 1
            raise ValueError('a bug in storing this job')
        return real_store(job)

    monkeypatch.setattr(deferred, 'store', flaky_store)
    try:
        assert runtime.wait_ready(10)
        broken = scheduler.add_date_job('tests.jobs:noop', time.time() + 60,
                                        args=['broken'])
        transient = scheduler.add_date_job(
            'tests.jobs:noop', time.time() + 60, args=['transient'])
        poll(lambda: runtime.stats.snapshot()['dead_lettered'] == 1,
             timeout=30)
        assert calls['broken'] == 3
        assert 'a bug in storing this job' in runtime.dead_letters[0]['reason']
        poll(lambda: deferred.get_job(transient, 'jobs'), timeout=30)
        assert calls['transient'] == 5
        assert deferred.get_job(broken, 'jobs') is None
    finally:
        scheduler.shutdown(timeout=5)
