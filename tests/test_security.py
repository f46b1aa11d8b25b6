"""Issue 5: the broker is not a way in.

With ``scheduler.broker.secret`` set, the producer signs every message and
the consumer refuses, with the reason logged and the raw message moved to
the dead-letter queue, anything unsigned, forged, altered or replayed too
late; it never runs it. Pickle is opt-in, ``scheduler.allowed_modules``
bounds what can be scheduled (at add time, at receipt, before each run), and
neither the secret nor the broker password shows in logs, replies or errors.

Hostile messages are published raw with kombu, the way anyone with write
access to the broker could; each is followed by a real job, which must run.
"""
import datetime
import json
import logging
import os
import pickle
import time
import traceback
import urllib.parse
import uuid

import kombu
import pytest
from pyramid.exceptions import ConfigurationError

from pyramid_scheduler import admin, broker, codec, signing, wire
from pyramid_scheduler.errors import (BrokerUnavailable, InvalidJob,
                                      InvalidMessage)
from pyramid_scheduler.references import check_allowed
from pyramid_scheduler.producer import Producer
from pyramid_scheduler.scheduler import Scheduler
from pyramid_scheduler.settings import parse_settings
from tests import jobs
from tests.conftest import TIMEOUT, EventLog, poll

SECRET = 'current-secret-0123456789abcdef'
OLD_SECRET = 'previous-secret-0123456789abcdef'
OTHER_SECRET = 'attacker-guess-0123456789abcdef'
PASSWORD = 's3cretpw'
REDIS_URL = os.environ.get('PSCHEDULER_TEST_REDIS_URL',
                           'redis://127.0.0.1:6379/0')
DAY = 86400


# --- functions the hostile messages name -------------------------------------

def forbidden_record(path, *values):
    """Outside ``scheduler.allowed_modules = tests.jobs``: must never run."""
    jobs.record(path, 'FORBIDDEN RAN', *values)


