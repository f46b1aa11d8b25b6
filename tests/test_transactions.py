"""Jobs added in a pyramid_tm request are sent only when it commits.

The webapp includes pyramid_tm. Most tests use a producer-only app (not
combined, no runtime), so that what was sent stays on the queue to be
counted; the runtime is started afterwards to show what runs.
"""
import time

import pytest
import transaction

from tests import jobs
from tests.conftest import poll


@pytest.fixture
def producer(make_harness):
    """A web app that only adds jobs (scheduler.combined = false)."""
    return make_harness(**{'scheduler.combined': 'false'})


def _run_and_check_only(harness, *labels):
    """Start a runtime: exactly the jobs ``labels`` run, nothing else."""
    harness.start()
    harness.wait_records(len(labels))
    poll(lambda: harness.queued() == 0)
    created = [e for e in harness.events.events if e.type == 'job.created']
    assert sorted(v[0] for v in harness.values()) == sorted(labels)
    assert len(created) == len(labels)


@pytest.mark.slow
def test_committed_request_sends_after_the_commit(producer):
    response = producer.web.post_json('/schedule', {
        'kind': 'async', 'args': [producer.records_path, 'committed']})
    # While the view ran, the message was not on the queue yet...
    assert response.json['queued_during_view'] == 0
    # ...and it is once the request has committed.
    assert producer.queued() == 1
    _run_and_check_only(producer, 'committed')


@pytest.mark.parametrize('path, status', [
    ('/schedule_then_raise', 500),
    ('/schedule_then_abort', 200),
    ('/schedule_then_doom', 200),
])
@pytest.mark.parametrize('kind, trigger', [
    ('async', {}),
    ('date', {'date': 'soon'}),
    ('interval', {'seconds': 1}),
    ('cron', {'second': '*'}),
])
@pytest.mark.slow
def test_aborted_request_sends_nothing(producer, path, status, kind, trigger):
    if trigger.get('date') == 'soon':
        trigger = {'date': time.time() + 0.1}
    params = {'kind': kind, 'args': [producer.records_path, 'aborted'],
              **trigger}
    if status == 500:
        with pytest.raises(RuntimeError, match='failed after scheduling'):
            producer.web.post_json(path, params)
    else:
        producer.web.post_json(path, params, status=status)
    assert producer.queued() == 0
    producer.schedule('async', 'marker')
    assert producer.queued() == 1
    _run_and_check_only(producer, 'marker')


@pytest.mark.slow
def test_aborted_request_in_combined_mode(harness):
    with pytest.raises(RuntimeError):
        harness.web.post_json('/schedule_then_raise', {
            'kind': 'async', 'args': [harness.records_path, 'aborted']})
    marker = harness.schedule('async', 'marker')
    harness.events.wait_for(marker, 'job.removed')
    # Had the aborted job been sent, it would have been received first.
    assert harness.values() == [['marker']]
    assert harness.runtime.stats.snapshot()['received'] == 1
    assert [e.job.id for e in harness.events.events
            if e.type == 'job.created'] == [marker]


def test_an_invalid_job_aborts_the_whole_request(producer):
    # The view adds a valid job, then an invalid one: InvalidJob propagates,
    # pyramid_tm aborts, and the valid job is not sent either.
    with pytest.raises(Exception, match='unknown queue'):
        producer.web.post_json('/schedule_two', {
            'first': {'kind': 'async', 'args': [producer.records_path, 'ok']},
            'second': {'kind': 'async', 'queue': 'nope',
                       'args': [producer.records_path, 'bad']}})
    assert producer.queued() == 0


@pytest.mark.slow
def test_two_jobs_of_one_request_are_sent_together(producer):
    producer.web.post_json('/schedule_two', {
        'first': {'kind': 'async', 'args': [producer.records_path, 'one']},
        'second': {'kind': 'date', 'date': time.time() + 0.1,
                   'args': [producer.records_path, 'two']}})
    assert producer.queued() == 2
    _run_and_check_only(producer, 'one', 'two')


@pytest.mark.slow
def test_cancel_waits_for_the_commit_too(harness):
    job_id = harness.schedule('date', 'x', date=time.time() + 3600)
    harness.events.wait_for(job_id, 'job.created')
    with pytest.raises(RuntimeError, match='failed after cancelling'):
        harness.web.post_json('/cancel_then_raise', {'id': job_id})
    marker = harness.schedule('async', 'marker')
    harness.events.wait_for(marker, 'job.removed')
    assert harness.events.types(job_id) == ['job.created']
    assert harness.runtime.pending_count('jobs') == 1
    harness.web.post_json('/cancel', {'id': job_id})
    harness.events.wait_for(job_id, 'job.removed')
    assert harness.events.types(job_id) == ['job.created', 'job.canceled',
                                            'job.removed']


@pytest.mark.slow
def test_not_transactional_sends_at_once(make_harness):
    h = make_harness(**{'scheduler.transactional': 'false',
                        'scheduler.combined': 'false'})
    response = h.web.post_json('/schedule', {
        'kind': 'async', 'args': [h.records_path, 'during']})
    assert response.json['queued_during_view'] == 1
    h.web.post_json('/schedule_then_abort', {
        'kind': 'async', 'args': [h.records_path, 'sent anyway']})
    assert h.queued() == 2
    _run_and_check_only(h, 'during', 'sent anyway')


def test_outside_a_request_a_job_is_sent_at_once(producer, records):
    producer.scheduler.add_async_job(jobs.record, args=[records, 'script'])
    assert producer.queued() == 1


@pytest.mark.slow
def test_explicit_transaction_manager_waits_for_commit(producer, records):
    # A script (no request) using the transaction package's explicit mode.
    manager = transaction.manager
    manager.explicit = True
    try:
        manager.begin()
        producer.scheduler.add_async_job(jobs.record, args=[records, 'nope'])
        assert producer.queued() == 0
        manager.abort()
        assert producer.queued() == 0
        manager.begin()
        producer.scheduler.add_async_job(jobs.record, args=[records, 'yes'])
        assert producer.queued() == 0
        manager.commit()
    finally:
        manager.explicit = False
    assert producer.queued() == 1
    _run_and_check_only(producer, 'yes')
