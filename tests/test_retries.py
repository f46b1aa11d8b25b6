"""Retries on a real daemon and each broker (issue 15).

A job that fails counts its runs in a file (tests.jobs.fail_times); its
status record says what became of it. Small delays (``retry_delay=0.2``)
keep each test a few seconds long. The policy itself (backoff bounds, the
options) is unit-tested in tests/test_retry_policy.py.
"""
import datetime
import os
import re
import signal

import pytest

from pyramid_scheduler import status
from pyramid_scheduler.api import Event
from tests import jobs
from tests.daemon_helpers import (
    producer, state_of, stored_job_ids, wait_for, write_ini)

BROKERS = ('sqlite', 'redis', 'rabbitmq')

# Each starts a daemon (or a combined-mode app): not in the fast lane.
pytestmark = pytest.mark.slow


def start_daemon(tmp_path, daemons, broker_for, broker='sqlite',
                 children=('jobs',), **settings):
    values = broker_for(broker, **{'scheduler.executor.size': '2'})
    values.update(settings)
    ini = write_ini(tmp_path / 'app.ini', settings=values)
    daemon = daemons(ini)
    daemon.wait_ready(list(children))
    return ini, daemon, values['scheduler.id']


def ended(scheduler, job_id, daemon, timeout=30):
    try:
        return scheduler.wait(job_id, timeout=timeout)
    except TimeoutError:
        raise AssertionError(f'{scheduler.job_status(job_id)}; log:\n'
                             f'{daemon.log()}') from None


def soon(seconds=0.3):
    return datetime.datetime.now(datetime.timezone.utc) + \
        datetime.timedelta(seconds=seconds)


def retry_stored(ini, scheduler_id, job_id):
    return f'{job_id}.retry' in stored_job_ids(ini, 'jobs', scheduler_id)


@pytest.mark.parametrize('broker', BROKERS)
def test_a_job_failing_twice_then_succeeding_runs_three_times(
        tmp_path, broker_for, daemons, broker):
    ini, daemon, _ = start_daemon(tmp_path, daemons, broker_for, broker)
    counter = str(tmp_path / 'runs')
    with producer(ini) as scheduler:
        job_id = scheduler.add_async_job(
            jobs.fail_times, args=(counter, 2, 'done'), retries=3,
            retry_delay=0.2)
        done = ended(scheduler, job_id, daemon)
    assert (done.state, done.result, done.attempts) == (
        status.SUCCEEDED, 'done', 3)
    assert done.error is None
    assert (done.id, done.kind, done.func) == (
        job_id, 'async', 'tests.jobs:fail_times')
    times = jobs.run_times(counter)
    assert len(times) == 3
    assert all(later - earlier >= 0.2 for earlier, later in
               zip(times, times[1:])), times


def test_a_date_job_retries_the_same_way_and_fails_when_retries_are_spent(
        tmp_path, broker_for, daemons):
    ini, daemon, scheduler_id = start_daemon(tmp_path, daemons, broker_for)
    counter = str(tmp_path / 'runs')
    with producer(ini) as scheduler:
        job_id = scheduler.add_date_job(
            jobs.fail_times, soon(), args=(counter, 5, 'never'), retries=2,
            retry_delay=0.2)
        failed = ended(scheduler, job_id, daemon)
    assert (failed.state, failed.attempts, failed.result) == (
        status.FAILED, 3, None)
    assert failed.error == 'Flaky: run 3 of 5 failing'
    assert 'raise cls(' in failed.traceback
    assert len(jobs.run_times(counter)) == 3
    assert not retry_stored(ini, scheduler_id, job_id)


