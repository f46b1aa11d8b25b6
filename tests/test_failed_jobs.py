"""The failed-job registry (issue 15): failed jobs listed, requeued and
purged, through ``pscheduler --message`` and through the scheduler's
methods, on a real daemon and each broker.

A job of ``tests.jobs.fail_unless_exists`` fails while its flag file is
absent: the test creates the file, then requeues the job, which succeeds.
"""
import datetime
import json
import uuid

import pytest

from pyramid_scheduler import status
from pyramid_scheduler.errors import InvalidJob, JobNotFound
from pscheduler import exitcodes
from pscheduler.message import parse_message
from tests import jobs
from tests.daemon_helpers import (
    producer, run_cli, start_one_worker_daemon, wait_for, write_ini)

BROKERS = ('sqlite', 'redis', 'rabbitmq')


def ended(scheduler, job_id, state):
    done = scheduler.wait(job_id, timeout=30)
    assert done.state == state, done
    return done


def message(ini, text, *options):
    result = run_cli('--message', text, *options, ini=ini)
    assert result.returncode == exitcodes.OK, result.stderr
    return result.stdout


@pytest.mark.slow   # six pscheduler --message processes: 5 to 20 s
@pytest.mark.parametrize('broker', BROKERS)
def test_pscheduler_message_lists_requeues_and_purges_failed_jobs(
        tmp_path, broker_for, daemons, broker):
    ini, daemon, _, _ = start_one_worker_daemon(tmp_path, daemons,
                                                broker_for, broker)
    flag = str(tmp_path / 'flag')
    with producer(ini) as scheduler:
        fixed = scheduler.add_async_job(jobs.fail_unless_exists,
                                        args=(flag, 'fixed'))
        broken = scheduler.add_async_job(jobs.fail, args=('boom',))
        ended(scheduler, fixed, status.FAILED)
        ended(scheduler, broken, status.FAILED)

        listed = message(ini, 'failed')
        assert '2 failed job(s)' in listed
        for job_id, func, error in (
                (fixed, 'tests.jobs:fail_unless_exists',
                 'RuntimeError: flag is absent'),
                (broken, 'tests.jobs:fail', 'RuntimeError: boom')):
            line, = [line for line in listed.splitlines() if job_id in line]
            assert func in line and 'attempts 1' in line and error in line
            assert f'failed {datetime.date.today().year}' in line
        answer, = json.loads(message(ini, 'failed limit=1', '--json'))[
            'replies']
        assert answer['result']['count'] == 2
        assert [job['id'] for job in answer['result']['jobs']] == [broken]

        open(flag, 'w').close()
        assert f'job {fixed} requeued' in message(ini, f'requeue id={fixed}')
        done = ended(scheduler, fixed, status.SUCCEEDED)
        assert (done.result, done.attempts, done.error) == ('fixed', 1, None)
        assert [job.id for job in scheduler.failed_jobs()] == [broken]

        assert 'purged 1 failed job record(s)' in message(ini, 'purge-failed')
        assert scheduler.failed_jobs() == []
        # An id the records do not know: the child says so (exit 5).
        unknown = run_cli('--message', 'requeue no-such-job', ini=ini)
        assert unknown.returncode == exitcodes.COMMAND_ERROR
        assert "no job 'no-such-job'" in unknown.stderr
    assert daemon.log_count('job %s (%s) failed' % (
        fixed, 'tests.jobs:fail_unless_exists')) == 1


