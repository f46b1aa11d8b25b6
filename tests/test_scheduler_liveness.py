"""The threads a child depends on: a job store that fails for a while does
not stop its deferred jobs for good.

Real daemons: the embedded SQLite job store write-locked by the test past
its busy timeout (30 s), and a PostgreSQL job store whose connections are
terminated for 10 s. Either way the 1 s interval job fires again once the
store is back (the child may be replaced meanwhile), and ``status`` shows
each thread and the time of the last scheduler pass.
"""
import json
import os
import sqlite3
import threading
import time
import uuid
from collections import Counter

import pytest

from tests import jobs
from tests.daemon_helpers import producer, run_cli, wait_for, write_ini

pytestmark = pytest.mark.slow

PG_URL = os.environ.get(
    'PSCHEDULER_TEST_PG_URL',
    'postgresql+psycopg2://postgres@127.0.0.1:5432/pscheduler_test')
SQLITE_BUSY_TIMEOUT = 30   # transports.SQLITE_BUSY_TIMEOUT


def ticks(path):
    return [at for job_id, _, at in jobs.read_ids(path) if job_id == 'tick']


def start_ticking(ini, out):
    with producer(ini) as scheduler:
        scheduler.add_interval_job(jobs.append_id, seconds=1,
                                   args=(out, 'tick'), id='tick')
    wait_for(lambda: len(ticks(out)) >= 2, 30, what='the interval job')


def keeps_firing(out, since, count=3, timeout=30):
    wait_for(lambda: len([at for at in ticks(out) if at > since]) >= count,
             timeout, what=f'{count} ticks after {since:.1f}; ticks: '
                           f'{[round(at - since, 1) for at in ticks(out)]}')


def test_interval_job_fires_again_after_its_sqlite_store_was_locked(
        tmp_path, daemons):
    ini = write_ini(tmp_path / 'app.ini')
    daemon = daemons(ini)
    daemon.wait_ready({'jobs'})
    out = str(tmp_path / 'ids')
    start_ticking(ini, out)
    database = tmp_path / 'pscheduler.sqlite'
    locker = sqlite3.connect(str(database), timeout=30, isolation_level=None)
    locker.execute('BEGIN EXCLUSIVE')
    try:
        locked_at = time.time()
        # Past the busy timeout of the child's job store writes.
        wait_for(lambda: time.time() - locked_at > SQLITE_BUSY_TIMEOUT + 3,
                 SQLITE_BUSY_TIMEOUT + 10, interval=0.5,
                 what='the lock held past the busy timeout')
    finally:
        locker.execute('ROLLBACK')
        locker.close()
    released = time.time()
    keeps_firing(out, released)
    print(f'sqlite store locked {released - locked_at:.0f}s: the interval '
          f'job fired {len([a for a in ticks(out) if a > released])} '
          f'time(s) in the {time.time() - released:.1f}s after')
    status = admin_status(ini)
    assert status['threads']['scheduler'] == 'alive', status
    assert status['last_scheduler_pass'] >= released - 1, status


@pytest.fixture
def private_database():
    """A PostgreSQL database of this test's own, whose connections it may
    terminate without touching anyone else's."""
    import sqlalchemy
    name = f'pst_{uuid.uuid4().hex[:12]}'
    admin = sqlalchemy.create_engine(PG_URL, isolation_level='AUTOCOMMIT')
    # scripts/test starts PostgreSQL: fail, never skip, without it.
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE {name}'))
    try:
        yield admin, name, PG_URL.rsplit('/', 1)[0] + '/' + name
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(
                'SELECT pg_terminate_backend(pid) FROM pg_stat_activity '
                'WHERE datname = :name'), {'name': name})
            connection.execute(sqlalchemy.text(
                f'DROP DATABASE IF EXISTS {name}'))
        admin.dispose()


def terminate_connections(admin, name, seconds):
    """Terminate every connection to database ``name`` in a loop for
    ``seconds``; returns how many were terminated."""
    import sqlalchemy
    terminated = 0
    end = time.monotonic() + seconds
    with admin.connect() as connection:
        while time.monotonic() < end:
            terminated += connection.execute(sqlalchemy.text(
                'SELECT count(pg_terminate_backend(pid)) FROM '
                'pg_stat_activity WHERE datname = :name AND pid <> '
                'pg_backend_pid()'), {'name': name}).scalar()
            time.sleep(0.05)
    return terminated


def test_interval_job_fires_again_after_its_postgresql_connections_died(
        tmp_path, daemons, private_database):
    admin, name, url = private_database
    ini = write_ini(tmp_path / 'app.ini',
                    settings={'scheduler.jobstore.url': url})
    daemon = daemons(ini)
    daemon.wait_ready({'jobs'})
    out = str(tmp_path / 'ids')
    start_ticking(ini, out)
    result = {}
    killer = threading.Thread(target=lambda: result.update(
        terminated=terminate_connections(admin, name, 10)))
    killer.start()
    killer.join(30)
    released = time.time()
    keeps_firing(out, released)
    print(f'postgresql connections terminated for 10s '
          f'({result.get("terminated")} terminated): the interval job fired '
          f'{len([a for a in ticks(out) if a > released])} time(s) in the '
          f'{time.time() - released:.1f}s after; log:\n'
          f'{daemon.log()[-1500:]}')
    counts = Counter(round(at) for at in ticks(out))
    assert max(counts.values()) <= 2, 'an interval fired over and over'
    status = admin_status(ini)
    assert status['threads']['scheduler'] == 'alive', status
    assert status['last_scheduler_pass'] >= released - 1, status


@pytest.mark.parametrize('fault', ['die', 'hang'])
def test_a_dead_or_stuck_scheduler_thread_gets_the_child_replaced(
        tmp_path, daemons, fault):
    """APScheduler's thread killed (or stuck in a pass) while the consumer
    thread goes on answering: the child exits saying why, the master
    starts a new one, and the interval job fires again."""
    flag = tmp_path / 'fail-now'
    ini = write_ini(tmp_path / 'app.ini', settings={
        'scheduler.jobstore.default.class':
            'tests.failing_stores:FailOnceStore',
        'scheduler.jobstore.default.url':
            f'sqlite:///{tmp_path / "store.sqlite"}',
        'scheduler.jobstore.default.flag': str(flag),
        'scheduler.jobstore.default.fault': fault,
        'scheduler.child.heartbeat_timeout': '4s'})
    daemon = daemons(ini)
    daemon.wait_ready({'jobs'})
    out = str(tmp_path / 'ids')
    start_ticking(ini, out)
    first_child = daemon.child_pids()['jobs']
    flag.touch()
    wait_for(lambda: not flag.exists(), 10, what='the fault')
    failed_at = time.time()
    keeps_firing(out, failed_at + 1, timeout=40)
    log = daemon.log()
    assert 'the scheduler thread: ' in log, log[-3000:]
    assert daemon.child_pids()['jobs'] != first_child
    print(f'scheduler thread {fault}: the child was replaced and the '
          f'interval job fired again '
          f'{min(a for a in ticks(out) if a > failed_at + 1) - failed_at:.1f}s '
          f'after the fault')


def admin_status(ini):
    result = run_cli('--message', 'status', '--json', ini=ini)
    assert result.returncode == 0, result.stderr
    reply, = json.loads(result.stdout)['replies']
    return reply.get('result', reply)
