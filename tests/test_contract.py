"""The contract with running systems and users: what must not change.

Golden tests of shared/reviews/architecture-2026-12.md, 5.3: the wire format
of every message type (captured from what the public API really publishes
on kombu's in-memory transport, compared with tests/data/wire_golden.json),
the signature header, the dead-letter headers, every name a running system
has persisted (tables, lock files, the wake directory, Redis keys, the
stored job's function), the public API and the exit-code table.

Everything is reached through public entry points (``config.include``,
``registry.scheduler``) or observed on disk, so that moving code between
modules leaves these tests alone. The few names only a function computes
(Redis keys) are imported through :func:`first_attribute`, which knows the
old and the new module paths.

A failure here means a user or a running system would notice: change the
golden value only on purpose, with a migration story in the same commit.
"""
import datetime
import hashlib
import hmac
import importlib
import inspect
import json
import os
import pickle
import re
import shutil
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import kombu
import pytest
from pyramid.config import Configurator

from pyramid_scheduler import signing
from tests import jobs
from tests.conftest import poll

GOLDEN = Path(__file__).parent / 'data' / 'wire_golden.json'
UTC = datetime.timezone.utc
FAR = datetime.datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC)
SECRET = 'golden-secret-0123456789abcdef'


def first_attribute(modules, name):
    """``name`` from the first of ``modules`` that has it (old and new
    homes of code being moved); fails naming them all otherwise."""
    for module in modules:
        try:
            found = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        if hasattr(found, name):
            return getattr(found, name)
    pytest.fail(f'{name} is in none of {modules}: add its new module here')


# --- a scheduler on kombu's in-memory transport ------------------------------

def configured_scheduler(tmp_path, **settings):
    """``registry.scheduler`` of an app including pyramid_scheduler, on
    kombu's in-memory transport under a scheduler.id of its own (the memory
    transport is one per process)."""
    values = {'scheduler.broker.url': 'memory://',
              'scheduler.database': str(tmp_path / 'pscheduler.sqlite'),
              'scheduler.id': f'golden{uuid.uuid4().hex[:8]}'}
    values.update(settings)
    config = Configurator(settings=values)
    config.include('pyramid_scheduler')
    config.commit()
    return config.registry.scheduler


@pytest.fixture
def make_scheduler(tmp_path):
    made = []

    def make(**settings):
        made.append(configured_scheduler(tmp_path, **settings))
        return made[-1]
    yield make
    for scheduler in made:
        scheduler.shutdown(timeout=5)


def kombu_queue(name):
    return kombu.Queue(name, exchange=kombu.Exchange(''), routing_key=name)


def take(name, count=None, timeout=10):
    """The raw kombu messages on the memory queue ``name`` (taken off it):
    all there are now, or wait for ``count``."""
    taken = []
    deadline = time.monotonic() + timeout
    with kombu.Connection('memory://') as connection:
        bound = kombu_queue(name)(connection.default_channel)
        while True:
            message = bound.get(no_ack=True, accept=['application/json'])
            if message is not None:
                taken.append(message)
                continue
            if count is None or len(taken) >= count:
                return taken
            assert time.monotonic() < deadline, f'no message on {name}'
            time.sleep(0.02)


def publish_raw(name, body, **properties):
    with kombu.Connection('memory://') as connection:
        producer = connection.Producer(connection.default_channel)
        producer.publish(body, routing_key=name, exchange='',
                         declare=[kombu_queue(name)], **properties)