@pytest.mark.parametrize('broker', BROKERS)
def test_the_scheduler_lists_requeues_and_purges_failed_jobs(
        tmp_path, broker_for, daemons, broker):
    ini, daemon, _, _ = start_one_worker_daemon(tmp_path, daemons,
                                                broker_for, broker)
    flag, out = str(tmp_path / 'flag'), str(tmp_path / 'out')
    gate = str(tmp_path / 'gate')
    soon = datetime.datetime.now(datetime.timezone.utc) + \
        datetime.timedelta(seconds=1)
    with producer(ini) as scheduler:
        dated = scheduler.add_date_job(jobs.fail_unless_exists, soon,
                                       args=(flag, 'dated'))
        broken = scheduler.add_async_job(jobs.fail, args=('boom',))
        ended(scheduler, dated, status.FAILED)
        ended(scheduler, broken, status.FAILED)
        failed = scheduler.failed_jobs()
        assert {job.id for job in failed} == {dated, broken}
        assert {job.kind for job in failed} == {'date', 'async'}
        assert len(scheduler.failed_jobs(limit=1)) == 1
        assert scheduler.failed_jobs(queue='jobs', limit=5) == failed

        # A failed date job runs again as an async run, at once.
        open(flag, 'w').close()
        assert scheduler.requeue(dated) == dated
        with pytest.raises(InvalidJob, match='only a failed or canceled'):
            scheduler.requeue(dated)   # queued, or running, by now
        done = ended(scheduler, dated, status.SUCCEEDED)
        assert (done.result, done.kind, done.attempts) == ('dated', 'async', 1)
        with pytest.raises(InvalidJob, match='is succeeded'):
            scheduler.requeue(dated)
        with pytest.raises(JobNotFound, match='no-such-job'):
            scheduler.requeue('no-such-job')

        # A canceled async job too, by the runtime that saw it canceled.
        held = scheduler.add_async_job(jobs.record_when_released,
                                       args=(out, gate, 'held'))
        wait_for(lambda: getattr(scheduler.job_status(held), 'state', None)
                 == status.RUNNING, 30, what='the held job running')
        canceled = scheduler.add_async_job(jobs.echo, args=(out, 'canceled'))
        wait_for(lambda: getattr(scheduler.job_status(canceled), 'state',
                                 None) == status.QUEUED, 30,
                 what='the job queued')
        scheduler.cancel_job(canceled)
        ended(scheduler, canceled, status.CANCELED)
        scheduler.requeue(canceled)
        open(gate, 'w').close()
        assert ended(scheduler, canceled, status.SUCCEEDED).result == \
            'canceled'

        assert scheduler.purge_failed() == 1
        assert scheduler.failed_jobs() == []
        assert scheduler.purge_failed(queue='jobs') == 0
    assert sorted(r['values'][0] for r in jobs.read_records(out)) == [
        'canceled', 'held']


@pytest.mark.parametrize('text, reason', [
    ('requeue', 'needs id'),
    ('requeue one two', 'given twice'),
    ('failed limit=0', 'from 1 to 1000'),
    ('failed limit=many', 'limit=many'),
    ('purge-failed everything=1', "no argument 'everything'"),
])
def test_bad_arguments_of_the_registry_commands_exit_2(tmp_path, text,
                                                       reason):
    ini = write_ini(tmp_path / 'app.ini')
    result = run_cli('--message', text, ini=ini)
    assert result.returncode == exitcodes.USAGE
    assert reason in result.stderr


def test_requeue_takes_its_id_bare_or_as_id_and_as_text():
    assert parse_message('requeue 0042') == ('requeue', {'id': '0042'})
    assert parse_message('requeue id=a=b') == ('requeue', {'id': 'a=b'})
    assert parse_message('failed limit=20') == ('failed', {'limit': 20})
    assert parse_message('purge-failed') == ('purge-failed', {})


@pytest.mark.parametrize('database', ['sqlite', 'postgresql'])
def test_a_requeue_wins_once_and_is_undone_if_its_job_is_not_sent(
        tmp_path, database):
    from pscheduler.config import load_config
    from pyramid_scheduler.failedjobs import FailedJobs
    from pyramid_scheduler.statusdb import StatusTable, encode
    from tests.daemon_helpers import PG_URL
    values = {'scheduler.id': f'pst_{uuid.uuid4().hex[:12]}'}
    if database == 'postgresql':
        values['scheduler.jobstore.url'] = PG_URL
    settings = load_config(str(write_ini(tmp_path / 'app.ini',
                                         settings=values))).settings
    table = StatusTable(settings)
    registry = FailedJobs(settings, table)
    spec_type, spec = encode({'id': 'x', 'kind': 'async', 'args': ['a'],
                              'func': 'tests.jobs:fail', 'kwargs': {},
                              'trigger': {}, 'options': {}}, 'json')
    table.upsert([{'job_id': 'x', 'queue': 'jobs', 'func': 'tests.jobs:fail',
                   'kind': 'async', 'state': status.FAILED, 'attempts': 2,
                   'error': 'RuntimeError: a', 'spec': spec,
                   'spec_type': spec_type, 'finished': 1.0}])
    try:
        def broker_down(queue, body):
            raise ConnectionError('broker down')
        with pytest.raises(ConnectionError):
            registry.requeue('x', broker_down)
        assert (table.get('x').state, table.get('x').error) == (
            status.FAILED, 'RuntimeError: a')
        assert registry.count() == 1 and registry.count('jobs') == 1

        sent = []
        assert registry.requeue('x', lambda *sent_now: sent.append(
            sent_now)) == 'jobs'
        (queue, body), = sent
        record = table.get('x')
        assert (queue, body['job']['args'], body['job']['kind']) == (
            'jobs', ['a'], 'async')
        assert (record.state, record.attempts, record.error,
                record.finished) == (status.QUEUED, 0, None, None)
        with pytest.raises(InvalidJob, match='is queued'):
            registry.requeue('x', sent.append)
        assert registry.count() == 0 and registry.purge() == 0
        with pytest.raises(ValueError, match='limit must be'):
            registry.list(limit=0)
    finally:
        table.table.drop(table.engine)
        table.close()
