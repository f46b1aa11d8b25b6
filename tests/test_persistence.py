"""Deferred jobs live in a persistent job store: SQLite and PostgreSQL.

A job stored by one consumer process that is then SIGKILLed fires, once, in
the next consumer process.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

from pyramid_scheduler.scheduler import Scheduler
from pyramid_scheduler.settings import parse_settings
from tests.conftest import kill_processes, poll
from tests.daemon_helpers import PG_URL
from tests.jobs import read_records

# Not in the fast lane (pytest -m "not slow"): starts subprocesses.
pytestmark = pytest.mark.slow

REDIS_URL = os.environ.get('PSCHEDULER_TEST_REDIS_URL',
                           'redis://127.0.0.1:6379/0')

WORKER = """
import time
from pyramid_scheduler.scheduler import Scheduler
from pyramid_scheduler.settings import parse_settings
scheduler = Scheduler(parse_settings({conf!r}))
scheduler.start()
scheduler.runtime.wait_ready(30)
print('ready', flush=True)
time.sleep(120)
"""


def stored_ids(scheduler):
    replies, _ = scheduler.send_message('jobs', wait=True)
    return [job['id'] for reply in replies for job in reply['result']['jobs']]


def start_worker(conf):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    process = subprocess.Popen([sys.executable, '-c', WORKER.format(conf=conf)],
                               env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == 'ready'
    return process


@pytest.mark.parametrize('store', ['sqlite', 'postgresql'])
def test_date_job_survives_a_killed_consumer(tmp_path, store):
    conf = {'scheduler.database': str(tmp_path / 'db.sqlite'),
            'scheduler.broker.url': REDIS_URL,
            'scheduler.allowed_modules': 'tests.jobs',
            'scheduler.id': f'persist{os.getpid()}x{time.monotonic_ns()}'}
    if store == 'postgresql':
        conf['scheduler.jobstore.url'] = PG_URL
    out = str(tmp_path / 'out')
    producer = Scheduler(parse_settings(conf))
    first = start_worker(conf)
    second = None
    try:
        fire_at = time.time() + 4
        job_id = producer.add_date_job('tests.jobs:record', fire_at,
                                       args=[out, 'fired'])
        poll(lambda: stored_ids(producer) == [job_id])
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert read_records(out) == []
        second = start_worker(conf)
        poll(lambda: read_records(out), timeout=20)
        time.sleep(0.5)  # let a (wrong) second firing show up
        records = read_records(out)
        assert [r['values'] for r in records] == [['fired']], job_id
        assert records[0]['pid'] == second.pid
        assert records[0]['at'] >= fire_at
    finally:
        kill_processes(first, second)
        producer.shutdown()
