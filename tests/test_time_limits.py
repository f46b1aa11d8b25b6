"""Time limits of jobs (issue 15): ``time_limit`` raises JobTimeout in the
job, ``hard_time_limit`` replaces the child and never runs the job again.

The daemon tests run a real pscheduler; the hard limit's redelivery
depends on the broker, so that one runs on each. Runs are counted with
one O_APPEND line per run (tests.jobs.append_id), which a killed process
cannot take back.
"""
import datetime
import math
import threading
import time

import pytest
from pyramid.exceptions import ConfigurationError

from pyramid_scheduler import status, wire
from pyramid_scheduler.api import InvalidJob, JobTimeout
from pyramid_scheduler.jobs import build_spec, check_options
from pyramid_scheduler.runtime import timelimits
from pyramid_scheduler.runtime.timelimits import TimeLimits
from pyramid_scheduler.settings import parse_settings
from tests import jobs
from tests.daemon_helpers import producer, start_one_worker_daemon, wait_for
from tests.test_dispatch import (FakeDeferred, RecordingChannel,
                                 make_dispatcher, message)
from tests.test_poison_edges import dead_items

BROKERS = ('sqlite', 'redis', 'rabbitmq')


def runs_of(path, job_id):
    """The pids of the runs of ``job_id``, in order."""
    return [pid for ran, pid, _ in jobs.read_ids(path) if ran == job_id]


# --- the soft limit ----------------------------------------------------------

def test_past_time_limit_a_job_fails_with_job_timeout_and_the_child_serves_on(
        tmp_path, broker_for, daemons):
    # scheduler.time_limit is the default of the job added without one; a
    # date job's run is limited as an async job is.
    ini, daemon, child, _ = start_one_worker_daemon(
        tmp_path, daemons, broker_for, 'sqlite',
        **{'scheduler.time_limit': '1'})
    out = str(tmp_path / 'out')
    with producer(ini) as scheduler:
        looping = scheduler.add_async_job(jobs.busy, args=(out, 'loop', 30))
        dated = scheduler.add_date_job(jobs.busy, in_seconds(1),
                                       args=(out, 'dated', 30),
                                       time_limit=1.5)
        failed = scheduler.wait(looping, timeout=20)
        assert failed.state == status.FAILED
        assert failed.error == ('JobTimeout: job ran longer than its '
                                'time_limit of 1s')
        assert 'in busy' in failed.traceback
        assert 0.9 <= (failed.finished - failed.started).total_seconds() < 5
        after = scheduler.add_async_job(jobs.append_id, args=(out, 'after'))
        assert scheduler.wait(after, timeout=20).state == status.SUCCEEDED
        dated_run = scheduler.wait(dated, timeout=20)
        assert (dated_run.state, dated_run.error) == (
            status.FAILED,
            'JobTimeout: job ran longer than its time_limit of 1.5s')
    # The same child ran the job that timed out and the next one.
    assert runs_of(out, 'loop') == runs_of(out, 'after') == [child]
    assert runs_of(out, 'dated') == [child]
    assert daemon.child_pids() == {'jobs': child}
    assert daemon.log_count('JobTimeout raised in its thread') == 2


# --- the hard limit ----------------------------------------------------------

