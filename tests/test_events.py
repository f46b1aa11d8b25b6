"""Job events arrive in the order a person expects, for every kind of job.

created, then executed / failed / missed, then removed; canceled, then
removed. Never removed before executed (0.3.x's known problem).
"""
import logging
import time

import pytest

from pyramid_scheduler.api import Event
from tests import jobs
from tests.conftest import poll, sleep_until

CREATED, EXECUTED, FAILED, MISSED, CANCELED, REMOVED = (
    Event.JOB_CREATED, Event.JOB_EXECUTED, Event.JOB_FAILED, Event.JOB_MISSED,
    Event.JOB_CANCELED, Event.JOB_REMOVED)


def test_async_job_events(harness):
    job_id = harness.web.post_json('/schedule', {
        'kind': 'async', 'func': 'echo',
        'args': [harness.records_path, 42]}).json['id']
    harness.events.wait_for(job_id, REMOVED)
    assert harness.events.types(job_id) == [CREATED, EXECUTED, REMOVED]
    [executed] = harness.events.of(job_id, EXECUTED)
    assert executed.retval == 42
    assert executed.queue == 'jobs'
    assert executed.job.id == job_id
    assert executed.job.func == 'tests.jobs:echo'
    assert executed.job.args == [harness.records_path, 42]
    assert executed.job.kind == 'async'


@pytest.mark.slow
def test_date_job_events(harness):
    job_id = harness.schedule('date', 'd', date=time.time() + 0.2)
    harness.events.wait_for(job_id, REMOVED)
    assert harness.events.types(job_id) == [CREATED, EXECUTED, REMOVED]
    [executed] = harness.events.of(job_id, EXECUTED)
    assert executed.scheduled_run_time.timestamp() == pytest.approx(
        harness.events.of(job_id, CREATED)[0].job.trigger[
            'run_date'].timestamp())


@pytest.mark.parametrize('kind, trigger', [
    ('interval', {'seconds': 0.2}),
    ('cron', {'second': '*'}),
])
@pytest.mark.slow
def test_periodic_job_events_then_cancel(harness, kind, trigger):
    job_id = harness.schedule(kind, kind, **trigger)
    harness.events.wait_for(job_id, EXECUTED, count=2)
    harness.web.post_json('/cancel', {'id': job_id})
    harness.events.wait_for(job_id, REMOVED)
    types = harness.events.types(job_id)
    assert types[0] == CREATED
    assert types[-2:] == [CANCELED, REMOVED]
    assert set(types[1:-2]) == {EXECUTED} and len(types[1:-2]) >= 2


def test_date_job_canceled_events(harness):
    job_id = harness.schedule('date', 'never', date=time.time() + 3600)
    harness.events.wait_for(job_id, CREATED)
    harness.web.post_json('/cancel', {'id': job_id})
    harness.events.wait_for(job_id, REMOVED)
    assert harness.events.types(job_id) == [CREATED, CANCELED, REMOVED]
    assert harness.records() == []


def test_cancel_of_an_unknown_job_is_a_warning_not_an_error(harness, caplog):
    caplog.set_level(logging.WARNING, logger='pyramid_scheduler')
    harness.web.post_json('/cancel', {'id': 'no-such-job'})
    poll(lambda: 'no-such-job' in caplog.text)
    assert harness.events.types('no-such-job') == []
    assert harness.runtime.running