def test_retry_on_retries_only_the_exceptions_it_names(tmp_path, broker_for,
                                                       daemons):
    ini, daemon, _ = start_daemon(tmp_path, daemons, broker_for)
    named, other = str(tmp_path / 'named'), str(tmp_path / 'other')
    with producer(ini) as scheduler:
        retried = scheduler.add_async_job(
            jobs.fail_times, args=(named, 1, 'ok', 'ConnectionResetError'),
            retries=2, retry_delay=0.2, retry_on=[OSError, 'KeyError'])
        not_retried = scheduler.add_async_job(
            jobs.fail_times, args=(other, 1, 'ok', 'ValueError'),
            retries=2, retry_delay=0.2, retry_on=[OSError, 'KeyError'])
        done = ended(scheduler, retried, daemon)
        failed = ended(scheduler, not_retried, daemon)
    assert (done.state, done.attempts, done.result) == (
        status.SUCCEEDED, 2, 'ok')
    assert (failed.state, failed.attempts) == (status.FAILED, 1)
    assert failed.error == 'ValueError: run 1 of 1 failing'
    assert len(jobs.run_times(other)) == 1


def test_a_job_raising_retry_runs_again_after_its_countdown(
        tmp_path, broker_for, daemons):
    ini, daemon, _ = start_daemon(tmp_path, daemons, broker_for)
    counter = str(tmp_path / 'runs')
    with producer(ini) as scheduler:
        # No retries asked for: a Retry gets the default (3).
        job_id = scheduler.add_async_job(jobs.retry_once,
                                         args=(counter, 2, 'later'))
        retrying = state_of(scheduler, job_id, status.RETRYING, daemon)
        assert retrying.attempts == 1
        assert retrying.error == 'Retry: not yet'
        done = ended(scheduler, job_id, daemon)
    assert (done.state, done.attempts, done.result) == (
        status.SUCCEEDED, 2, 'later')
    first, second = jobs.run_times(counter)
    assert second - first >= 2.0, second - first


def test_backoff_delays_stay_under_their_bound_and_the_cap(
        tmp_path, broker_for, daemons):
    base, cap = 0.2, 0.5
    ini, daemon, _ = start_daemon(
        tmp_path, daemons, broker_for,
        **{'scheduler.retry.backoff_max': f'{cap}s'})
    counter = str(tmp_path / 'runs')
    with producer(ini) as scheduler:
        job_id = scheduler.add_async_job(
            jobs.fail_times, args=(counter, 4, 'done'), retries=4,
            retry_backoff=base)
        done = ended(scheduler, job_id, daemon)
    assert (done.state, done.attempts) == (status.SUCCEEDED, 5)
    # The delays drawn, as the daemon logged them ...
    delays = [float(found) for found in re.findall(
        rf'job {job_id} \(tests.jobs:fail_times\) failed \(attempt \d\), '
        r'retried in ([0-9.]+)s', daemon.log())]
    # ... are uniform draws in [0, min(cap, base * 2 ** (n - 1))] ...
    bounds = [min(cap, base * 2 ** n) for n in range(4)]
    assert bounds == [0.2, 0.4, 0.5, 0.5]
    assert len(delays) == 4 and all(
        0 <= delay <= bound for delay, bound in zip(delays, bounds)), delays
    # ... and each retry ran no earlier than its delay after the run before.
    times = jobs.run_times(counter)
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    assert all(delay - 0.01 <= gap <= delay + 2 for gap, delay in
               zip(gaps, delays)), (gaps, delays)


def test_a_retry_survives_a_sigkill_of_the_child(tmp_path, broker_for,
                                                 daemons):
    ini, daemon, scheduler_id = start_daemon(tmp_path, daemons, broker_for)
    counter = str(tmp_path / 'runs')
    with producer(ini) as scheduler:
        # A date job: its run is out of the job store once it started, so
        # only the stored retry can run it again.
        job_id = scheduler.add_date_job(
            jobs.fail_times, soon(), args=(counter, 1, 'survived'),
            retries=1, retry_delay=3)
        wait_for(lambda: retry_stored(ini, scheduler_id, job_id),
                 what=f'the retry stored; log:\n{daemon.log()}')
        before = daemon.child_pids()['jobs']
        os.kill(before, signal.SIGKILL)
        wait_for(lambda: daemon.child_pids().get('jobs') not in (None, before),
                 what='the child replaced')
        done = ended(scheduler, job_id, daemon)
    assert (done.state, done.attempts, done.result) == (
        status.SUCCEEDED, 2, 'survived')
    pids = jobs.run_pids(counter)
    assert len(pids) == 2 and pids[0] == before != pids[1]


