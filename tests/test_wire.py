"""The wire format end to end: serializers, compression, bad messages,
housekeeping of the embedded broker."""
import datetime
import decimal
import json
import logging
import time
import uuid

import pytest
from kombu import serialization

from pyramid_scheduler import broker, wire
from tests import jobs
from tests.conftest import peek, poll, stored_message_rows


def dead_letters(settings, queue='jobs'):
    """The messages on a queue's dead-letter queue, left there."""
    return peek(settings, limit=10**6,
                kombu_queue=broker.dead_letter_queue(settings, queue),
                accept=('application/json', 'application/x-python-serialize',
                        'application/data', 'text/plain'))


def publish_raw(settings, body, queue='jobs', serializer='json',
                content_type=None, content_encoding=None):
    """Put a message on a queue the way another (old, buggy) producer would."""
    target = broker.job_queue(settings, queue)
    assert target.name == broker.queue_name(settings, queue)
    connection = broker.connect(settings)
    try:
        producer = connection.Producer()
        if content_type:
            producer.publish(body, routing_key=target.name, exchange='',
                             content_type=content_type,
                             content_encoding=content_encoding or 'utf-8',
                             declare=[target])
        else:
            producer.publish(body, routing_key=target.name, exchange='',
                             serializer=serializer, declare=[target])
    finally:
        connection.release()


RICH_ARGS = [
    datetime.datetime(2024, 2, 29, 13, 45, 10, 123456),
    # JSON keeps an offset, not a zone name: use a fixed-offset zone here
    # (a ZoneInfo comes back as the same instant with a fixed offset).
    datetime.datetime(2024, 2, 29, 13, 45, tzinfo=datetime.timezone(
        datetime.timedelta(hours=2))),
    datetime.date(1999, 12, 31),
    decimal.Decimal('1234.5600'),
    uuid.UUID('12345678-1234-5678-1234-567812345678'),
]


@pytest.mark.slow
def test_json_round_trips_rich_args(make_harness, records):
    h = make_harness(**{'scheduler.combined': 'false'})
    job_id = h.scheduler.add_async_job(
        jobs.record_types, args=[records, *RICH_ARGS],
        kwargs={'when': datetime.date(2000, 1, 1),
                'amount': decimal.Decimal('0.10')})
    # It goes as JSON (the default serializer)...
    [message] = h.peek()
    assert message.content_type == 'application/json'
    assert json.loads(message.body)['job']['func'] == 'tests.jobs:record_types'
    # ...and the job gets back what it was given.
    h.start()
    [run] = h.wait_records(1)
    assert run['values'] == [[type(v).__name__, repr(v)] for v in RICH_ARGS]
    assert run['extra'] == {
        'when': ['date', repr(datetime.date(2000, 1, 1))],
        'amount': ['Decimal', "Decimal('0.10')"]}
    h.events.wait_for(job_id, 'job.removed')


@pytest.mark.slow
def test_date_job_args_round_trip_too(harness, records):
    harness.scheduler.add_date_job(jobs.record_types, time.time() + 0.1,
                                   args=[records, *RICH_ARGS])
    [run] = harness.wait_records(1)
    assert run['values'] == [[type(v).__name__, repr(v)] for v in RICH_ARGS]


@pytest.mark.slow
def test_pickle_serializer_when_configured(make_harness, records):
    h = make_harness(**{'scheduler.broker.serializer': 'pickle',
                        'scheduler.combined': 'false'})
    args = [records, (1, 2), {3, 4}, frozenset({5}), b'\x00bytes', *RICH_ARGS]
    h.scheduler.add_async_job(jobs.record_types, args=args)
    h.scheduler.add_date_job(jobs.record_types, time.time() + 0.1, args=args)
    assert {m.content_type for m in h.peek()} == {
        'application/x-python-serialize'}
    h.start()
    runs = h.wait_records(2)
    expected = [[type(v).__name__, repr(v)] for v in args[1:]]
    assert [r['values'] for r in runs] == [expected, expected]


@pytest.mark.slow
def test_zlib_compression(make_harness, records):
    h = make_harness(**{'scheduler.broker.compressor': 'zlib',
                        'scheduler.combined': 'false'})
    big = 'x' * 5000
    h.schedule('async', big)
    h.schedule('date', 'deferred', date=time.time() + 0.1)
    messages = h.peek()
    assert len(messages) == 2
    assert {m.headers.get('compression') for m in messages} == {
        'application/x-gzip'}
    h.start()
    runs = h.wait_records(2)
    assert sorted(len(r['values'][0]) for r in runs) == [8, 5000]


def _assert_runtime_survives(harness, label):
    harness.schedule('async', label)
    poll(lambda: [label] in harness.values(),
         message=lambda: f'the job after the bad message did not run: '
         f'{harness.values()}')
    assert harness.runtime.running


def _wait_for_rejection(harness, caplog, text):
    poll(lambda: any(text in r.getMessage() for r in caplog.records
                     if r.levelno >= logging.ERROR),
         message=lambda: f'no error log containing {text!r}: {caplog.text}')
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


