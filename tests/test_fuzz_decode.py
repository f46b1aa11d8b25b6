"""Property-based: whatever arrives from the broker, the consumer goes on.

Hypothesis throws arbitrary bodies, headers (signature and compression
headers included), content types and encodings at a started runtime's
message handling, the way kombu hands them over (``Consumer._receive_callback``
calling the runtime's ``Dispatcher.handle``, or ``handle_decode_error`` when
kombu itself cannot read the message). Some are well-formed envelopes with
nonsense inside, some correctly signed. For each: no exception escapes, the
message is settled (acknowledged: dead-lettered or handled, never handed
back to fail again), nothing outside ``scheduler.allowed_modules`` runs, and
the runtime still serves: a real job sent through the broker afterwards runs.

The fuzzed messages never touch the real broker: they carry a fake channel
that records acks, and go to a dispatcher of the runtime whose outbox (which
republishes to the dead-letter queue and replies) publishes on the same fake.
"""
import datetime
import json
import os
import pickle
import threading
import types
import uuid

import kombu
import pytest
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st

from pyramid_scheduler import broker, codec, signing, wire
from pyramid_scheduler.errors import InvalidMessage
from pyramid_scheduler.runtime.outbox import Outbox
from pyramid_scheduler.scheduler import Scheduler
from pyramid_scheduler.settings import parse_settings
from tests import jobs
from tests.conftest import TIMEOUT, poll

# Not in the fast lane (pytest -m "not slow"): hypothesis against started
# runtimes.
pytestmark = pytest.mark.slow

SECRET = 'fuzz-secret-0123456789abcdef'
CANARY = {}  # 'path': where canary() would write; set by the fixture


def canary(*args, **kwargs):
    """Outside scheduler.allowed_modules (tests.jobs): must never run."""
    jobs.record(CANARY['path'], 'CANARY RAN', repr(args)[:200])


class FakeChannel:
    """What a message needs of its channel; records what is done to it."""

    no_ack_consumers = None

    def __init__(self):
        self._lock = threading.Lock()
        self.acked = set()
        self.rejected = []
        self.published = []
        self.connection = types.SimpleNamespace(
            client=types.SimpleNamespace(Producer=self._producer))

    def _producer(self, channel=None, **kwargs):
        return types.SimpleNamespace(publish=self._publish)

    def _publish(self, body, **kwargs):
        with self._lock:
            self.published.append((body, kwargs))

    def basic_ack(self, delivery_tag, multiple=False):
        with self._lock:
            self.acked.add(delivery_tag)

    def basic_reject(self, delivery_tag, requeue=False):
        with self._lock:
            self.rejected.append((delivery_tag, requeue))

    def settled(self, tag):
        with self._lock:
            return tag in self.acked or any(t == tag for t, _ in self.rejected)


def kombu_consumer(runtime, channel):
    """What kombu calls for each message, wired to a dispatcher of the
    runtime that sends what it sends on ``channel``."""
    dispatcher = runtime.dispatcher.with_outbox(
        Outbox(runtime.settings, channel))
    return kombu.Consumer(channel, queues=[], auto_declare=False,
                          on_message=dispatcher.handle,
                          on_decode_error=dispatcher.handle_decode_error,
                          accept=None)


# --- strategies --------------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers()
                | st.floats(allow_nan=False) | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)

# Function references: allowed and harmless, forbidden (the canary, or a
# walk out of tests.jobs through its imports), missing, malformed, random.
funcs = st.sampled_from([
    'tests.jobs:noop', 'tests.jobs:fail', 'tests.jobs:no_such_function',
    'tests.test_fuzz_decode:canary', 'tests.jobs:os.getcwd',
    'tests.jobs:record.__call__', 'json:dumps', 'no.such.module:f',
    'tests.jobs_evil:noop', ':', 'tests.jobs:', ':noop',
]) | st.text(max_size=30)

triggers = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={
        'run_date': st.one_of(st.text(max_size=30), st.integers(),
                              st.just('2999-01-01T00:00:00+00:00')),
        'seconds': st.one_of(st.integers(-5, 10**12), st.floats(), st.text()),
        'crontab': st.text(max_size=20),
        'minute': json_values, 'timezone': st.text(max_size=15),
        'start_date': json_values, 'end_date': json_values,
    }))