@pytest.mark.parametrize('broker', BROKERS)
def test_a_job_past_its_hard_time_limit_replaces_its_child_never_runs_again(
        tmp_path, broker_for, daemons, broker):
    ini, daemon, child, values = start_one_worker_daemon(
        tmp_path, daemons, broker_for, broker,
        **{'scheduler.executor.size': '2'})
    out = str(tmp_path / 'out')
    with producer(ini) as scheduler:
        # Cut short with its child, not to blame: it runs again.
        neighbour = scheduler.add_async_job(jobs.append_id,
                                            args=(out, 'neighbour', 3))
        # time.sleep is C code: the soft limit could not end it.
        stuck = scheduler.add_async_job(jobs.append_id,
                                        args=(out, 'stuck', 60),
                                        time_limit=1, hard_time_limit=2)
        failed = scheduler.wait(stuck, timeout=30)
        assert failed.state == status.FAILED
        assert failed.error.startswith(
            'HardTimeLimit: the job ran longer than its hard_time_limit of '
            '2s'), failed.error
        assert 'in append_id' in failed.traceback
        replaced = wait_for(
            lambda: daemon.child_pids().get('jobs') not in (None, child)
            and daemon.child_pids()['jobs'], 30,
            what=f'a new child; log:\n{daemon.log()}')
        after = scheduler.add_async_job(jobs.append_id, args=(out, 'after'))
        assert scheduler.wait(after, timeout=30).state == status.SUCCEEDED
        # Its message came back to the new child, which refused it.
        wait_for(lambda: len(dead_items(broker, values, ini)) == 1, 30,
                 what=f'the dead letter; log:\n{daemon.log()}')
        assert scheduler.job_status(stuck).error == failed.error
        assert scheduler.wait(neighbour, timeout=30).state == \
            status.SUCCEEDED
    assert runs_of(out, 'stuck') == [child]
    assert runs_of(out, 'after') == [replaced]
    assert runs_of(out, 'neighbour') == [child, replaced]
    log = daemon.log()
    assert 'ended itself: job %s (tests.jobs:append_id) ran longer than its ' \
        'hard_time_limit of 2s (exit code 12); starting a new one now' \
        % stuck in log, log
    assert 'not run again (its record reads failed)' in log, log
    # Not a crash of the child (no backoff), nor of its jobs (the crash
    # journal counts none), nor a boot failure.
    assert 'when its process died' not in log, log
    assert 'failed to start' not in log, log
    assert 'starting a new one in' not in log, log


def test_a_date_job_past_its_hard_time_limit_is_not_run_again(
        tmp_path, broker_for, daemons):
    # A deferred run is started once (runtime.dueruns): the new child
    # does not start it again.
    ini, daemon, child, _ = start_one_worker_daemon(tmp_path, daemons,
                                                    broker_for, 'sqlite')
    out = str(tmp_path / 'out')
    with producer(ini) as scheduler:
        dated = scheduler.add_date_job(jobs.append_id, in_seconds(0.5),
                                       args=(out, 'dated', 60),
                                       hard_time_limit=1)
        failed = scheduler.wait(dated, timeout=30)
        assert failed.state == status.FAILED
        assert failed.error.startswith('HardTimeLimit: '), failed.error
        wait_for(lambda: daemon.child_pids().get('jobs') not in (None, child),
                 30, what=f'a new child; log:\n{daemon.log()}')
        later = scheduler.add_date_job(jobs.append_id, in_seconds(1),
                                       args=(out, 'later'))
        assert scheduler.wait(later, timeout=30).state == status.SUCCEEDED
    assert runs_of(out, 'dated') == [child]


def test_a_periodic_job_past_its_hard_limit_stays_scheduled_and_runs_on(
        tmp_path, broker_for, daemons):
    # Each run that passes the limit costs its child; the job itself is
    # not dropped: its record reads scheduled with the error, and its next
    # run comes, in the next child.
    ini, daemon, child, _ = start_one_worker_daemon(tmp_path, daemons,
                                                    broker_for, 'sqlite')
    out = str(tmp_path / 'out')
    with producer(ini) as scheduler:
        ticking = scheduler.add_interval_job(
            jobs.append_id, seconds=2, args=(out, 'ticking', 60),
            hard_time_limit=1)

        def scheduled_after_the_limit():
            found = scheduler.job_status(ticking)
            return found if found is not None and \
                found.state == status.SCHEDULED and \
                (found.error or '').startswith('HardTimeLimit: ') else None
        wait_for(scheduled_after_the_limit, 60,
                 what=f'the record after the limit; log:\n{daemon.log()}')
        second = wait_for(lambda: runs_of(out, 'ticking')[1:], 60,
                          what=f'a second run; log:\n{daemon.log()}')
        scheduler.cancel_job(ticking)
    first = runs_of(out, 'ticking')[0]
    assert first == child and second[0] != child
    assert daemon.log_count('exit code 12') >= 1


