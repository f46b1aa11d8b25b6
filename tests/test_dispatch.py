"""The runtime's parts alone, with no broker, thread or job store: the
dispatcher (route table, store-owner rule, retries, dead letters) on fake
parts and an outbox on a recording channel; the dead-letter log; the ack
policy's batching."""
import types

import kombu
import pytest
from sqlalchemy.exc import OperationalError

from pyramid_scheduler import broker, codec, wire
from pyramid_scheduler.errors import InvalidJob
from pyramid_scheduler.events import Listeners
from pyramid_scheduler.runtime import acks as acks_module, dispatch
from pyramid_scheduler.runtime.acks import ACK_BATCH, ACK_DELAY, AckPolicy
from pyramid_scheduler.runtime.crashes import NoJournal
from pyramid_scheduler.runtime.dispatch import DeadLetterLog, Dispatcher
from pyramid_scheduler.runtime.records import Records
from pyramid_scheduler.runtime.jobrunner import JobRunner, Stats
from pyramid_scheduler.runtime.outbox import Outbox
from pyramid_scheduler.runtime.state import RunState
from pyramid_scheduler.runtime.timelimits import TimeLimits
from pyramid_scheduler.runtime.workers import InFlight
from pyramid_scheduler.settings import parse_settings


class RecordingChannel:
    """A message's channel and the outbox's: records what is done."""

    no_ack_consumers = None

    def __init__(self):
        self.acked, self.rejected, self.published = [], [], []
        self.connection = types.SimpleNamespace(
            client=types.SimpleNamespace(Producer=self._producer))

    def _producer(self, channel=None, **kwargs):
        return types.SimpleNamespace(publish=self._publish)

    def _publish(self, body, **kwargs):
        self.published.append((body, kwargs))

    def basic_ack(self, delivery_tag, multiple=False):
        self.acked.append(delivery_tag)

    def basic_reject(self, delivery_tag, requeue=False):
        self.rejected.append((delivery_tag, requeue))


class FakeDeferred:
    """DeferredJobs as the dispatcher sees it; ``store`` may fail."""

    def __init__(self, failure=None):
        self.failure = failure
        self.stored = []

    def prepare(self, queue, spec):
        return dispatch_prepared(queue, spec)

    def store(self, job):
        if self.failure is not None:
            raise self.failure
        self.stored.append(job.spec['id'])


def dispatch_prepared(queue, spec):
    return types.SimpleNamespace(queue=queue, spec=spec)


@pytest.fixture
def settings(tmp_path):
    return parse_settings({'scheduler.allowed_modules': 'tests.jobs'},
                          here=str(tmp_path))


def make_dispatcher(settings, channel, deferred=None, commands=None):
    stats = Stats()
    records = Records(settings)
    return Dispatcher(
        settings, ('jobs',), state=RunState(), acks=AckPolicy(1),
        pool=None, inflight=InFlight(),
        runner=JobRunner(settings, None, Listeners(), stats, records,
                         TimeLimits(settings, records, NoJournal())),
        deferred=deferred, outbox=Outbox(settings, channel),
        dead_letters=DeadLetterLog(), commands=commands)


def message(settings, channel, body, routing_key=None, tag=1):
    payload, content_type, encoding, headers = codec.encode(settings, body)
    return kombu.Message(
        body=payload, delivery_tag=tag, content_type=content_type,
        content_encoding=encoding, headers=headers, channel=channel,
        delivery_info={'routing_key': routing_key
                       or broker.queue_name(settings, 'jobs')})


def date_job(job_id='later'):
    return wire.job_created('jobs', {
        'id': job_id, 'kind': 'date', 'func': 'tests.jobs:noop', 'args': [],
        'kwargs': {}, 'options': {},
        'trigger': {'run_date': '2999-01-01T00:00:00+00:00'}})


def test_an_undecodable_message_is_dead_lettered_through_the_outbox(
        settings):
    channel = RecordingChannel()
    dispatcher = make_dispatcher(settings, channel, FakeDeferred())
    bad = kombu.Message(body=b'{nope', delivery_tag=7,
                        content_type='application/json',
                        content_encoding='utf-8', channel=channel,
                        delivery_info={'routing_key': 'x.jobs'})
    dispatcher.handle(bad)
    assert channel.acked == [7]
    [(body, options)] = channel.published
    assert body == b'{nope'
    assert options['routing_key'] == broker.dead_letter_queue(
        settings, 'jobs').name
    assert 'body does not decode' in \
        options['headers']['x-pscheduler-reason']
    assert [d['queue'] for d in dispatcher.dead_letters.recent()] == [
        'x.jobs']
    assert dispatcher.stats.snapshot()['dead_lettered'] == 1