@pytest.mark.slow
def test_wrong_version_is_rejected_with_a_clear_log_line(harness, caplog):
    caplog.set_level(logging.INFO, logger='pyramid_scheduler')
    body = wire.job_created('jobs', {
        'id': 'from-the-future', 'kind': 'async', 'func': 'tests.jobs:record',
        'args': [harness.records_path, 'v99'], 'kwargs': {}, 'trigger': {},
        'options': {}})
    body['version'] = 99
    publish_raw(harness.settings, body)
    [line] = _wait_for_rejection(harness, caplog, 'message version 99')
    assert 'is not supported' in line and 'pyramid_scheduler.jobs' in line
    assert 'dead-letter' in line
    _assert_runtime_survives(harness, 'after-v99')
    assert ['v99'] not in harness.values()
    assert harness.runtime.dead_letters[-1]['reason'].startswith(
        'message version 99')


@pytest.mark.parametrize('label, raw, expected', [
    ('not-json', dict(body=b'{this is not json', content_type='application/json'),
     'body does not decode'),
    ('a-list', dict(body=[1, 2, 3]), 'not a dict'),
    ('other-protocol', dict(body={'hello': 'world'}), 'not a pyramid_scheduler'),
    ('no-job', dict(body={**wire.envelope(wire.JOB_CREATED), 'queue': 'jobs'}),
     'lacks job'),
    ('pickle-to-json', dict(body={'x': 1}, serializer='pickle'),
     'content type'),
    ('bad-func', dict(body=wire.job_created('jobs', {
        'id': 'f', 'kind': 'async', 'func': 'tests.jobs:no_such_function',
        'args': [], 'kwargs': {}, 'trigger': {}, 'options': {}})),
     'no_such_function'),
    ('bad-trigger', dict(body=wire.job_created('jobs', {
        'id': 't', 'kind': 'cron', 'func': 'tests.jobs:noop',
        'args': [], 'kwargs': {}, 'trigger': {'hour': 25}, 'options': {}})),
     'invalid cron schedule'),
    ('date-without-date', dict(body=wire.job_created('jobs', {
        'id': 'nd', 'kind': 'date', 'func': 'tests.jobs:noop',
        'args': [], 'kwargs': {}, 'trigger': {}, 'options': {}})),
     'run_date'),
    ('float-grace', dict(body=wire.job_created('jobs', {
        'id': 'g', 'kind': 'interval', 'func': 'tests.jobs:noop',
        'args': [], 'kwargs': {}, 'trigger': {'seconds': 5},
        'options': {'misfire_grace_time': 0.5}})),
     'misfire_grace_time'),
    ('wrong-queue', dict(body=wire.job_created('elsewhere', {
        'id': 'q', 'kind': 'async', 'func': 'tests.jobs:noop',
        'args': [], 'kwargs': {}, 'trigger': {}, 'options': {}})),
     "queue 'elsewhere'"),
])
def test_bad_messages_are_dead_lettered_and_the_runtime_goes_on(
        harness, caplog, label, raw, expected):
    caplog.set_level(logging.INFO, logger='pyramid_scheduler')
    publish_raw(harness.settings, **raw)
    lines = _wait_for_rejection(harness, caplog, expected)
    assert any('rejected a message from' in line for line in lines), lines
    _assert_runtime_survives(harness, 'after-' + label)
    # It was dead-lettered once, not handed back to fail again and again,
    # and kept on the dead-letter queue for an operator, with the reason.
    assert harness.runtime.stats.snapshot()['dead_lettered'] == 1
    [dead] = dead_letters(harness.settings)
    assert expected in dead.headers['x-pscheduler-reason']
    assert harness.queued() == 0


# --- housekeeping ----------------------------------------------------------------

@pytest.mark.slow
def test_housekeeping_leaves_no_consumed_message_and_calls_append(
        make_harness, tmp_path):
    hk_path = str(tmp_path / 'housekeeping.jsonl')
    h = make_harness(**{
        'scheduler.housekeeping.append': 'tests.jobs:housekeeping_append',
        'test.housekeeping_path': hk_path})
    runtime = h.start()
    for n in range(3):
        h.schedule('async', n)
    later = h.schedule('date', 'later', date=time.time() + 3600)
    h.wait_records(3)
    h.events.wait_for(later, 'job.created')
    runtime.housekeeping()
    # No consumed message is left in the embedded database...
    poll(lambda: stored_message_rows(h.settings.database_path) == 0)
    # ...housekeeping.append ran, with the app's threadlocals...
    assert [r['values'] for r in jobs.read_records(hk_path)] == [
        ['housekeeping']]
    # ...and the deferred job lives on in the job store.
    assert runtime.pending_count('jobs') == 1


@pytest.mark.slow
def test_housekeeping_runs_on_its_interval(make_harness, tmp_path):
    hk_path = str(tmp_path / 'housekeeping.jsonl')
    h = make_harness(**{
        'scheduler.housekeeping': '0.3s',
        'scheduler.housekeeping.append': 'tests.jobs:housekeeping_append',
        'test.housekeeping_path': hk_path})
    h.start()
    h.schedule('async', 'one')
    h.wait_records(1)
    poll(lambda: len(jobs.read_records(hk_path)) >= 2)
    poll(lambda: stored_message_rows(h.settings.database_path) == 0)


def test_wire_envelope_is_versioned():
    body = wire.job_created('jobs', {'id': 'x'})
    assert body['protocol'] == 'pyramid_scheduler'
    assert body['version'] == wire.VERSION
    content_type, encoding, data = serialization.dumps(body, 'json')
    assert json.loads(data)['type'] == 'job.created'