def described(message, scheduler_id):
    """What goes over the wire, with the values that differ per run
    (times, pids, generated ids) checked and replaced by placeholders."""
    now = time.time()
    body = json.loads(message.body)
    request_id = body.get('request_id')

    def placeholder(key, value):
        if key in ('sent_at', 'created_at'):
            assert isinstance(value, float) and now - 60 < value <= now
            return '<time>'
        if key == 'expires_at':
            assert isinstance(value, float) and value > now
            return '<time>'
        if key == 'pid':
            assert value == os.getpid()
            return '<pid>'
        if key == 'request_id':
            assert re.fullmatch('[0-9a-f]{32}|golden-request', value)
            return '<request_id>'
        if key == 'unique':
            assert re.fullmatch('[0-9a-f]{32}', value)
            return '<token>'
        if isinstance(value, str):
            value = value.replace(scheduler_id, '<id>')
            if request_id:
                value = value.replace(request_id, '<request_id>')
        return normalized(value)

    def normalized(value):
        if isinstance(value, dict):
            return {k: placeholder(k, v) for k, v in value.items()}
        if isinstance(value, list):
            return [normalized(v) for v in value]
        return value

    return {
        'routing_key': message.delivery_info['routing_key'].replace(
            scheduler_id, '<id>'),
        'exchange': message.delivery_info['exchange'],
        'content_type': message.content_type,
        'content_encoding': message.content_encoding,
        'delivery_mode': message.properties.get('delivery_mode'),
        'headers': message.headers,
        'body': normalized(body),
    }


def assert_golden(case, actual):
    golden = json.loads(GOLDEN.read_text(encoding='utf-8'))
    if os.environ.get('PSCHEDULER_WRITE_GOLDEN') == '1':
        # A deliberate change of the wire format: rewrite, then review the
        # diff of tests/data/wire_golden.json.
        golden[case] = actual
        GOLDEN.write_text(json.dumps(golden, indent=2, sort_keys=True) + '\n',
                          encoding='utf-8')
    assert actual == golden[case], (
        f'the wire format of {case!r} changed; it is now:\n'
        + json.dumps(actual, indent=2, sort_keys=True))


# --- the wire format ---------------------------------------------------------

def test_job_created_messages_match_the_golden_envelopes(make_scheduler):
    scheduler = make_scheduler()
    sid = scheduler.settings.scheduler_id
    scheduler.add_async_job(jobs.record, args=['/records', 1, 'two'],
                            kwargs={'k': [1, 2.5, None]}, id='async-job')
    scheduler.add_date_job(jobs.record, FAR, args=['/records'],
                           id='date-job', misfire_grace_time=30)
    scheduler.add_interval_job(jobs.record, start_date=FAR,
                               args=['/records'], minutes=5, seconds=30,
                               id='interval-job', coalesce=True)
    scheduler.add_cron_job('tests.jobs:record', start_date=FAR,
                           args=['/records'], day_of_week='mon-fri',
                           hour=3, minute=30, id='cron-job',
                           max_instances=2)
    scheduler.add_cron_job(jobs.record, start_date=FAR, args=['/records'],
                           crontab='*/15 3 * * 1', id='crontab-job',
                           name='a named job')
    messages = take(f'{sid}.jobs', count=5)
    cases = ['job.created async', 'job.created date', 'job.created interval',
             'job.created cron', 'job.created crontab']
    for case, message in zip(cases, messages, strict=True):
        assert_golden(case, described(message, sid))


def test_job_canceled_goes_to_every_queue(make_scheduler):
    scheduler = make_scheduler(**{'scheduler.queues': 'jobs mail'})
    sid = scheduler.settings.scheduler_id
    scheduler.cancel_job('date-job')
    [jobs_queue] = take(f'{sid}.jobs', count=1)
    [mail_queue] = take(f'{sid}.mail', count=1)
    assert_golden('job.canceled', described(jobs_queue, sid))
    assert json.loads(mail_queue.body)['queue'] == 'mail'


def test_a_queue_served_by_several_processes_gets_deferred_jobs_on_store(
        make_scheduler):
    scheduler = make_scheduler(**{'scheduler.processes': '2'})
    sid = scheduler.settings.scheduler_id
    scheduler.add_async_job(jobs.record, args=['/records'])
    scheduler.add_date_job(jobs.record, FAR, args=['/records'], id='d')
    scheduler.cancel_job('d')
    assert len(take(f'{sid}.jobs', count=1)) == 1
    stored = take(f'{sid}.jobs.store', count=2)
    assert [json.loads(m.body)['type'] for m in stored] == [
        'job.created', 'job.canceled']


