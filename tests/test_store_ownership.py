"""Ownership of a queue's job store across hosts (issue 17, runtime part):
the PostgreSQL advisory lock and the lease row of other SQLAlchemy
databases, against a real PostgreSQL: one owner at a time, the owner
named for ``status``, and fencing (a lock whose session ended, or a holder
paused past its lease, fires nothing more).
"""
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid

import psycopg2
import pytest
import sqlalchemy

from pyramid_scheduler.runtime.advisorylock import AdvisoryLock, lock_keys
from pyramid_scheduler.runtime.leaselock import LeaseLock, read_owner
from pyramid_scheduler.runtime.storelock import (
    StoreLock, Timing, lock_path, store_kind, store_owners)
from pyramid_scheduler.settings import parse_settings
from tests.daemon_helpers import PG_URL, wait_for


def settings_for(tmp_path, url=PG_URL, failover='1s'):
    return parse_settings({
        'scheduler.jobstore.url': url,
        'scheduler.database': str(tmp_path / 'db.sqlite'),
        'scheduler.id': f'own{uuid.uuid4().hex[:10]}',
        'scheduler.failover': failover})


def pg_available():
    try:
        sqlalchemy.create_engine(PG_URL).connect().close()
        return True
    except Exception:
        return False


needs_pg = pytest.mark.skipif(not pg_available(),
                              reason='PostgreSQL is not reachable')


def test_timing_keeps_the_owner_fenced_before_anyone_can_take_over():
    timing = Timing.of(5.0)
    assert timing.fence < timing.lease
    assert timing.lease - timing.fence >= 2 * timing.beat
    assert timing.lease + timing.beat < 5.0   # a standby in time


def test_the_store_decides_which_lock(tmp_path):
    assert store_kind(settings_for(tmp_path, url='sqlite:///x.db')) == 'file'
    assert store_kind(settings_for(tmp_path)) == 'postgresql'
    # No MySQL driver here: the settings as parse_settings would give them.
    mysql = dataclasses.replace(settings_for(tmp_path),
                                jobstore_url='mysql://u@h/db')
    assert store_kind(mysql) == 'lease'


def test_failover_below_a_second_is_refused(tmp_path):
    with pytest.raises(Exception, match='at least 1s'):
        settings_for(tmp_path, failover='0.5s')


def test_a_file_lock_names_its_holder(tmp_path):
    settings = settings_for(tmp_path, url='sqlite:///' + str(
        tmp_path / 'db.sqlite'))
    lock = StoreLock(lock_path(settings, 'jobs'))
    assert store_owners(settings) == {'jobs': None}
    assert lock.try_acquire() and lock.may_fire()
    assert store_owners(settings)['jobs']['pid'] == os.getpid()
    lock.release()
    assert store_owners(settings) == {'jobs': None}


def test_an_sqlite_lock_lives_beside_its_file_not_in_a_private_tmp(
        tmp_path, monkeypatch):
    """The case of the issue: two processes on one host whose temporary
    directories differ (systemd's PrivateTmp=yes) met no lock."""
    settings = settings_for(tmp_path, url=f'sqlite:///{tmp_path}/jobs.db')
    paths = set()
    for directory in ('a', 'b'):
        monkeypatch.setenv('TMPDIR', str(tmp_path / directory))
        tempfile.tempdir = None
        paths.add(lock_path(settings, 'jobs'))
    tempfile.tempdir = None
    assert paths == {f'{tmp_path}/jobs.db.{settings.scheduler_id}.jobs.lock'}


@needs_pg
def test_one_advisory_owner_at_a_time_named_for_status(tmp_path):
    settings = settings_for(tmp_path)
    first, second = AdvisoryLock(settings, 'jobs'), AdvisoryLock(
        settings, 'jobs')
    try:
        assert first.try_acquire()
        assert first.may_fire()
        assert not second.try_acquire()
        assert not second.may_fire()
        owner = store_owners(settings)['jobs']
        assert owner['pid'] == os.getpid() and owner['host']
        first.release()
        assert wait_for(second.try_acquire, timeout=5)
        # Other queues, other locks.
        other = AdvisoryLock(settings, 'mail')
        assert other.try_acquire()
        other.release()
    finally:
        first.release()
        second.release()