@pytest.mark.parametrize('kind, trigger', [
    ('async', {}),
    ('date', {'date': 'soon'}),
    ('interval', {'seconds': 0.3, 'id': 'failing-interval'}),
])
@pytest.mark.slow
def test_failing_job_events_and_the_runtime_keeps_going(
        harness, caplog, kind, trigger):
    caplog.set_level(logging.ERROR, logger='pyramid_scheduler')
    if trigger.get('date') == 'soon':
        trigger = {'date': time.time() + 0.2}
    job_id = harness.web.post_json('/schedule', {
        'kind': kind, 'func': 'fail', 'args': ['boom ' + kind],
        **trigger}).json['id']
    [failed] = harness.events.wait_for(job_id, FAILED)
    assert isinstance(failed.exception, RuntimeError)
    assert str(failed.exception) == 'boom ' + kind
    assert 'Traceback' in failed.traceback
    assert "RuntimeError: boom " + kind in failed.traceback
    assert 'tests/jobs.py' in failed.traceback
    if kind == 'interval':
        harness.events.wait_for(job_id, FAILED, count=2)  # runs on
        harness.web.post_json('/cancel', {'id': job_id})
        harness.events.wait_for(job_id, REMOVED)
        types = harness.events.types(job_id)
        assert types[0] == CREATED and types[-2:] == [CANCELED, REMOVED]
        assert set(types[1:-2]) == {FAILED}
    else:
        harness.events.wait_for(job_id, REMOVED)
        assert harness.events.types(job_id) == [CREATED, FAILED, REMOVED]
    assert f'job {job_id} (tests.jobs:fail) failed' in caplog.text
    # The runtime goes on running other jobs.
    harness.schedule('async', 'still alive')
    assert harness.wait_records(1)[0]['values'] == ['still alive']


@pytest.mark.slow
def test_late_date_job_within_grace_runs(harness):
    job_id = harness.schedule('date', 'late', date=time.time() - 20,
                              misfire_grace_time=60)
    harness.events.wait_for(job_id, REMOVED)
    assert harness.events.types(job_id) == [CREATED, EXECUTED, REMOVED]
    assert harness.values() == [['late']]


@pytest.mark.slow
def test_missed_date_job_fires_job_missed_and_logs(
        make_harness, records, caplog):
    caplog.set_level(logging.WARNING, logger='pyramid_scheduler')
    h = make_harness()
    # No request yet: the runtime is not running. The job is sent and waits
    # in the broker while its date (and grace time) go by.
    run_date = time.time() + 0.2
    job_id = h.scheduler.add_date_job(jobs.record, run_date,
                                      args=[records, 'missed'],
                                      misfire_grace_time=1)
    assert h.runtime is None
    sleep_until(run_date + 1.3)
    h.start()
    h.events.wait_for(job_id, REMOVED)
    assert h.events.types(job_id) == [CREATED, MISSED, REMOVED]
    [missed] = h.events.of(job_id, MISSED)
    assert missed.scheduled_run_time.timestamp() == pytest.approx(run_date)
    assert h.records() == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                and job_id in r.getMessage()]
    assert warnings, caplog.text
    assert 'missed its run time' in warnings[0].getMessage()
    assert 'tests.jobs:record' in warnings[0].getMessage()


@pytest.mark.slow
def test_missed_runs_of_a_restarted_interval_job(make_harness, records):
    # An interval job whose runtime was down: the runs it missed beyond the
    # grace time are each reported as missed, then it runs on.
    h = make_harness(**{'scheduler.coalesce': 'false'})
    h.start()
    job_id = h.schedule('interval', 'tick', seconds=0.3,
                        misfire_grace_time=1)
    h.events.wait_for(job_id, EXECUTED)
    h.scheduler.shutdown(timeout=5)
    stopped = time.time()
    sleep_until(stopped + 1.8)
    h.start()
    h.events.wait_for(job_id, MISSED)
    h.events.wait_for(job_id, EXECUTED, count=2)
    types = h.events.types(job_id)
    assert types[0] == CREATED
    assert REMOVED not in types
    h.web.post_json('/cancel', {'id': job_id})
    h.events.wait_for(job_id, REMOVED)
    assert h.events.types(job_id)[-2:] == [CANCELED, REMOVED]


@pytest.mark.slow
def test_listener_filtering_and_errors(harness, caplog):
    seen = []

    def broken(event):
        raise ValueError('listener bug')

    harness.scheduler.add_listener(broken)
    harness.scheduler.add_listener(lambda e, tag: seen.append((tag, e.type)),
                                   events=[EXECUTED], args=['x'])
    job_id = harness.schedule('async', 'ok')
    harness.events.wait_for(job_id, REMOVED)
    assert seen == [('x', EXECUTED)]
    assert 'listener' in caplog.text and 'listener bug' in caplog.text
    assert harness.events.types(job_id) == [CREATED, EXECUTED, REMOVED]
    with pytest.raises(ValueError, match='unknown event types'):
        harness.scheduler.add_listener(lambda e: None, events=['nope'])
