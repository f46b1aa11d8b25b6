"""Job status records, unique ids and canceling a queued async job, on a
real daemon and each broker (issue 15).

Each daemon has one worker thread: a job held by a gate file keeps the
jobs behind it queued (received, waiting for the worker), so every state
can be seen as it is, then each end.
"""
import datetime
import os
import signal
import time

import pytest

from pyramid_scheduler import status
from pyramid_scheduler.runtime.records import Records
from pyramid_scheduler.settings import parse_settings
from tests import jobs
from tests.daemon_helpers import (
    PG_URL, producer, start_one_worker_daemon, state_of, wait_for, write_ini)

BROKERS = ('sqlite', 'redis', 'rabbitmq')


def values(path):
    return [record['values'][0] for record in jobs.read_records(path)]


def assert_aware(*moments):
    for moment in moments:
        assert isinstance(moment, datetime.datetime)
        assert moment.utcoffset() == datetime.timedelta(0)


@pytest.mark.parametrize('broker,store', [
    ('sqlite', 'sqlite'), ('redis', 'sqlite'), ('rabbitmq', 'sqlite'),
    ('redis', 'postgresql')])
def test_every_state_of_a_job_then_its_end(tmp_path, broker_for, daemons,
                                           broker, store):
    extra = {'scheduler.jobstore.url': PG_URL} if store == 'postgresql' \
        else {}
    ini, daemon, _, _ = start_one_worker_daemon(
        tmp_path, daemons, broker_for, broker, **extra)
    out, gate = str(tmp_path / 'out'), str(tmp_path / 'gate')
    with producer(ini) as scheduler:
        held = scheduler.add_async_job(jobs.record_when_released,
                                       args=(out, gate, 'held'))
        state_of(scheduler, held, status.RUNNING, daemon)
        waiting = scheduler.add_async_job(jobs.echo, args=(out, 'waiting'))
        canceled = scheduler.add_async_job(jobs.echo, args=(out, 'canceled'))
        failing = scheduler.add_async_job(jobs.fail, args=('boom',))
        state_of(scheduler, canceled, status.QUEUED, daemon)
        scheduler.cancel_job(canceled)
        state_of(scheduler, canceled, status.CANCELED, daemon)
        later = datetime.datetime.now(datetime.timezone.utc) + \
            datetime.timedelta(hours=1)
        dated = scheduler.add_date_job(jobs.echo, later, args=(out, 'date'))
        state_of(scheduler, dated, status.SCHEDULED, daemon)
        with pytest.raises(TimeoutError):
            scheduler.wait(dated, timeout=0.3)
        open(gate, 'w').close()

        done = scheduler.wait(waiting, timeout=30)
        assert (done.state, done.result, done.attempts) == (
            status.SUCCEEDED, 'waiting', 1)
        assert (done.id, done.queue, done.func, done.kind) == (
            waiting, 'jobs', 'tests.jobs:echo', 'async')
        assert_aware(done.created, done.started, done.finished)
        assert done.created <= done.started <= done.finished
        assert done.error is None and done.traceback is None

        failed = scheduler.wait(failing, timeout=30)
        assert failed.state == status.FAILED
        assert failed.error == 'RuntimeError: boom'
        assert 'raise RuntimeError(message)' in failed.traceback
        assert scheduler.wait(held, timeout=30).result == 'held'
        assert scheduler.wait(canceled, timeout=1).state == status.CANCELED
        assert scheduler.job_status('no-such-job') is None
    assert sorted(values(out)) == ['held', 'waiting']