def in_seconds(seconds):
    return datetime.datetime.now(datetime.timezone.utc) + \
        datetime.timedelta(seconds=seconds)


def test_a_job_with_a_hard_limit_is_dead_lettered_after_two_crashes(
        tmp_path, broker_for, daemons):
    # Its record cannot say so (the job kills its process itself, as a
    # crash in C code would): the crash journal stops it at two runs,
    # below scheduler.max_deliveries.
    ini, daemon, child, _ = start_one_worker_daemon(
        tmp_path, daemons, broker_for, 'sqlite',
        **{'scheduler.hard_time_limit': '30',
           'scheduler.allowed_modules': 'tests.jobs tests.test_poison_edges'})
    out = str(tmp_path / 'out')
    from tests.test_poison_edges import exit_process
    with producer(ini) as scheduler:
        crashing = scheduler.add_async_job(exit_process, args=(out,))
        daemon.wait_log('took its process down 2 times (at most 2 for a job '
                        'with a hard_time_limit)', timeout=40)
        after = scheduler.add_async_job(jobs.append_id, args=(out, 'after'))
        assert scheduler.wait(after, timeout=30).state == status.SUCCEEDED
        record = scheduler.wait(crashing, timeout=10)
        assert record.state == status.FAILED
        assert 'took its process down 2 times' in record.error
    assert len(runs_of(out, 'bad')) == 2


# --- settings and options ----------------------------------------------------

@pytest.fixture
def settings(tmp_path):
    return parse_settings({'scheduler.allowed_modules': 'tests.jobs',
                           'scheduler.time_limit': '10'}, here=str(tmp_path))


@pytest.mark.parametrize('options, expected', [
    ({'time_limit': 0}, 'time_limit must be a positive number of seconds '
                        '(such as 30 or 0.5), not 0'),
    ({'time_limit': -1}, 'time_limit must be a positive number'),
    ({'hard_time_limit': '60'}, "hard_time_limit must be a positive number "
                                "of seconds (such as 30 or 0.5), not '60'"),
    ({'time_limit': True}, 'time_limit must be a positive number'),
    ({'time_limit': math.inf}, 'time_limit must be a positive number'),
    ({'time_limit': 5, 'hard_time_limit': 5},
     'hard_time_limit (5s) must be greater than time_limit (5s): the soft '
     'limit raises JobTimeout in the job first, the hard one replaces its '
     'process if that did not end it; pass a larger hard_time_limit or a '
     'smaller time_limit'),
    ({'hard_time_limit': 8},
     'hard_time_limit (8s) must be greater than time_limit (10s, from '
     'scheduler.time_limit)'),
])
@pytest.mark.parametrize('kind', ['async', 'interval'])
def test_bad_time_limits_are_refused_when_added(settings, options, expected,
                                                kind):
    trigger = {'seconds': 60} if kind == 'interval' else None
    with pytest.raises(InvalidJob) as refused:
        build_spec(settings, kind, jobs.noop, trigger=trigger,
                   options=options)
    assert expected in str(refused.value)


def test_a_job_arriving_with_bad_time_limits_is_dead_lettered(settings):
    # An async job here; a deferred one by DeferredJobs.prepare, which
    # calls check_options.
    channel = RecordingChannel()
    dispatcher = make_dispatcher(settings, channel, FakeDeferred())
    dispatcher.handle(message(settings, channel, wire.job_created('jobs', {
        'id': 'bad', 'kind': 'async', 'func': 'tests.jobs:noop', 'args': [],
        'kwargs': {}, 'options': {'time_limit': 'soon'}, 'trigger': {}})))
    assert channel.acked == [1] and not channel.rejected
    assert dispatcher.dead_letters.recent()[-1]['reason'].startswith(
        'time_limit must be a positive number of seconds')
    with pytest.raises(InvalidJob, match='hard_time_limit must be a positive'):
        check_options({'hard_time_limit': -1}, 'cron')