@needs_pg
def test_an_ended_session_loses_the_lock_and_fires_nothing(tmp_path):
    settings = settings_for(tmp_path)
    lock, standby = AdvisoryLock(settings, 'jobs'), AdvisoryLock(
        settings, 'jobs')
    try:
        assert lock.try_acquire()
        terminate_holder(settings, 'jobs')
        assert wait_for(lambda: lock.lost is not None, timeout=5)
        assert not lock.may_fire()
        assert 'lost the ownership' in lock.lost
        assert wait_for(standby.try_acquire, timeout=5)
    finally:
        lock.release()
        standby.release()


def terminate_holder(settings, queue):
    first, second = lock_keys(settings, queue)
    dsn = sqlalchemy.engine.make_url(PG_URL)
    with psycopg2.connect(host=dsn.host, port=dsn.port or 5432,
                          user=dsn.username, dbname=dsn.database) as conn:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE "
                "locktype = 'advisory' AND granted AND classid::bigint = %s "
                "AND objid::bigint = %s",
                (first & 0xFFFFFFFF, second & 0xFFFFFFFF))
    conn.close()


HOLDER = textwrap.dedent('''
    import sys, time
    from pyramid_scheduler.settings import parse_settings
    from pyramid_scheduler.runtime.advisorylock import AdvisoryLock
    lock = AdvisoryLock(parse_settings({
        'scheduler.jobstore.url': sys.argv[1], 'scheduler.id': sys.argv[2],
        'scheduler.database': sys.argv[3], 'scheduler.failover': '1s'}),
        'jobs')
    assert lock.try_acquire()
    print('held', flush=True)
    while True:
        print('fire' if lock.may_fire() else
              'lost' if lock.lost else 'fenced', flush=True)
        time.sleep(0.05)
''')


@pytest.mark.slow
@needs_pg
def test_a_paused_owner_is_fenced_before_a_standby_takes_over(tmp_path):
    """SIGSTOP stands for a partition: the holder lives on, silent. The
    server ends its session after the lease; the standby takes over; the
    holder, resumed, says fenced or lost, never fire."""
    settings = settings_for(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, '-c', HOLDER, PG_URL, settings.scheduler_id,
         settings.database_path], stdout=subprocess.PIPE, text=True)
    standby = AdvisoryLock(settings, 'jobs')
    try:
        assert holder.stdout.readline().strip() == 'held'
        assert holder.stdout.readline().strip() == 'fire'
        assert not standby.try_acquire()
        holder.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        assert wait_for(standby.try_acquire, timeout=10)
        took_over = time.monotonic() - stopped
        assert Timing.of(1.0).lease - 0.1 <= took_over < 1.0 + 0.5
        holder.send_signal(signal.SIGCONT)
        # Whatever it printed before the stop; after it, never "fire".
        lines = [holder.stdout.readline().strip() for _ in range(40)]
        resumed = lines[lines.index('fenced'):] if 'fenced' in lines else lines
        assert 'fire' not in resumed[1:], lines
        assert lines[-1] == 'lost'
    finally:
        holder.kill()
        holder.wait()
        standby.release()


@needs_pg
def test_lease_rows_one_owner_and_a_fencing_token(tmp_path):
    settings = settings_for(tmp_path)
    first, second = LeaseLock(settings, 'jobs'), LeaseLock(settings, 'jobs')
    try:
        assert first.try_acquire() and first.may_fire()
        assert not second.try_acquire()
        assert read_owner(settings, 'jobs')['pid'] == os.getpid()
        first._stop.set()             # its keep-alive stops: it is silent
        first._thread.join()
        assert wait_for(lambda: not first.may_fire(), timeout=2)
        assert wait_for(second.try_acquire, timeout=5)
        assert second.token == first.token + 1
        assert not first._renew(time.time() + 10)   # fenced by the token
        second.release()
        assert read_owner(settings, 'jobs') is None
    finally:
        second.release()