@pytest.mark.parametrize('broker', BROKERS)
def test_a_second_job_with_the_id_of_a_pending_one_is_not_run(
        tmp_path, broker_for, daemons, broker):
    settings = broker_for(broker, **{'scheduler.executor.size': '1'})
    ini = write_ini(tmp_path / 'app.ini', settings=settings)
    out, gate = str(tmp_path / 'out'), str(tmp_path / 'gate')
    with producer(ini) as scheduler:
        # Both sent before the daemon starts, so before any record exists:
        # the runtime tells them apart.
        first = scheduler.add_async_job(jobs.record_when_released,
                                        args=(out, gate, 'first'), id='once')
        second = scheduler.add_async_job(jobs.record_when_released,
                                         args=(out, gate, 'second'), id='once')
        assert first == second == 'once' and first.added and second.added
        daemon = daemons(ini)
        state_of(scheduler, 'once', status.RUNNING, daemon)
        # Now the producer sees it pending and sends nothing.
        third = scheduler.add_async_job(jobs.echo, args=(out, 'third'),
                                        id='once')
        assert third == 'once' and third.added is False
        open(gate, 'w').close()
        assert scheduler.wait('once', timeout=30).result == 'first'
        wait_for(lambda: daemon.log_count('not run: a job with this id') >= 1,
                 what='the second job refused')
        # Ended, the id is free again.
        again = scheduler.add_async_job(jobs.echo, args=(out, 'again'),
                                        id='once')
        assert again.added
        wait_for(lambda: 'again' in values(out), what='the job run again')
    assert sorted(values(out)) == ['again', 'first']


@pytest.mark.parametrize('broker', BROKERS)
def test_a_unique_job_redelivered_after_a_kill_runs_again(
        tmp_path, broker_for, daemons, broker):
    # Its record reads queued or running with its own token: the same job
    # again (its process died), not a second job of its id: it runs.
    ini, daemon, _, _ = start_one_worker_daemon(tmp_path, daemons,
                                                broker_for, broker)
    out = str(tmp_path / 'ids')
    with producer(ini) as scheduler:
        scheduler.add_async_job(jobs.append_id, args=(out, 'once', 120),
                                id='kept')
        wait_for(lambda: jobs.read_ids(out), what='the job to start')
        [(_, pid, _)] = jobs.read_ids(out)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: len(jobs.read_ids(out)) == 2, timeout=60,
                 what=f'the job to run again; log:\n{daemon.log()}')
        assert jobs.read_ids(out)[1][1] != pid
        state_of(scheduler, 'kept', status.RUNNING, daemon)


def test_final_records_older_than_the_ttl_are_deleted(tmp_path):
    settings = parse_settings({'scheduler.results.ttl': '1h'},
                              here=str(tmp_path))
    records = Records(settings, prune=True)
    job = jobs_info('old')
    records.running(job)
    records.succeeded(job, 1)
    records.queued(jobs_info('pending'))
    records.flush()
    assert records.prune(time.time() + 1800) == 0
    assert records.prune(time.time() + 3601) == 1
    assert records.table.get('old') is None
    assert records.table.get('pending').state == status.QUEUED
    records.stop()


def jobs_info(job_id):
    from pyramid_scheduler.events import JobInfo
    return JobInfo({'id': job_id, 'kind': 'async', 'func': 'tests.jobs:noop',
                    'args': [], 'kwargs': {}, 'trigger': {}, 'options': {},
                    'created_at': time.time()}, queue='jobs')


def test_batches_of_any_length_are_written_by_a_few_statements(tmp_path):
    """sqlite3 compiles and keeps every distinct statement: one per batch
    length (up to 1,927 rows each) grew a child by ~0.85 KB a job, to 919
    MB after a million jobs. Every length, and every record written."""
    import sqlalchemy as sa

    from pyramid_scheduler.statusdb import StatusTable
    settings = parse_settings({}, here=str(tmp_path))
    table = StatusTable(settings)
    texts = set()
    sa.event.listen(table.engine, 'before_cursor_execute',
                    lambda conn, cursor, statement, *rest:
                    texts.add(statement) if 'ON CONFLICT' in statement
                    else None)
    written = 0
    for length in range(1, 700):
        table.upsert([{'job_id': f'job-{written + n}', 'state': 'queued'}
                      for n in range(length)])
        written += length
    assert len(texts) <= 5, len(texts)
    with table.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(
            table.table)).scalar() == written