class PickleBomb:
    """Unpickling this runs ``tests.jobs.record``: proof of code execution."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return jobs.record, (self.path, 'UNPICKLED')


# --- helpers -----------------------------------------------------------------

def make_conf(tmp_path, **extra):
    """Scheduler settings: a secret, allowed_modules tests.jobs, SQLite."""
    conf = {
        'scheduler.database': str(tmp_path / 'scheduler.sqlite'),
        'scheduler.id': 'sec' + uuid.uuid4().hex[:10],
        'scheduler.broker.secret': SECRET,
        'scheduler.allowed_modules': 'tests.jobs',
    }
    for key, value in extra.items():
        key = 'scheduler.' + key.replace('__', '.')
        if value is None:
            conf.pop(key, None)
        else:
            conf[key] = value
    return conf


def spec(func, args, kind='async', trigger=None, job_id=None):
    return {'id': job_id or uuid.uuid4().hex, 'kind': kind, 'func': func,
            'args': list(args), 'kwargs': {}, 'trigger': trigger or {},
            'options': {}, 'created_at': time.time()}


def job_message(func, args, queue='jobs', **kwargs):
    return wire.job_created(queue, spec(func, args, **kwargs))


def encode_signed(settings, body):
    """What the producer configured by ``settings`` puts on the wire."""
    payload, content_type, encoding, headers = Producer(settings).encode(body)
    if isinstance(payload, str):
        payload = payload.encode(encoding)
    return payload, content_type, encoding, headers


def publish_raw(settings, payload, content_type='application/json',
                content_encoding='utf-8', headers=None, queue='jobs'):
    """Put a message on a queue as anyone with broker access could."""
    target = broker.job_queue(settings, queue)
    with broker.connect(settings) as connection:
        connection.Producer().publish(
            payload, routing_key=target.name, exchange='',
            content_type=content_type, content_encoding=content_encoding,
            headers=headers or {}, declare=[target])


class Consumer:
    """A started in-process scheduler (a runtime serving every queue)."""

    def __init__(self, conf):
        self.settings = parse_settings(conf)
        self.scheduler = Scheduler(self.settings)
        self.events = EventLog()
        self.scheduler.add_listener(self.events)
        self.scheduler.start()
        assert self.scheduler.runtime is not None, 'job stores are locked'
        assert self.runtime.wait_ready(TIMEOUT), 'runtime not ready'

    @property
    def runtime(self):
        return self.scheduler.runtime

    def dead_lettered(self):
        return self.runtime.stats.snapshot()['dead_lettered']

    def wait_dead_letters(self, before, count=1):
        """Reasons of the ``count`` messages dead-lettered after ``before``."""
        poll(lambda: self.dead_lettered() >= before + count,
             message=lambda: f'{self.dead_lettered() - before} of {count} '
             f'message(s) dead-lettered; recent: {self.runtime.dead_letters}')
        return [d['reason'] for d in self.runtime.dead_letters[-count:]]

    def run_real_job(self, path, value='real'):
        """A job added through the API, alongside the hostile ones: it runs."""
        job_id = self.scheduler.add_async_job('tests.jobs:record',
                                              args=[path, value])
        poll(lambda: [r for r in jobs.read_records(path)
                      if r['values'] == [value]],
             message=f'the real job {value!r} did not run')
        return job_id

    def shutdown(self):
        self.scheduler.shutdown(timeout=5)


@pytest.fixture
def start_consumer():
    started = []

    def start(conf):
        consumer = Consumer(conf)
        started.append(consumer)
        return consumer
    yield start
    for consumer in started:
        consumer.shutdown()


@pytest.fixture(scope='module')
def shared_consumer(tmp_path_factory):
    """One consumer (secret, allowed_modules) for the per-case tests."""
    consumer = Consumer(make_conf(tmp_path_factory.mktemp('shared')))
    yield consumer
    consumer.shutdown()


# --- each hostile message: rejected with its reason, never run ---------------

def _forged(settings, canary):
    payload, content_type, encoding, _ = encode_signed(
        settings, job_message('tests.jobs:record', [canary, 'forged']))
    fake = f'v1:{time.time():.3f}:{uuid.uuid4().hex}{uuid.uuid4().hex}'
    return payload, content_type, encoding, {signing.HEADER: fake}


def _wrong_secret(settings, canary):
    attacker = parse_settings({'scheduler.database': settings.database_path,
                               'scheduler.broker.secret': OTHER_SECRET})
    return encode_signed(attacker,
                         job_message('tests.jobs:record', [canary, 'wrong']))


def _altered_body(settings, canary):
    # Signed for a harmless value, then changed in the broker.
    payload, content_type, encoding, headers = encode_signed(
        settings, job_message('tests.jobs:record', [canary, 'original']))
    altered = payload.replace(b'"original"', b'"tampered"')
    assert altered != payload
    return altered, content_type, encoding, headers


def _altered_content_encoding(settings, canary):
    payload, content_type, _, headers = encode_signed(
        settings, job_message('tests.jobs:record', [canary, 'encoding']))
    return payload, content_type, 'latin-1', headers


def _unsigned(settings, canary):
    payload = json.dumps(job_message('tests.jobs:record',
                                     [canary, 'unsigned']))
    return payload.encode(), 'application/json', 'utf-8', {}


def _malformed_signature(settings, canary):
    payload, content_type, encoding, _ = _unsigned(settings, canary)
    return payload, content_type, encoding, {signing.HEADER: 'v1:nan:é'}


def _pickle_raw(settings, canary):
    payload = pickle.dumps(PickleBomb(canary))
    return payload, 'application/x-python-serialize', 'binary', {}


def _pickle_signed(settings, canary):
    # Even signed with the right secret (a misconfigured producer), pickle
    # is not what a JSON consumer reads: never unpickled.
    payload = pickle.dumps(PickleBomb(canary))
    header = signing.sign(settings.secrets[0], payload,
                          'application/x-python-serialize', 'binary')
    return (payload, 'application/x-python-serialize', 'binary',
            {signing.HEADER: header})


def _outside_allowed_async(settings, canary):
    return encode_signed(settings, job_message(
        'tests.test_security:forbidden_record', [canary, 'async']))


def _outside_allowed_date(settings, canary):
    run_date = datetime.datetime.now(datetime.timezone.utc) \
        + datetime.timedelta(seconds=1)
    return encode_signed(settings, job_message(
        'tests.test_security:forbidden_record', [canary, 'date'], kind='date',
        trigger={'run_date': run_date.isoformat()}))


def _lookalike_module(settings, canary):
    # "tests.jobs" allows tests.jobs and tests.jobs.*, not tests.jobs_evil.
    return encode_signed(settings, job_message('tests.jobs_evil:record',
                                               [canary, 'lookalike']))


def _walks_out_of_allowed_module(settings, canary):
    # tests.jobs imports os: "tests.jobs:os.makedirs" names os.makedirs.
    return encode_signed(settings, job_message('tests.jobs:os.makedirs',
                                               [canary]))


def _replayed_too_late(settings, canary):
    payload = json.dumps(job_message('tests.jobs:record', [canary, 'replay']))
    header = signing.sign(settings.secrets[0], payload, 'application/json',
                          'utf-8', now=time.time() - 2 * DAY)
    return payload.encode(), 'application/json', 'utf-8', {
        signing.HEADER: header}


def _bad_compression_header(settings, canary):
    # kombu itself cannot make a message of it (decompression fails before
    # our code sees it): still dead-lettered, the consumer goes on.
    payload, content_type, encoding, headers = encode_signed(
        settings, job_message('tests.jobs:record', [canary, 'compression']))
    headers = dict(headers, compression='application/x-gzip')
    return payload, content_type, encoding, headers


HOSTILE = {
    'forged': (_forged, 'bad signature'),
    'wrong_secret': (_wrong_secret, 'bad signature'),
    'altered_body': (_altered_body, 'bad signature'),
    'altered_content_encoding': (_altered_content_encoding, 'bad signature'),
    'unsigned': (_unsigned, 'unsigned message'),
    'malformed_signature': (_malformed_signature, 'malformed signature'),
    'pickle_raw': (_pickle_raw, 'unsigned message'),
    'pickle_signed': (_pickle_signed, "content type "
                      "'application/x-python-serialize' refused"),
    'outside_allowed_async': (_outside_allowed_async,
                              'outside the modules allowed'),
    'outside_allowed_date': (_outside_allowed_date,
                             'outside the modules allowed'),
    'lookalike_module': (_lookalike_module, 'outside the modules allowed'),
    'walks_out_of_allowed_module': (_walks_out_of_allowed_module,
                                    "it is defined in 'os'"),
    'replayed_too_late': (_replayed_too_late, 'older than '
                          'scheduler.broker.max_message_age'),
    'bad_compression_header': (_bad_compression_header,
                               'message does not decode'),
}


@pytest.mark.parametrize('case', list(HOSTILE))
def test_hostile_message_is_dead_lettered_with_its_reason_and_never_runs(
        shared_consumer, tmp_path, caplog, case):
    consumer = shared_consumer
    make, reason = HOSTILE[case]
    canary = str(tmp_path / 'canary')
    real = str(tmp_path / 'real')
    before = consumer.dead_lettered()
    pending_before = consumer.runtime.pending_count('jobs')

    payload, content_type, encoding, headers = make(consumer.settings, canary)
    publish_raw(consumer.settings, payload, content_type, encoding, headers)
    consumer.run_real_job(real)

    [logged_reason] = consumer.wait_dead_letters(before)
    assert reason in logged_reason
    assert any(r.levelno == logging.ERROR and reason in r.getMessage()
               and 'dead-letter' in r.getMessage() for r in caplog.records), \
        caplog.text
    # Never run, never unpickled, never stored for later, no job events.
    assert not os.path.exists(canary), jobs.read_records(canary)
    assert consumer.runtime.pending_count('jobs') == pending_before
    assert not [e for e in consumer.events.events if e.get('job')
                and canary in json.dumps(e['job'].get('args'), default=str)]
    assert consumer.runtime.running


@pytest.mark.slow
def test_every_hostile_message_at_once_beside_real_jobs(start_consumer,
                                                        tmp_path):
    """All the cases interleaved with real jobs: each real job runs, every
    hostile message is in the dead-letter queue, raw, with its reason."""
    consumer = start_consumer(make_conf(tmp_path))
    settings = consumer.settings
    canary = str(tmp_path / 'canary')
    real = str(tmp_path / 'real')
    sent = {}
    for index, (case, (make, reason)) in enumerate(HOSTILE.items()):
        payload, content_type, encoding, headers = make(settings, canary)
        publish_raw(settings, payload, content_type, encoding, headers)
        sent[payload] = reason
        consumer.scheduler.add_async_job('tests.jobs:record',
                                         args=[real, index])
    poll(lambda: len(jobs.read_records(real)) == len(HOSTILE),
         message=lambda: f'real jobs ran: {jobs.read_records(real)}')
    consumer.wait_dead_letters(0, len(HOSTILE))
    assert not os.path.exists(canary)

    replies, missing = admin.send_command(settings, 'dead-letters')
    assert not missing
    assert replies[0]['result']['count'] == len(HOSTILE)
    assert len(replies[0]['result']['recent']) == len(HOSTILE)

    # The dead-letter queue holds each message as it came, with its reason.
    found = {}
    with broker.connect(settings) as connection:
        dead = broker.dead_letter_queue(settings, 'jobs')(
            connection.default_channel)
        while (message := dead.get(no_ack=True, accept=None)) is not None:
            found[message.body] = message.headers['x-pscheduler-reason']
    assert set(found) == set(sent)
    for payload, reason in found.items():
        assert sent[payload] in reason
    assert consumer.runtime.stats.snapshot()['executed'] == len(HOSTILE)


# --- secret rotation ---------------------------------------------------------

@pytest.mark.slow
def test_rotation_previous_secret_still_verifies_and_never_signs(
        start_consumer, tmp_path):
    conf = make_conf(
        tmp_path, broker__secret=SECRET,
        broker__secret__previous=f'{OLD_SECRET}  spare-old-secret-000000')
    consumer = start_consumer(conf)
    settings = consumer.settings
    assert settings.secrets == (SECRET.encode(), OLD_SECRET.encode(),
                                b'spare-old-secret-000000')
    out = str(tmp_path / 'out')

    # Producers not yet moved to the new secret (web processes restarted
    # later) keep working: what they sign is accepted and runs.
    old_producer = Scheduler(parse_settings(dict(conf, **{
        'scheduler.broker.secret': OLD_SECRET,
        'scheduler.broker.secret.previous': ''})))
    old_producer.add_async_job('tests.jobs:record', args=[out, 'old'])
    # Producers already on the new one, too; and they sign with it only.
    consumer.scheduler.add_async_job('tests.jobs:record', args=[out, 'new'])
    poll(lambda: sorted(r['values'][0] for r in jobs.read_records(out))
         == ['new', 'old'])
    payload, content_type, encoding, headers = encode_signed(
        settings, {'any': 'body'})
    signing.verify((SECRET.encode(),), headers[signing.HEADER], payload,
                   content_type, encoding)
    with pytest.raises(InvalidMessage):
        signing.verify((OLD_SECRET.encode(),), headers[signing.HEADER],
                       payload, content_type, encoding)

    # Admin commands and their signed replies work during the rotation.
    replies, missing = admin.send_command(settings, 'ping')
    assert not missing and replies[0]['result']['queue'] == 'jobs'
    old_producer.shutdown()

    # Once the previous secret is dropped, its signature is refused.
    consumer.shutdown()
    consumer = start_consumer(make_conf(
        tmp_path, broker__secret=SECRET, id=settings.scheduler_id))
    before = consumer.dead_lettered()
    old_settings = parse_settings(dict(conf, **{
        'scheduler.broker.secret': OLD_SECRET,
        'scheduler.broker.secret.previous': ''}))
    publish_raw(consumer.settings, *encode_signed(
        old_settings, job_message('tests.jobs:record', [out, 'too-old'])))
    assert 'bad signature' in consumer.wait_dead_letters(before)[0]
    consumer.run_real_job(out, 'after-rotation')
    assert 'too-old' not in [r['values'][0] for r in jobs.read_records(out)]


def test_a_previous_secret_needs_a_current_one(tmp_path):
    with pytest.raises(ConfigurationError) as info:
        parse_settings(make_conf(tmp_path, broker__secret=None,
                                 broker__secret__previous=OLD_SECRET))
    assert OLD_SECRET not in str(info.value)


# --- where the secret comes from ---------------------------------------------

def test_secret_from_a_file_or_an_environment_variable(tmp_path, monkeypatch,
                                                       start_consumer):
    secret_file = tmp_path / 'secret'
    secret_file.write_text(SECRET + '\n')
    monkeypatch.setenv('PSCHEDULER_TEST_SECRET', SECRET)
    from_file = make_conf(tmp_path, broker__secret=None,
                          broker__secret__file=str(secret_file))
    from_env = make_conf(tmp_path, broker__secret=None,
                         broker__secret__env='PSCHEDULER_TEST_SECRET',
                         id=from_file['scheduler.id'])
    for conf in (from_file, from_env):
        assert parse_settings(conf).secrets == (SECRET.encode(),)
        assert SECRET not in json.dumps(conf)  # not in the ini

    # A producer reading the file, a consumer reading the environment.
    consumer = start_consumer(from_env)
    producer = Scheduler(parse_settings(from_file))
    out = str(tmp_path / 'out')
    producer.add_async_job('tests.jobs:record', args=[out, 'from-file'])
    poll(lambda: jobs.read_records(out))
    producer.shutdown()
    assert consumer.dead_lettered() == 0


@pytest.mark.parametrize('extra, key, shown', [
    ({'broker__secret': 'short-secret'}, 'scheduler.broker.secret',
     'short-secret'),
    ({'broker__secret__file': 'SECRETFILE'}, 'scheduler.broker.secret.file',
     SECRET),
    ({'broker__secret__env': 'PSCHEDULER_TEST_SECRET'},
     'scheduler.broker.secret.env', SECRET),
], ids=['too-short', 'ini-and-file', 'ini-and-env'])
def test_secret_settings_errors_never_show_the_secret(tmp_path, monkeypatch,
                                                      extra, key, shown):
    monkeypatch.setenv('PSCHEDULER_TEST_SECRET', SECRET)
    secret_file = tmp_path / 'secret'
    secret_file.write_text(SECRET)
    extra = {k: (str(secret_file) if v == 'SECRETFILE' else v)
             for k, v in extra.items()}
    with pytest.raises(ConfigurationError) as info:
        parse_settings(make_conf(tmp_path, **extra))
    text = ''.join(traceback.format_exception(info.value))
    assert key in str(info.value)
    assert shown not in text and SECRET not in text


def test_unusable_secret_sources_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.delenv('PSCHEDULER_TEST_UNSET', raising=False)
    with pytest.raises(ConfigurationError, match='secret.env'):
        parse_settings(make_conf(tmp_path, broker__secret=None,
                                 broker__secret__env='PSCHEDULER_TEST_UNSET'))
    with pytest.raises(ConfigurationError, match='secret.file'):
        parse_settings(make_conf(tmp_path, broker__secret=None,
                                 broker__secret__file=str(tmp_path / 'none')))
    short = tmp_path / 'short'
    short.write_text('tiny-secret')
    with pytest.raises(ConfigurationError) as info:
        parse_settings(make_conf(tmp_path, broker__secret=None,
                                 broker__secret__file=str(short)))
    assert 'scheduler.broker.secret.file' in str(info.value)
    assert 'tiny-secret' not in str(info.value)


# --- message age -------------------------------------------------------------

def _fake_message(settings, body, now):
    payload = json.dumps(body).encode()
    header = signing.sign(settings.secrets[0], payload, 'application/json',
                          'utf-8', now=now)
    return kombu.Message(body=payload, content_type='application/json',
                         content_encoding='utf-8',
                         headers={signing.HEADER: header})


def test_max_message_age_defaults_to_a_day_and_zero_disables_it(tmp_path):
    body = job_message('tests.jobs:record', ['x'])
    settings = parse_settings(make_conf(tmp_path))
    assert settings.max_message_age == DAY
    assert codec.decode(settings, _fake_message(settings, body,
                                                time.time() - DAY + 60))
    with pytest.raises(InvalidMessage, match='older than'):
        codec.decode(settings, _fake_message(settings, body,
                                             time.time() - DAY - 60))

    settings = parse_settings(make_conf(tmp_path, broker__max_message_age='0'))
    assert codec.decode(
        settings, _fake_message(settings, body, time.time() - 30 * DAY))
    settings = parse_settings(make_conf(tmp_path,
                                        broker__max_message_age='10m'))
    with pytest.raises(InvalidMessage, match='older than'):
        codec.decode(
            settings, _fake_message(settings, body, time.time() - 11 * 60))


# --- serializers -------------------------------------------------------------

def test_json_is_the_default_serializer(tmp_path):
    assert parse_settings(make_conf(tmp_path)).serializer == 'json'


def test_pickle_sent_raw_to_a_json_consumer_without_secret_is_not_unpickled(
        start_consumer, tmp_path):
    consumer = start_consumer(make_conf(tmp_path, broker__secret=None,
                                        allowed_modules='*'))
    canary = str(tmp_path / 'canary')
    publish_raw(consumer.settings, pickle.dumps(PickleBomb(canary)),
                'application/x-python-serialize', 'binary')
    # Labelled JSON, it is not valid JSON: refused all the same.
    publish_raw(consumer.settings, pickle.dumps(PickleBomb(canary)))
    consumer.run_real_job(str(tmp_path / 'real'))
    reasons = ' | '.join(consumer.wait_dead_letters(0, 2))
    assert "content type 'application/x-python-serialize' refused" in reasons
    assert 'body does not decode' in reasons
    assert not os.path.exists(canary)


def test_pickle_works_when_configured_and_json_is_then_refused(
        start_consumer, tmp_path, caplog):
    consumer = start_consumer(make_conf(tmp_path, broker__serializer='pickle'))
    out = str(tmp_path / 'out')
    when = datetime.datetime(2024, 5, 1, 12, 30)
    consumer.scheduler.add_async_job('tests.jobs:record_types',
                                     args=[out, {1, 2}, when])
    [run] = poll(lambda: jobs.read_records(out))
    assert run['values'] == [['set', '{1, 2}'], ['datetime', repr(when)]]
    # A JSON message, even correctly signed, is not what this consumer reads.
    json_settings = parse_settings(make_conf(tmp_path))
    publish_raw(consumer.settings, *encode_signed(
        json_settings, job_message('tests.jobs:record', [out, 'json'])))
    [reason] = consumer.wait_dead_letters(0)
    assert "content type 'application/json' refused" in reason
    assert not [r for r in caplog.records if 'pickle' in r.getMessage()
                and r.levelno == logging.WARNING]


@pytest.mark.parametrize('serializer, secret, warns', [
    ('pickle', None, True),
    ('pickle', SECRET, False),
    ('json', None, False),
], ids=['pickle-no-secret', 'pickle-secret', 'json-no-secret'])
def test_pickle_without_a_secret_warns_at_start(start_consumer, tmp_path,
                                                caplog, serializer, secret,
                                                warns):
    caplog.set_level(logging.WARNING)
    start_consumer(make_conf(tmp_path, broker__serializer=serializer,
                             broker__secret=secret))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                and 'pickle' in r.getMessage()
                and 'scheduler.broker.secret' in r.getMessage()]
    assert len(warnings) == (1 if warns else 0), caplog.text


# --- allowed modules: at add time, at receipt, before each run ---------------

def test_allowed_modules_are_checked_when_a_job_is_added(tmp_path):
    scheduler = Scheduler(parse_settings(make_conf(tmp_path)))
    for func in (forbidden_record, 'tests.test_security:forbidden_record',
                 'os:system', 'os.path:join', 'tests.jobs:os.system'):
        with pytest.raises(InvalidJob, match='scheduler.allowed_modules'):
            scheduler.add_async_job(func, args=['echo hi'])
    with pytest.raises(InvalidJob, match='scheduler.allowed_modules'):
        scheduler.add_date_job(forbidden_record, time.time() + 60,
                               args=['x'])
    assert scheduler.producer._pool is None  # nothing was sent


@pytest.mark.parametrize('ref, allowed, ok', [
    ('tests.jobs:record', ('tests.jobs',), True),
    ('tests.jobs:record', ('tests',), True),
    ('email.utils:formatdate', ('email',), True),
    ('email.utils:formatdate', ('email.',), True),
    ('email.utils:formatdate', ('tests', 'email.utils'), True),
    ('email:message_from_string', ('email.utils',), False),
    ('tests.jobs_evil:f', ('tests.jobs',), False),
    ('tests:f', ('tests.jobs',), False),
    ('os:system', ('tests', 'email'), False),
    # The qualname must not walk out of the allowed module through its
    # imports, nor into attributes that are not defined there.
    ('tests.jobs:os.system', ('tests.jobs',), False),
    ('email.utils:time.time', ('email',), False),
    ('tests.jobs:record.__call__', ('tests.jobs',), False),
    ('tests.jobs:record.__globals__', ('tests.jobs',), False),
    # Nothing is allowed by default (no application package here).
    ('anything:at_all', (), False),
    ('tests.jobs:record', (), False),
])
def test_allowed_modules_are_dotted_prefixes(ref, allowed, ok):
    if ok:
        check_allowed(ref, allowed)
    else:
        with pytest.raises(InvalidJob):
            check_allowed(ref, allowed)


@pytest.mark.slow
def test_allowed_modules_are_checked_again_before_a_stored_job_runs(
        start_consumer, tmp_path):
    """A job stored while the setting allowed it, run after it was
    tightened: refused at run time (JOB_FAILED), the function never called."""
    canary = str(tmp_path / 'canary')
    loose = make_conf(tmp_path, allowed_modules='*')
    consumer = start_consumer(loose)
    job_id = consumer.scheduler.add_date_job(
        'tests.test_security:forbidden_record', time.time() + 3600,
        args=[canary])
    poll(lambda: consumer.runtime.pending_count('jobs') == 1)
    consumer.shutdown()

    strict = start_consumer(dict(loose, **{
        'scheduler.allowed_modules': 'tests.jobs'}))
    assert strict.runtime.pending_count('jobs') == 1
    # Make it due now rather than wait an hour.
    strict.runtime.deferred.modify_job(
        job_id, 'jobs',
        next_run_time=datetime.datetime.now(datetime.timezone.utc))
    [failed] = strict.events.wait_for(job_id, 'job.failed')
    assert isinstance(failed['exception'], InvalidJob)
    assert 'scheduler.allowed_modules' in str(failed['exception'])
    strict.events.wait_for(job_id, 'job.removed')
    assert 'job.executed' not in strict.events.types(job_id)
    assert not os.path.exists(canary)
    strict.run_real_job(str(tmp_path / 'real'))


# --- no secrets in logs, replies or errors -----------------------------------

def _password_url(db):
    parts = urllib.parse.urlsplit(REDIS_URL)
    return f'redis://:{PASSWORD}@{parts.hostname}:{parts.port or 6379}/{db}'


def _assert_nothing_leaks(*texts):
    for text in texts:
        assert PASSWORD not in text
        assert SECRET not in text


@pytest.mark.slow
def test_no_password_or_secret_in_logs_replies_or_reprs_with_redis(
        start_consumer, tmp_path, caplog):
    """A combined runtime on Redis with a password in the URL (Redis here
    runs without AUTH and accepts any password), everything at DEBUG."""
    caplog.set_level(logging.DEBUG)
    conf = make_conf(tmp_path, broker__url=_password_url(5))
    consumer = start_consumer(conf)
    settings = consumer.settings
    assert PASSWORD in settings.broker_url  # what kombu connects with
    out = str(tmp_path / 'out')
    consumer.run_real_job(out)
    consumer.scheduler.add_async_job('tests.jobs:fail', args=['on purpose'])
    publish_raw(settings, *_forged(settings, str(tmp_path / 'canary')))
    consumer.wait_dead_letters(0)
    poll(lambda: consumer.runtime.stats.snapshot()['failed'] == 1)
    replies = []
    for command in ('status', 'ping', 'dead-letters', 'jobs', 'print-jobs'):
        answer, missing = admin.send_command(settings, command)
        assert not missing, command
        replies.extend(answer)
    _assert_nothing_leaks(caplog.text, json.dumps(replies, default=str),
                          repr(settings), repr(consumer.scheduler.producer),
                          repr(broker.connect(settings)))
    assert 'redis://:***@' in repr(settings)
    consumer.shutdown()
    with broker.connect(settings) as connection:
        _assert_nothing_leaks(connection.as_uri())
        for queue in (broker.job_queue(settings, 'jobs'),
                      broker.admin_queue(settings, 'jobs'),
                      broker.dead_letter_queue(settings, 'jobs')):
            queue(connection.default_channel).delete()


def test_broker_unavailable_error_hides_the_password(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    settings = parse_settings(make_conf(
        tmp_path, broker__url=f'redis://:{PASSWORD}@127.0.0.1:1/0',
        broker__send_timeout='0.5s'))
    scheduler = Scheduler(settings)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        scheduler.add_async_job('tests.jobs:noop')
    assert time.monotonic() - started < 5
    text = ''.join(traceback.format_exception(info.value))
    assert 'redis://:***@127.0.0.1:1/0' in str(info.value)
    _assert_nothing_leaks(text, caplog.text)
    scheduler.shutdown()


@pytest.mark.slow
def test_unreachable_broker_log_hides_the_password(start_consumer, tmp_path,
                                                   caplog):
    caplog.set_level(logging.DEBUG)
    conf = make_conf(tmp_path,
                     broker__url=f'redis://:{PASSWORD}@127.0.0.1:1/0',
                     broker__send_timeout='0.5s')
    settings = parse_settings(conf)
    scheduler = Scheduler(settings)
    scheduler.start()
    runtime = scheduler.runtime
    try:
        poll(lambda: 'unreachable' in caplog.text,
             message='no log line about the unreachable broker')
        assert 'redis://:***@127.0.0.1:1/0' in caplog.text
        _assert_nothing_leaks(caplog.text)
    finally:
        _stop_reconnecting(runtime)
        scheduler.shutdown(timeout=0.5)
    _assert_nothing_leaks(caplog.text)


def _stop_reconnecting(runtime):
    """End a consumer thread stuck reconnecting to a broker that is gone.

    (Runtime.stop() does not interrupt kombu's reconnect loop: the thread
    would go on trying for the rest of the test session.) The loop calls
    ``beat()`` before each new try; failing there ends it.
    """
    def stop_trying():
        raise ConnectionAbortedError('test over: stop reconnecting')
    runtime.consumer.should_stop = True
    runtime.state.beat = stop_trying
    assert runtime.join(TIMEOUT)


def test_redact_url():
    redact = broker.redact_url
    assert redact('redis://:pw@h:6379/0') == 'redis://:***@h:6379/0'
    assert redact('amqp://user:pw@h:5672//') == 'amqp://user:***@h:5672//'
    assert redact('amqp://u:one@h1//;amqp://u:two@h2//') == \
        'amqp://u:***@h1//;amqp://u:***@h2//'
    assert redact('redis://:p%40ss@h/0') == 'redis://:***@h/0'
    assert redact('sqla+sqlite:////tmp/x.sqlite') == \
        'sqla+sqlite:////tmp/x.sqlite'
    assert redact('redis://h:6379/0') == 'redis://h:6379/0'


def test_settings_repr_hides_secrets_and_passwords(tmp_path):
    settings = parse_settings(make_conf(
        tmp_path, broker__url=f'amqp://u:{PASSWORD}@h//',
        broker__secret__previous=OLD_SECRET,
        jobstore__url=f'postgresql://u:{PASSWORD}@h/db'))
    text = repr(settings) + str(settings)
    _assert_nothing_leaks(text)
    assert OLD_SECRET not in text
    assert 'amqp://u:***@h//' in text and 'postgresql://u:***@h/db' in text


def test_verify_never_raises_anything_but_invalid_message():
    payload = b'{"a": 1}'
    secrets = (SECRET.encode(),)
    good = signing.sign(secrets[0], payload, 'application/json', 'utf-8')
    signing.verify(secrets, good, payload, 'application/json', 'utf-8')
    for header in ('', None, 0, 17, [], ['v1'], {'v1': 1}, 'v1', 'v1::',
                   'v2:1:' + '0' * 64, 'v1:nan:' + '0' * 64,
                   'v1:inf:' + '0' * 64, 'v1:1:é', 'v1:1:' + 'G' * 64,
                   good + '\n', good.upper(), good[:-1],
                   good.replace('v1:', 'v1:1', 1)):
        with pytest.raises(InvalidMessage):
            signing.verify(secrets, header, payload, 'application/json',
                           'utf-8')
    for body in (None, '', b'', '{"a": 2}', 'é\udc80'):
        with pytest.raises(InvalidMessage):
            signing.verify(secrets, good, body, 'application/json', 'utf-8')
    with pytest.raises(InvalidMessage):
        signing.verify(secrets, good, payload, None, None)


def test_no_byte_can_move_between_the_signed_parts():
    """The body, content type and encoding are signed as separate parts: a
    message signed with encoding ``"utf-8\\0x"`` and body ``"y"`` does not
    verify as encoding ``"utf-8"`` and body ``"x\\0y"``."""
    secret = SECRET.encode()
    header = signing.sign(secret, b'y', 'application/json', 'utf-8\0x')
    signing.verify((secret,), header, b'y', 'application/json', 'utf-8\0x')
    with pytest.raises(InvalidMessage):
        signing.verify((secret,), header, b'x\0y', 'application/json',
                       'utf-8')
    with pytest.raises(InvalidMessage):
        signing.verify((secret,), header, b'y', 'application/json\0utf-8',
                       'x')