def test_commands_and_replies_match_the_golden_envelopes(make_scheduler):
    scheduler = make_scheduler()
    sid = scheduler.settings.scheduler_id
    scheduler.send_message('ping')
    [command] = take(f'{sid}.jobs.admin', count=1)
    assert_golden('command', described(command, sid))

    # Waiting for answers: a private reply queue <id>.reply.<request_id>.
    replies, missing = scheduler.send_message('status', wait=True,
                                              timeout=0.1)
    assert (replies, missing) == ([], ('jobs',))
    [waiting] = take(f'{sid}.jobs.admin', count=1)
    assert_golden('command waiting for a reply', described(waiting, sid))

    scheduler.start()
    assert scheduler.runtime.wait_ready(10)
    body = json.loads(command.body)
    body.update(reply_to=f'{sid}.reply.golden-request',
                request_id='golden-request', expires_at=time.time() + 600)
    publish_raw(f'{sid}.jobs.admin', json.dumps(body),
                content_type='application/json', content_encoding='utf-8')
    [reply] = take(f'{sid}.reply.golden-request', count=1)
    assert_golden('reply', described(reply, sid))


def test_a_rejected_message_is_dead_lettered_with_its_reason_and_queue(
        make_scheduler):
    scheduler = make_scheduler()
    sid = scheduler.settings.scheduler_id
    scheduler.start()
    assert scheduler.runtime.wait_ready(10)
    publish_raw(f'{sid}.jobs', b'not json', content_type='application/json',
                content_encoding='utf-8')
    [dead] = take(f'{sid}.jobs.dead', count=1)
    assert dead.body == b'not json'
    assert dead.content_type == 'application/json'
    assert dead.properties['delivery_mode'] == 2
    assert set(dead.headers) == {'x-pscheduler-reason', 'x-pscheduler-queue'}
    assert dead.headers['x-pscheduler-queue'] == f'{sid}.jobs'
    assert 'decode' in dead.headers['x-pscheduler-reason']


# --- signatures --------------------------------------------------------------

def test_the_signature_of_a_fixed_message_is_this_literal():
    signature = signing.sign(SECRET.encode(), b'{"a": 1}', 'application/json',
                             'utf-8', now=1700000000.0)
    assert signature == (
        'v1:1700000000.000:'
        'bb72ccd62c37faf39db25acd312ead14ac4cc7de6ace172d4e05ec0406f386d3')
    assert signature.split(':')[2] == independent_digest(
        SECRET.encode(), '1700000000.000', b'{"a": 1}', 'application/json',
        'utf-8')


def independent_digest(secret, timestamp, body, content_type, encoding):
    """HMAC-SHA256 over each part length-prefixed (8 bytes, big endian):
    the scheme, the timestamp, content type, content encoding, body."""
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for part in (b'v1', timestamp.encode(), content_type.encode(),
                 encoding.encode(), body):
        mac.update(len(part).to_bytes(8, 'big') + part)
    return mac.hexdigest()


def test_published_messages_carry_the_v1_signature_header(make_scheduler):
    scheduler = make_scheduler(**{'scheduler.broker.secret': SECRET})
    sid = scheduler.settings.scheduler_id
    scheduler.add_async_job(jobs.record, args=['/records'])
    [message] = take(f'{sid}.jobs', count=1)
    assert set(message.headers) == {'x-pscheduler-signature'}
    scheme, timestamp, digest = message.headers[
        'x-pscheduler-signature'].split(':')
    assert scheme == 'v1' and re.fullmatch(r'\d+\.\d{3}', timestamp)
    assert abs(float(timestamp) - time.time()) < 60
    assert digest == independent_digest(
        SECRET.encode(), timestamp, message.body, message.content_type,
        message.content_encoding)


# --- persisted names ---------------------------------------------------------