def test_a_runtime_without_the_store_passes_deferred_jobs_on(settings):
    channel = RecordingChannel()
    dispatcher = make_dispatcher(settings, channel, deferred=None)
    dispatcher.handle(message(settings, channel, date_job()))
    assert channel.acked == [1]
    [(_, options)] = channel.published
    assert options['routing_key'] == broker.store_queue_name(settings,
                                                             'jobs')


def test_the_store_owner_stores_a_deferred_job(settings):
    channel = RecordingChannel()
    deferred = FakeDeferred()
    dispatcher = make_dispatcher(settings, channel, deferred)
    dispatcher.handle(message(settings, channel, date_job()))
    assert deferred.stored == ['later'] and channel.acked == [1]
    assert not channel.published


def test_a_transient_failure_is_retried_and_a_bug_dead_lettered(
        settings, monkeypatch):
    monkeypatch.setattr(dispatch.time, 'sleep', lambda seconds: None)
    channel = RecordingChannel()
    deferred = FakeDeferred(OperationalError('INSERT', {}, Exception('down')))
    dispatcher = make_dispatcher(settings, channel, deferred)
    body = date_job()   # redelivered: the same body each time
    for tag in range(1, 6):
        dispatcher.handle(message(settings, channel, body, tag=tag))
    assert channel.rejected == [(tag, True) for tag in range(1, 6)]
    assert not channel.acked
    deferred.failure = ValueError('a bug')
    other = date_job('other')
    for tag in range(6, 9):
        dispatcher.handle(message(settings, channel, other, tag=tag))
    # A bug is tried MAX_HANDLING_FAILURES times in a row, then
    # dead-lettered.
    assert channel.rejected[5:] == [(6, True), (7, True)]
    assert channel.acked == [8]
    assert 'handling failed' in dispatcher.dead_letters.recent()[-1]['reason']


def test_a_stopping_dispatcher_hands_messages_back(settings):
    channel = RecordingChannel()
    dispatcher = make_dispatcher(settings, channel, FakeDeferred())
    dispatcher.state.stop_requested.set()
    dispatcher.handle(message(settings, channel, date_job()))
    assert channel.rejected == [(1, True)] and not channel.acked


def test_commands_are_answered_through_the_dispatchers_outbox(settings):
    channel = RecordingChannel()
    seen = []
    commands = types.SimpleNamespace(
        handle=lambda body, outbox: seen.append((body['command'], outbox)))
    dispatcher = make_dispatcher(settings, channel, FakeDeferred(), commands)
    other = Outbox(settings, RecordingChannel())
    dispatcher.with_outbox(other).handle(
        message(settings, channel, wire.command('ping', 'r1')))
    assert seen == [('ping', other)] and channel.acked == [1]


def test_an_invalid_job_is_dead_lettered_at_once(settings):
    channel = RecordingChannel()

    class Refusing(FakeDeferred):
        def prepare(self, queue, spec):
            raise InvalidJob('no such trigger')
    dispatcher = make_dispatcher(settings, channel, Refusing())
    dispatcher.handle(message(settings, channel, date_job()))
    assert channel.acked == [1] and not channel.rejected
    assert dispatcher.dead_letters.recent()[-1]['reason'] == 'no such trigger'


def test_the_dead_letter_log_keeps_the_last_ones_per_queue():
    log = DeadLetterLog(size=3)
    for n in range(5):
        log.add('a.jobs' if n % 2 else 'a.other', f'reason {n}')
    assert [d['reason'] for d in log.recent()] == [
        'reason 2', 'reason 3', 'reason 4']
    assert [d['reason'] for d in log.recent('jobs')] == ['reason 3']
    log.forget('other')
    assert [d['reason'] for d in log.recent()] == ['reason 3']


def test_the_ack_policy_batches_while_messages_stream_in(monkeypatch):
    clock = types.SimpleNamespace(monotonic=lambda: 1000.0)   # no time passes
    monkeypatch.setattr(acks_module, 'time', clock)
    policy = AckPolicy(worker_count=100)
    settled = []
    policy.acks.settle = lambda: settled.append(policy.acks.pending())
    policy.turn()         # nothing delivered: settles at once
    assert settled == [0]
    policy.delivered(types.SimpleNamespace())
    for _ in range(ACK_BATCH - 1):
        policy.acks.finished(object())
    policy.turn()         # delivering, a small batch, just settled: waits
    assert len(settled) == 1
    policy.acks.finished(object())
    policy.delivered(types.SimpleNamespace())
    policy.turn()         # a full batch
    assert settled[-1] == ACK_BATCH
    policy.delivered(types.SimpleNamespace())
    clock.monotonic = lambda: 1000.0 + ACK_DELAY
    policy.turn()         # delivering, but the batch waited long enough
    assert len(settled) == 3