job_specs = st.fixed_dictionaries({
    'id': st.one_of(st.text(max_size=40), st.integers(), st.none(),
                    st.lists(st.integers(), max_size=2)),
    'kind': st.sampled_from(['async', 'date', 'interval', 'cron', 'weekly'])
    | json_values,
    'func': funcs | json_values,
    'args': st.lists(json_values, max_size=3) | json_values,
    'kwargs': st.dictionaries(st.text(max_size=8), json_values, max_size=3)
    | json_values,
    'trigger': triggers,
    'options': st.dictionaries(
        st.sampled_from(['name', 'misfire_grace_time', 'coalesce',
                         'max_instances', 'jitter', 'unknown']) | st.text(
            max_size=8), json_values, max_size=3) | json_values,
})

def _run_date(offset):
    moment = datetime.datetime.now(datetime.timezone.utc) \
        + datetime.timedelta(seconds=offset)
    return moment.isoformat()


EDGE_TRIGGERS = [
    {'seconds': 10**12}, {'weeks': 10**7}, {'seconds': 0}, {'seconds': -1},
    {'run_date': '9999-12-31T23:59:59+00:00'},
    {'run_date': '0001-01-01T00:00:00+00:00'}, {'run_date': 'yesterday'},
    {'minute': '*/5'}, {'crontab': '0 3 * * *'}, {'crontab': 'not cron'},
    {'hour': 25}, {'year': 1900}, {'timezone': 'Mars/Olympus'}, {},
]
EDGE_OPTIONS = [
    {}, {'misfire_grace_time': 0.5}, {'misfire_grace_time': -1},
    {'max_instances': 1.5}, {'max_instances': 0}, {'coalesce': 'yes'},
    {'name': ''}, {'name': 5}, {'jitter': 'x'}, {'executor': 'other'},
    {'jobstore': '_internal'}, {'func': 'os:system'}, {'args': 'x'},
]

# Jobs that are nearly right: most of these get stored or run.
plausible_specs = st.fixed_dictionaries({
    'id': st.uuids().map(lambda u: u.hex) | st.text(max_size=200),
    'kind': st.sampled_from(['async', 'date', 'interval', 'cron']),
    'func': st.sampled_from(['tests.jobs:noop', 'tests.jobs:fail',
                             'tests.test_fuzz_decode:canary',
                             'tests.jobs:os.getcwd']),
    'args': st.just([]) | st.lists(json_scalars, max_size=2),
    'kwargs': st.just({}) | st.dictionaries(st.text(max_size=5), json_scalars,
                                            max_size=2),
    'trigger': st.one_of(
        st.builds(lambda o: {'run_date': _run_date(o)},
                  st.floats(-7200, 7200)),
        st.builds(lambda n: {'seconds': n}, st.integers(-2, 10**13)),
        st.sampled_from(EDGE_TRIGGERS),
        triggers),
    'options': st.sampled_from(EDGE_OPTIONS) | st.dictionaries(
        st.sampled_from(['name', 'misfire_grace_time', 'coalesce',
                         'max_instances', 'jitter', 'end_date']),
        json_scalars, max_size=2),
})

plausible_envelopes = st.builds(wire.job_created, st.just('jobs'),
                                plausible_specs)

envelopes = st.one_of(
    plausible_envelopes,
    st.builds(lambda queue, spec: wire.job_created(queue, spec),
              st.sampled_from(['jobs', 'other']) | json_values, job_specs),
    st.builds(lambda queue, job_id: wire.job_canceled(queue, job_id),
              st.sampled_from(['jobs']) | json_values, json_values),
    st.builds(lambda name, args, reply_to, expires: dict(
        wire.command(name, uuid.uuid4().hex), args=args, reply_to=reply_to,
        expires_at=expires),
        st.sampled_from(['ping', 'status', 'jobs', 'unknown-command'])
        | json_values, json_values, st.none() | st.text(max_size=10),
        json_values),
    st.builds(lambda body, drop: {k: v for k, v in body.items()
                                  if k != drop},
              st.builds(wire.job_created, st.just('jobs'), job_specs),
              st.sampled_from(['protocol', 'version', 'type', 'job',
                               'queue'])),
    st.builds(lambda body, version, type_: dict(body, version=version,
                                                type=type_),
              st.builds(wire.job_created, st.just('jobs'), job_specs),
              json_values, json_values),
)


def _json_bytes(value):
    return json.dumps(value).encode()


bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=100).map(str.encode),
    json_values.map(_json_bytes),
    envelopes.map(_json_bytes),
    st.just(pickle.dumps({'protocol': 'pyramid_scheduler'})),
    st.builds(lambda b: b.decode('latin-1'), st.binary(max_size=50)),  # str
    st.none(),
)

content_types = st.sampled_from([
    'application/json', 'application/x-python-serialize', 'application/data',
    'application/x-yaml', 'application/x-msgpack', 'text/plain', '', None,
]) | st.text(max_size=30)

content_encodings = st.sampled_from([
    'utf-8', 'binary', 'latin-1', 'utf-16', 'ascii', '', None, 'rot13',
    'no-such-codec',
]) | st.text(max_size=15)

signature_headers = st.one_of(
    st.text(max_size=80),
    st.sampled_from(['v1', 'v1::', 'v1:nan:' + '0' * 64,
                     'v1:1e999:' + '0' * 64, 'v1:1:é', 'v2:1:' + 'a' * 64,
                     'v1:1:' + 'G' * 64]),
    st.builds(lambda ts, digest: f'v1:{ts}:{digest}',
              st.floats(allow_nan=True) | st.integers(),
              st.text(alphabet='0123456789abcdef', min_size=64, max_size=64)),
    json_values,
)

headers = st.fixed_dictionaries({}, optional={
    signing.HEADER: signature_headers,
    'compression': st.sampled_from(['application/x-gzip', 'zlib', 'bz2',
                                    'application/x-lzma', 'no-such'])
    | st.text(max_size=10),
    'x-other': json_values,
}) | st.dictionaries(st.text(max_size=20), json_values, max_size=4)

# Correctly signed (with the consumer's secret or a previous one), a
# message gets past the signature and reaches decoding and handling.
signs = st.sampled_from(['current', None, 'previous'])
routing_keys = st.sampled_from(['jobs', 'admin', 'unknown'])

messages = st.one_of(
    # Anything at all.
    st.fixed_dictionaries({
        'body': bodies, 'content_type': content_types,
        'content_encoding': content_encodings, 'headers': headers,
        'sign': signs, 'routing_key': routing_keys,
    }),
    # Well-formed JSON envelopes with nonsense inside: these reach the
    # handlers (job store, worker pool, admin commands).
    st.fixed_dictionaries({
        'body': st.one_of(plausible_envelopes, envelopes).map(_json_bytes),
        'content_type': st.just('application/json'),
        'content_encoding': st.just('utf-8'),
        'headers': st.just({}), 'sign': signs, 'routing_key': routing_keys,
    }),
)


# --- the runtime under fuzz --------------------------------------------------

def _conf(tmp_path, **extra):
    conf = {
        'scheduler.database': str(tmp_path / 'scheduler.sqlite'),
        'scheduler.id': 'fuzz' + uuid.uuid4().hex[:10],
        'scheduler.allowed_modules': 'tests.jobs',
        'scheduler.executor.size': '2',
    }
    conf.update(extra)
    return {k: v for k, v in conf.items() if v is not None}


@pytest.fixture(params=['secret', 'no-secret'])
def served(request, tmp_path):
    """A started scheduler; with a secret (and a previous one), or without."""
    conf = _conf(tmp_path)
    if request.param == 'secret':
        conf['scheduler.broker.secret'] = SECRET
        conf['scheduler.broker.secret.previous'] = 'old-' + SECRET
    settings = parse_settings(conf)
    CANARY['path'] = str(tmp_path / 'canary')
    scheduler = Scheduler(settings)
    scheduler.start()
    assert scheduler.runtime.wait_ready(TIMEOUT)
    yield scheduler
    scheduler.shutdown(timeout=5)


def _kombu_message(example, settings, channel, tag):
    body = example['body']
    headers = dict(example['headers'])
    if example['sign'] and settings.secrets:
        secret = settings.secrets[0 if example['sign'] == 'current' else -1]
        headers[signing.HEADER] = signing.sign(
            secret, body, example['content_type'],
            example['content_encoding'])
    names = {'jobs': broker.queue_name(settings, 'jobs'),
             'admin': broker.admin_queue_name(settings, 'jobs'),
             'unknown': 'somewhere.else'}
    return kombu.Message(
        body=body, delivery_tag=tag, content_type=example['content_type'],
        content_encoding=example['content_encoding'], headers=headers,
        delivery_info={'routing_key': names[example['routing_key']],
                       'consumer_tag': 'fuzz'},
        channel=channel)