@pytest.mark.parametrize('broker', BROKERS)
def test_a_retry_survives_a_restart_of_the_daemon(tmp_path, broker_for,
                                                  daemons, broker):
    ini, daemon, scheduler_id = start_daemon(tmp_path, daemons, broker_for,
                                             broker)
    counter = str(tmp_path / 'runs')
    with producer(ini) as scheduler:
        job_id = scheduler.add_async_job(
            jobs.fail_times, args=(counter, 1, 'restarted'), retries=1,
            retry_delay=3)
        state_of(scheduler, job_id, status.RETRYING, daemon)
        wait_for(lambda: retry_stored(ini, scheduler_id, job_id),
                 what='the retry stored')
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait_exit() == 0
        assert len(jobs.run_times(counter)) == 1
        again = daemons(ini)
        again.wait_ready(['jobs'])
        done = ended(scheduler, job_id, again)
    assert (done.state, done.attempts, done.result) == (
        status.SUCCEEDED, 2, 'restarted')
    assert len(jobs.run_times(counter)) == 2


@pytest.mark.parametrize('broker', BROKERS)
def test_a_job_failing_while_the_daemon_stops_is_retried_after_it(
        tmp_path, broker_for, daemons, broker):
    """Its runtime's APScheduler has stopped: the retry goes to the store
    queue, for the next owner of the job store."""
    ini, daemon, _ = start_daemon(tmp_path, daemons, broker_for, broker)
    counter = str(tmp_path / 'runs')
    with producer(ini) as scheduler:
        job_id = scheduler.add_async_job(
            jobs.fail_times, args=(counter, 1, 'after', 'Flaky', 1.5),
            retries=1, retry_delay=0.2)
        state_of(scheduler, job_id, status.RUNNING, daemon)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait_exit() == 0
        assert scheduler.job_status(job_id).state == status.RETRYING
        again = daemons(ini)
        again.wait_ready(['jobs'])
        done = ended(scheduler, job_id, again)
    assert (done.state, done.attempts, done.result) == (
        status.SUCCEEDED, 2, 'after')
    assert len(jobs.run_times(counter)) == 2
    assert f'job {job_id}: its retry sent to' in daemon.log()


def test_cancel_of_a_retrying_job_removes_its_retry(tmp_path, broker_for,
                                                    daemons):
    ini, daemon, scheduler_id = start_daemon(tmp_path, daemons, broker_for)
    counter = str(tmp_path / 'runs')
    with producer(ini) as scheduler:
        job_id = scheduler.add_async_job(
            jobs.fail_times, args=(counter, 1, 'never'), retries=1,
            retry_delay=60, id='flaky-once')
        state_of(scheduler, job_id, status.RETRYING, daemon)
        wait_for(lambda: retry_stored(ini, scheduler_id, job_id),
                 what='the retry stored')
        # Its id stays taken while it is retrying.
        again = scheduler.add_async_job(jobs.noop, id='flaky-once')
        assert again == job_id and again.added is False
        scheduler.cancel_job(job_id)
        canceled = ended(scheduler, job_id, daemon)
        assert canceled.state == status.CANCELED and canceled.attempts == 1
        wait_for(lambda: not retry_stored(ini, scheduler_id, job_id),
                 what=f'the retry removed; log:\n{daemon.log()}')
    assert len(jobs.run_times(counter)) == 1