def test_good_time_limits_travel_in_the_spec(settings):
    _, spec = build_spec(settings, 'async', jobs.noop,
                         options={'time_limit': 0.5, 'hard_time_limit': 20})
    assert spec['options'] == {'time_limit': 0.5, 'hard_time_limit': 20}


def test_the_hard_time_limit_setting_must_be_above_the_soft_one(tmp_path):
    with pytest.raises(ConfigurationError) as refused:
        parse_settings({'scheduler.time_limit': '1m',
                        'scheduler.hard_time_limit': '30s'},
                       here=str(tmp_path))
    assert str(refused.value) == (
        'invalid value \'30s\' for setting "scheduler.hard_time_limit": '
        'expected a duration above scheduler.time_limit (60s): the soft '
        'limit comes first')
    parsed = parse_settings({}, here=str(tmp_path))
    assert (parsed.time_limit, parsed.hard_time_limit) == (None, None)


# --- the watchdog, in this process -------------------------------------------

class NotedRecords:
    def __init__(self):
        self.failures = []
        self.written = 0

    def failed(self, job, error, traceback, state):
        self.failures.append((job['id'], error, state))

    def write_now(self):
        self.written += 1


class Journal:
    def __init__(self):
        self.closed = False

    def close(self):
        self.closed = True


def limits_for(tmp_path):
    limits = TimeLimits(parse_settings({}, here=str(tmp_path)),
                        NotedRecords(), Journal())
    limits.start()
    return limits


def job(**options):
    return {'id': 'j1', 'func': 'tests.jobs:busy', 'options': options}


def test_the_watchdog_raises_job_timeout_once_and_not_after_the_job(tmp_path):
    limits = limits_for(tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(JobTimeout) as raised:
            with limits.applied(job(time_limit=0.3)):
                while time.monotonic() - started < 10:
                    pass
        assert 0.3 <= time.monotonic() - started < 2
        assert str(raised.value) == 'job ran longer than its time_limit of ' \
                                    '0.3s'
        # A job that ends in time is never interrupted, then or later.
        with limits.applied(job(time_limit=0.3)):
            pass
        end = time.monotonic() + 0.8
        while time.monotonic() < end:
            pass
        assert limits._heap == [] or not any(
            entry[2].active for entry in limits._heap)
    finally:
        limits.stop()


def test_the_hard_limit_writes_the_record_then_calls_the_owner(tmp_path):
    limits = limits_for(tmp_path)
    called = threading.Event()
    reasons = []
    limits.on_hard_limit = lambda reason: (reasons.append(reason),
                                           called.set())
    try:
        with limits.applied(job(hard_time_limit=0.3)):
            assert called.wait(5)
    finally:
        limits.stop()
    assert reasons == ['job j1 (tests.jobs:busy) ran longer than its '
                       'hard_time_limit of 0.3s']
    (noted,) = limits.records.failures
    assert noted[0] == 'j1' and noted[2] == status.FAILED
    assert noted[1].startswith(timelimits.HARD_LIMIT_ERROR + ': ')
    assert limits.records.written == 1
    # Written, the record refuses the job: no crash is counted.
    assert limits.crashes.closed


def test_in_combined_mode_the_hard_limit_is_only_logged(tmp_path, caplog):
    # No owner to end the process (a web process): no record either, the
    # job goes on and ends as it ends.
    limits = limits_for(tmp_path)
    try:
        with limits.applied(job(hard_time_limit=0.2)):
            wait_for(lambda: 'is not replaced' in caplog.text, 5,
                     what='the hard limit logged')
    finally:
        limits.stop()
    assert limits.records.failures == [] and limits.records.written == 0
    assert not limits.crashes.closed