def test_arbitrary_messages_never_escape_and_the_runtime_keeps_serving(
        served, tmp_path):
    runtime = served.runtime
    settings = served.settings
    channel = FakeChannel()
    consumer = kombu_consumer(runtime, channel)
    tags = iter(range(1, 10**9))
    seen = {'handled': 0}

    @hsettings(max_examples=200, deadline=None, derandomize=True,
               database=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture,
                                      HealthCheck.too_slow,
                                      HealthCheck.data_too_large])
    @given(example=messages)
    def check(example):
        tag = next(tags)
        message = _kombu_message(example, settings, channel, tag)
        dead_before = runtime.stats.snapshot()['dead_lettered']
        consumer._receive_callback(message)  # must not raise
        # Settled: at once (dead-lettered, stored, cancel, command), or once
        # an async job is done (its ack goes through the consumer thread).
        poll(lambda: channel.settled(tag), timeout=TIMEOUT,
             message=lambda: f'message {tag} neither acked nor rejected')
        assert tag in channel.acked, (
            f'message handed back to the broker (it would fail again '
            f'forever): {channel.rejected[-3:]}')
        if runtime.stats.snapshot()['dead_lettered'] > dead_before:
            reason = runtime.dead_letters[-1]['reason']
            assert isinstance(reason, str) and reason
        else:
            seen['handled'] += 1
        assert not os.path.exists(CANARY['path'])
        assert runtime.running

    check()
    assert not os.path.exists(CANARY['path'])
    # Not only refusals: some of the messages were stored, run or answered.
    assert seen['handled'] >= 5, seen

    # The consumer thread and the whole path through the broker still work.
    out = str(tmp_path / 'real')
    served.add_async_job('tests.jobs:record', args=[out, 'after the fuzz'])
    poll(lambda: jobs.read_records(out),
         message='a real job after the fuzz did not run')
    assert jobs.read_records(out)[0]['values'] == ['after the fuzz']
    replies, missing = served.send_message('ping', wait=True)
    assert not missing and replies[0]['result']['queue'] == 'jobs'


# --- decoding alone: only InvalidMessage, or a valid body --------------------

@pytest.fixture(scope='module', params=['secret', 'no-secret', 'pickle'])
def decoder_settings(request, tmp_path_factory):
    conf = _conf(tmp_path_factory.mktemp('decode'))
    if request.param != 'no-secret':
        conf['scheduler.broker.secret'] = SECRET
    if request.param == 'pickle':
        conf['scheduler.broker.serializer'] = 'pickle'
    return parse_settings(conf)  # codec.decode() needs no broker


@hsettings(max_examples=200, deadline=None, derandomize=True, database=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture,
                                  HealthCheck.too_slow,
                                  HealthCheck.data_too_large])
@given(example=messages)
def test_decode_gives_a_valid_body_or_invalid_message(decoder_settings,
                                                      example):
    settings = decoder_settings
    message = _kombu_message(example, settings, FakeChannel(), 1)
    try:
        body = codec.decode(settings, message)
    except InvalidMessage as exc:
        assert str(exc)
    else:
        assert wire.validate(body) is body
        assert message.content_type == {
            'json': 'application/json',
            'pickle': 'application/x-python-serialize',
        }[settings.serializer]
        if settings.secrets:
            assert example['sign'], 'a signature nobody made was accepted'


@hsettings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(body=st.binary(max_size=200), content_type=st.text(max_size=20),
       encoding=st.text(max_size=10), position=st.integers(min_value=0),
       flip=st.integers(min_value=1, max_value=255))
def test_any_change_to_a_signed_message_breaks_its_signature(
        body, content_type, encoding, position, flip):
    secret = SECRET.encode()
    header = signing.sign(secret, body, content_type, encoding)
    signing.verify((secret,), header, body, content_type, encoding,
                   max_age=60)
    if body:
        index = position % len(body)
        altered = body[:index] + bytes([body[index] ^ flip]) + body[index + 1:]
        with pytest.raises(InvalidMessage):
            signing.verify((secret,), header, altered, content_type, encoding)
    for other in ((body + b'x', content_type, encoding),
                  (body, content_type + 'x', encoding),
                  (body, content_type, encoding + 'x')):
        with pytest.raises(InvalidMessage):
            signing.verify((secret,), header, *other)
    scheme, timestamp, digest = header.split(':')
    moved = f'{scheme}:{float(timestamp) + 1:.3f}:{digest}'
    with pytest.raises(InvalidMessage):
        signing.verify((secret,), moved, body, content_type, encoding)
    with pytest.raises(InvalidMessage):
        signing.verify((b'another-secret-0123456789',), header, body,
                       content_type, encoding)