def test_a_periodic_job_has_one_pending_retry_dropped_at_its_next_tick(
        tmp_path, broker_for, daemons):
    ini, daemon, scheduler_id = start_daemon(tmp_path, daemons, broker_for)
    counter = str(tmp_path / 'runs')
    with producer(ini) as scheduler:
        # Fails at every run; its retries (in 60 s) would come long after
        # its next tick (every 1 s).
        job_id = scheduler.add_interval_job(
            jobs.fail_times, seconds=1, args=(counter, 100, 'never'),
            retries=5, retry_delay=60)
        retrying = state_of(scheduler, job_id, status.RETRYING, daemon)
        assert retrying.attempts == 1
        daemon.wait_log(f'job {job_id} (tests.jobs:fail_times): its pending '
                        'retry is dropped', count=2)
        stored = stored_job_ids(ini, 'jobs', scheduler_id)
        assert sorted(stored) in ([job_id], sorted([job_id,
                                                    f'{job_id}.retry'])), stored
        # Every run was a tick: attempt 1 each time, no retry ran.
        assert scheduler.job_status(job_id).attempts == 1
        assert len(jobs.run_times(counter)) >= 3
        scheduler.cancel_job(job_id)
        wait_for(lambda: not set(stored_job_ids(ini, 'jobs', scheduler_id)),
                 what='the job and its retry canceled')


def test_retries_across_two_processes_of_a_queue(tmp_path, broker_for,
                                                 daemons):
    """A slot that does not own the job store sends its retries to the
    one that does (the store queue)."""
    ini, daemon, _ = start_daemon(
        tmp_path, daemons, broker_for, 'redis', ('jobs #1', 'jobs #2'),
        **{'scheduler.processes': '2', 'scheduler.executor.size': '1'})
    counters = [str(tmp_path / f'runs{n}') for n in range(6)]
    with producer(ini) as scheduler:
        ids = [scheduler.add_async_job(
            # Each first run busy 0.3 s: both processes take some.
            jobs.fail_times, args=(counter, 1, n, 'Flaky', 0.3), retries=1,
            retry_delay=0.2) for n, counter in enumerate(counters)]
        done = [ended(scheduler, job_id, daemon) for job_id in ids]
    assert [(d.state, d.attempts, d.result) for d in done] == [
        (status.SUCCEEDED, 2, n) for n in range(6)]
    owner, other = daemon.child_pids()['jobs #1'], \
        daemon.child_pids()['jobs #2']
    runs = [jobs.run_pids(counter) for counter in counters]
    assert {first for first, _ in runs} == {owner, other}, runs
    assert 'its retry sent to' in daemon.log()
    # Retries run from the job store, which the first slot alone owns.
    assert {second for _, second in runs} == {owner}, runs


def test_job_retry_fires_instead_of_job_failed(make_harness, tmp_path):
    harness = make_harness()
    harness.start()
    counter = str(tmp_path / 'runs')
    job_id = harness.scheduler.add_async_job(
        jobs.fail_times, args=(counter, 1, 'ok'), retries=1, retry_delay=0.2)
    (executed,) = harness.events.wait_for(job_id, Event.JOB_EXECUTED)
    (retry,) = harness.events.of(job_id, Event.JOB_RETRY)
    assert isinstance(retry.exception, jobs.Flaky)
    assert 'raise cls(' in retry.traceback
    assert (retry.attempt, retry.countdown, retry.queue) == (1, 0.2, 'jobs')
    # The retry's events carry the job's id, and which attempt it was.
    assert (executed.retval, executed.job.attempt, executed.job.retry_of) \
        == ('ok', 2, job_id)
    harness.events.wait_for(job_id, Event.JOB_REMOVED)
    assert harness.events.types(job_id) == [
        Event.JOB_CREATED, Event.JOB_RETRY, Event.JOB_EXECUTED,
        Event.JOB_REMOVED]
    assert harness.scheduler.wait(job_id, timeout=10).attempts == 2
    # The status command counts the retried run apart from failures.
    counts = harness.runtime.stats.snapshot()
    assert (counts['retried'], counts['failed'], counts['executed']) == \
        (1, 0, 1)