def tables(database):
    connection = sqlite3.connect(database)
    try:
        return {name for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        connection.close()


def schema_of(database, table):
    """Columns (name, type, not null, default, primary key) and indexes
    (name, unique, partial, columns) of ``table``."""
    connection = sqlite3.connect(database)
    try:
        columns = [tuple(row[1:]) for row in connection.execute(
            f'PRAGMA table_info("{table}")')]
        indexes = sorted(
            (name, unique, partial, [row[2] for row in connection.execute(
                f'PRAGMA index_info("{name}")')])
            for _, name, unique, _, partial in connection.execute(
                f'PRAGMA index_list("{table}")'))
        return columns, indexes
    finally:
        connection.close()


STORED_JOB_FUNC = 'pyramid_scheduler.execution:stored_job_marker'


@pytest.fixture
def short_tmp():
    """A directory with a short path: wake-up sockets fit beside a
    database there (pytest's tmp_path may be too long for AF_UNIX)."""
    path = Path(tempfile.mkdtemp(prefix='psc-'))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_persisted_names_of_the_embedded_default(short_tmp, make_scheduler):
    database = short_tmp / 'pscheduler.sqlite'
    scheduler = make_scheduler(**{
        'scheduler.broker.url': '', 'scheduler.id': 'acme.prod',
        'scheduler.database': str(database), 'scheduler.executor.size': '1'})
    scheduler.start()
    assert scheduler.runtime.wait_ready(10)
    scheduler.add_date_job(jobs.record, FAR, args=['/records'], id='far')

    def stored():
        connection = sqlite3.connect(database)
        try:
            return connection.execute(
                'SELECT job_state FROM acme_prod_jobs_jobs WHERE id = ?',
                ('far',)).fetchone()
        except sqlite3.OperationalError:
            return None
        finally:
            connection.close()
    job_state = pickle.loads(poll(stored)[0])
    assert job_state['func'] == STORED_JOB_FUNC
    queue, spec = job_state['args']
    assert queue == 'jobs' and spec['id'] == 'far'
    assert spec['func'] == 'tests.jobs:record'
    assert importlib.import_module('pyramid_scheduler.execution') \
        .stored_job_marker

    assert {'pscheduler_message', 'pscheduler_queue', 'acme_prod_jobs_jobs',
            'acme_prod_jobs_due'} <= tables(database)
    assert schema_of(database, 'pscheduler_queue') == (
        [('name', 'TEXT', 0, None, 1),
         ('auto_delete', 'INTEGER', 1, '0', 0),
         ('created', 'REAL', 1, None, 0)],
        [('sqlite_autoindex_pscheduler_queue_1', 1, 0, ['name'])])
    assert schema_of(database, 'pscheduler_message') == (
        [('id', 'INTEGER', 0, None, 1),
         ('queue', 'TEXT', 1, None, 0),
         ('payload', 'TEXT', 1, None, 0),
         ('created', 'REAL', 1, None, 0),
         ('deliveries', 'INTEGER', 1, '0', 0),
         ('lease_token', 'TEXT', 0, None, 0),
         ('lease_node', 'TEXT', 0, None, 0),
         ('lease_pid', 'INTEGER', 0, None, 0),
         ('lease_started', 'REAL', 0, None, 0),
         ('leased_at', 'REAL', 0, None, 0)],
        [('pscheduler_message_leased', 0, 1, ['lease_token']),
         ('pscheduler_message_ready', 0, 1, ['queue', 'id'])])
    due_columns, _ = schema_of(database, 'acme_prod_jobs_due')
    assert [c[0] for c in due_columns] == ['id', 'job_id', 'run', 'created']

    assert Path(f'{database}.lock').is_file()
    assert Path(f'{database}.jobs.lock').is_file()
    assert Path(f'{database}.wake').is_dir()


@pytest.mark.slow
def test_a_due_run_waiting_for_a_worker_is_kept_with_these_keys(
        tmp_path, make_scheduler):
    database = tmp_path / 'pscheduler.sqlite'
    scheduler = make_scheduler(**{'scheduler.broker.url': '',
                                  'scheduler.id': 'acme',
                                  'scheduler.executor.size': '1'})
    scheduler.start()
    assert scheduler.runtime.wait_ready(10)
    records = str(tmp_path / 'records.jsonl')
    due = time.time() + 1
    for n in range(2):  # one worker: the second waits, written down
        scheduler.add_date_job(jobs.sleep_then_record, due,
                               args=[records, 1, n], id=f'due-{n}')

    def kept():
        connection = sqlite3.connect(database)
        try:
            return connection.execute(
                'SELECT job_id, run FROM acme_jobs_due'
            ).fetchone()
        except sqlite3.OperationalError:
            return None
        finally:
            connection.close()
    job_id, run = poll(kept)
    assert set(pickle.loads(run)) == {
        'job_id', 'spec', 'run_times', 'last_run', 'misfire_grace_time'}
    assert pickle.loads(run)['job_id'] == job_id


def test_lock_and_wake_paths_outside_the_database_directory(
        tmp_path, make_scheduler):
    # A path too long for AF_UNIX sockets beside it: the wake directory
    # goes to the temporary directory. A job store that is not the
    # embedded database but an SQLite file: its lock beside that file,
    # where every process using it meets (issue 17: a private temporary
    # directory met no lock).
    database = tmp_path / ('d' * 90) / 'pscheduler.sqlite'
    store = tmp_path / 'store.sqlite'
    store_url = f'sqlite:///{store}'
    lock = Path(f'{store}.acme.jobs.lock')
    wake = Path(tempfile.gettempdir()) / ('pscheduler-wake-' + hashlib.sha1(
        os.fsencode(os.path.realpath(database))).hexdigest()[:16])
    try:
        scheduler = make_scheduler(**{
            'scheduler.broker.url': '', 'scheduler.database': str(database),
            'scheduler.id': 'acme', 'scheduler.jobstore.url': store_url})
        scheduler.start()
        assert scheduler.runtime.wait_ready(10)
        assert lock.is_file()
        assert wake.is_dir()
        assert 'acme_jobs_jobs' in tables(store)
    finally:
        lock.unlink(missing_ok=True)
        shutil.rmtree(wake, ignore_errors=True)


REDIS_MODULES = ('pyramid_scheduler.transports.redis.channel',
                 'pyramid_scheduler.transports.redis',
                 'pyramid_scheduler.redis_transport')


def test_redis_key_names():
    fetched_key = first_attribute(REDIS_MODULES, 'fetched_key')
    slot_options = first_attribute(REDIS_MODULES, 'slot_options')
    assert fetched_key('acme.jobs') == '_pscheduler.fetched.acme.jobs'
    assert fetched_key('acme.jobs', 3) == '_pscheduler.fetched#3.acme.jobs'
    assert slot_options(0) == {}
    options = slot_options(3)
    assert {k: options[k] for k in ('unacked_key', 'unacked_index_key',
                                    'unacked_mutex_key')} == {
        'unacked_key': 'unacked#3', 'unacked_index_key': 'unacked_index#3',
        'unacked_mutex_key': 'unacked_mutex#3'}


# --- the public API ----------------------------------------------------------

def test_public_names():
    import pyramid_scheduler
    from pyramid_scheduler import api, errors
    assert api.__all__ == ['BrokerUnavailable', 'ConfigurationError', 'Event',
                           'InvalidJob', 'InvalidMessage', 'InvalidQueue',
                           'JobNotFound', 'JobTimeout', 'Retry',
                           'SchedulerError']
    assert pyramid_scheduler.CONSUME_ENV == 'PYRAMID_SCHEDULER_CONSUME'
    assert callable(pyramid_scheduler.includeme)
    assert pyramid_scheduler.Scheduler
    assert issubclass(errors.InvalidJob, ValueError)
    assert issubclass(errors.InvalidQueue, ValueError)
    assert issubclass(errors.BrokerUnavailable, ConnectionError)
    assert issubclass(errors.AdminTimeout, TimeoutError)
    for name in api.__all__:
        if name != 'Event':
            assert issubclass(getattr(api, name), Exception)
    assert issubclass(api.InvalidJob, api.SchedulerError)
    # A job's own failure (it may be retried), not a scheduler error.
    assert not issubclass(api.JobTimeout, api.SchedulerError)
    Event = api.Event
    assert (Event.MESSAGE, Event.JOB_CREATED, Event.JOB_EXECUTED,
            Event.JOB_FAILED, Event.JOB_MISSED, Event.JOB_CANCELED,
            Event.JOB_REMOVED, Event.JOB_RETRY) == (
        'message', 'job.created', 'job.executed', 'job.failed', 'job.missed',
        'job.canceled', 'job.removed', 'job.retry')
    assert Event.ALL == (Event.MESSAGE, Event.JOB_CREATED, Event.JOB_EXECUTED,
                         Event.JOB_FAILED, Event.JOB_MISSED,
                         Event.JOB_CANCELED, Event.JOB_REMOVED,
                         Event.JOB_RETRY)
    event = Event(Event.MESSAGE, message='ping')
    assert event == {'type': 'message', 'message': 'ping'}
    assert event.message == 'ping' and event.type == 'message'


SCHEDULER_METHODS = {
    'add_async_job': '(self, func, args=None, kwargs=None, queue=None, '
                     '**options)',
    'add_date_job': '(self, func, date, args=None, kwargs=None, queue=None, '
                    '**options)',
    'add_interval_job': '(self, func, start_date=None, args=None, '
                        'kwargs=None, queue=None, weeks=0, days=0, hours=0, '
                        'minutes=0, seconds=0, **options)',
    'add_cron_job': '(self, func, start_date=None, args=None, kwargs=None, '
                    'queue=None, year=None, month=None, day=None, week=None, '
                    'day_of_week=None, hour=None, minute=None, second=None, '
                    'crontab=None, **options)',
    'cancel_job': '(self, job_id, queue=None)',
    'send_message': '(self, message, queue=None, wait=False, timeout=None)',
    'add_listener': '(self, listener, events=None, args=None, kwargs=None)',
    'remove_listener': '(self, listener)',
    'start': '(self, queues=None, standby_interval=2.0)',
    'shutdown': '(self, timeout=None)',
    'make_runtime': '(self, queues=None, slot=0)',
    'failed_jobs': '(self, queue=None, limit=100)',
    'requeue': '(self, job_id)',
    'purge_failed': '(self, queue=None)',
}
ALIASES_03 = {'addListener': 'add_listener',
              'removeListener': 'remove_listener',
              'startConsumer': 'start'}


def test_scheduler_methods_and_their_0_3_aliases(make_scheduler):
    from pyramid_scheduler import Scheduler
    for name, signature in SCHEDULER_METHODS.items():
        assert str(inspect.signature(getattr(Scheduler, name))) == signature, \
            name
    for alias, name in ALIASES_03.items():
        assert str(inspect.signature(getattr(Scheduler, alias))) == \
            SCHEDULER_METHODS[name], alias
    scheduler = make_scheduler()
    for attribute in ('settings', 'runtime', 'producer', 'listeners'):
        assert hasattr(scheduler, attribute), attribute


def test_import_paths_used_from_outside():
    from pyramid_scheduler.admin import COMMANDS, send_command
    from pyramid_scheduler.sqlite_transport import SQLiteTransport, Transport
    assert callable(send_command) and SQLiteTransport and Transport
    assert COMMANDS == ('print-jobs', 'ping', 'status', 'jobs',
                        'dead-letters', 'purge-dead-letters', 'failed',
                        'requeue', 'purge-failed', 'job',
                        'requeue-dead-letters')


# --- the daemon's exit codes -------------------------------------------------

EXIT_CODES = """\
exit codes:
    0  stopped on request (SIGTERM/SIGINT), --message answered, or
       --run sent its job
    1  unexpected error in pscheduler itself (traceback in the log)
    2  bad command line, e.g. a --queue that is not configured,
       a --message argument the command does not take, or a --run
       job refused (its function, --args, --kwargs or --id)
    3  the ini file cannot be read or a scheduler.* setting is
       invalid, found by the master or by a child (a dotted name
       that does not import, a broker or job store refusing the
       password or database)
    4  --message: a queue did not answer within the timeout, or
       --message could not be sent (broker down, disk full);
       --run: the job could not be sent (the same causes)
    5  --message: a queue answered with an error (e.g. an unknown command)
   10  the application does not include pyramid_scheduler
   11  the application is configured scheduler.combined = true
   12  a child only, never pscheduler: a job ran longer than its
       hard_time_limit; the master starts a new child at once
   20  a child failed to start scheduler.child.boot_failures
       times in a row (application import error, ...)
   21  the --pidfile names a running pscheduler or cannot be written
"""


def test_help_lists_the_exit_codes(capsys, monkeypatch):
    from pscheduler.cli import main
    monkeypatch.setenv('COLUMNS', '80')
    with pytest.raises(SystemExit) as exit_:
        main(['--help'])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.endswith(EXIT_CODES), out[out.find('exit codes:'):]