def test_the_fuzz_strategies_reach_the_handlers(tmp_path):
    """Guard against a fuzz that only ever hits the first check: enough
    generated messages decode to a valid envelope on an unsigned consumer."""
    settings = parse_settings(_conf(tmp_path))
    valid = 0

    @hsettings(max_examples=200, deadline=None, derandomize=True,
               database=None,
               suppress_health_check=[HealthCheck.too_slow,
                                      HealthCheck.data_too_large])
    @given(example=messages)
    def count(example):
        nonlocal valid
        try:
            codec.decode(settings, _kombu_message(example, settings,
                                                  FakeChannel(), 1))
            valid += 1
        except InvalidMessage:
            pass
    count()
    assert valid >= 10, valid


# --- what the fuzz found: pinned, so they stay found -------------------------

def _spec(**fields):
    spec = {'id': uuid.uuid4().hex, 'kind': 'async', 'func': 'tests.jobs:noop',
            'args': [], 'kwargs': {}, 'trigger': {}, 'options': {}}
    spec.update(fields)
    return spec


FOUND = {
    # Each was handed back to the broker (and failed again, forever, one
    # second of the consumer's time per try) before it was dead-lettered.
    'cancel-id-not-a-string': (
        wire.job_canceled('jobs', []), 'job id to cancel must be'),
    'interval-past-year-9999': (
        wire.job_created('jobs', _spec(kind='interval',
                                       trigger={'seconds': 10**12})),
        'date value out of range'),
    'float-misfire-grace-time': (
        wire.job_created('jobs', _spec(
            kind='date', trigger={'run_date': '2999-01-01T00:00:00+00:00'},
            options={'misfire_grace_time': 0.5})),
        'misfire_grace_time must be'),
    'job-id-not-a-string': (
        wire.job_created('jobs', _spec(
            id=17, kind='date',
            trigger={'run_date': '2999-01-01T00:00:00+00:00'})),
        'job id must be a string'),
    'job-id-too-long-for-the-store': (
        wire.job_created('jobs', _spec(
            id='x' * 300, kind='date',
            trigger={'run_date': '2999-01-01T00:00:00+00:00'})),
        'job id must be a string'),
    'walks-out-of-allowed-module': (
        wire.job_created('jobs', _spec(func='tests.jobs:os.getcwd')),
        'it is defined in'),
}


@pytest.mark.parametrize('case', list(FOUND))
def test_messages_the_fuzz_found_are_dead_lettered_not_retried(served, case):
    body, reason = FOUND[case]
    runtime = served.runtime
    channel = FakeChannel()
    consumer = kombu_consumer(runtime, channel)
    example = {'body': _json_bytes(body), 'content_type': 'application/json',
               'content_encoding': 'utf-8', 'headers': {}, 'sign': 'current',
               'routing_key': 'jobs'}
    message = _kombu_message(example, served.settings, channel, 1)
    consumer._receive_callback(message)
    assert channel.acked == {1} and not channel.rejected
    assert reason in runtime.dead_letters[-1]['reason']
    assert runtime.pending_count('jobs') == 0


# kombu's typed values, well-formed or not, among any JSON.
_typed_values = st.fixed_dictionaries({
    '__type__': st.sampled_from(['datetime', 'bytes', 'base64', 'decimal',
                                 'uuid', 'nope', 1]),
    '__value__': st.one_of(st.text(max_size=8), st.just('2020-01-02T03:04'),
                           st.just('1.5'), st.integers())})
_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8),
              _typed_values),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(
        st.sampled_from(['__type__', '__value__', 'body', 'x']), inner,
        max_size=3)), max_leaves=12)


@hsettings(max_examples=300, deadline=None)
@given(st.one_of(_json_values.map(json.dumps), st.text(max_size=20)))
def test_the_redis_envelope_decoder_loads_as_kombu_does(text):
    """transports/envelopes.envelope_decoder, the Redis channel's faster
    ``loads``: the same value, or the same kind of error."""
    from kombu.utils.json import loads
    from pyramid_scheduler.transports.envelopes import envelope_decoder

    def outcome(load):
        try:
            return 'value', load(text)
        except Exception as exc:
            return 'error', type(exc)
    assert outcome(envelope_decoder()) == outcome(loads)
