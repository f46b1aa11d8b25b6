"""Shared fixtures: combined-mode web apps on a SQLite file in tmp_path.

Every app made here is shut down at the end of its test, so no runtime
thread outlives the test that started it. Tests wait on conditions with
:func:`poll`, never on a bare sleep.
"""
import os
import sqlite3
import threading
import time

import pytest

from pyramid_scheduler import CONSUME_ENV, broker
from tests import jobs

# The daemon fixtures (``daemons``, ``broker_for``) for every test module,
# without importing them by name into each.
pytest_plugins = ['tests.daemon_helpers']

# Generous: a loaded CI machine may be slow, a passing test never waits this.
TIMEOUT = 10


def poll(condition, timeout=TIMEOUT, interval=0.02, message=None):
    """Call ``condition`` until it returns something truthy; return that.

    Fails the test after ``timeout`` seconds, with ``message`` (a string, or
    a callable giving one, for a report of the state at that moment).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            if callable(message):
                message = message()
            raise AssertionError(message or f'timed out after {timeout}s '
                                 f'waiting for {condition!r}')
        time.sleep(interval)


def kill_processes(*processes):
    """SIGKILL and reap the subprocesses still running (None is skipped)."""
    for process in processes:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


def sleep_until(moment):
    """Wait for the clock (``time.time()``) to pass ``moment``."""
    while time.time() < moment:
        time.sleep(min(max(moment - time.time(), 0.001), 0.05))


def queued(settings, queue='jobs'):
    """Messages waiting on ``queue``: sent, and not taken by a consumer.

    Asked through kombu, so it holds for any broker.
    """
    connection = broker.connect(settings)
    try:
        bound = broker.job_queue(settings, queue)(connection.default_channel)
        return bound.queue_declare().message_count
    finally:
        connection.release()


def peek(settings, queue='jobs', limit=100, kombu_queue=None,
         accept=('application/json', 'application/x-python-serialize')):
    """The messages waiting on ``queue``, left there for a consumer.

    Returns kombu Messages (content_type, headers, decompressed body...).
    ``kombu_queue`` reads another queue than the job queue (dead letters).
    """
    kombu_queue = kombu_queue or broker.job_queue(settings, queue)
    connection = broker.connect(settings)
    try:
        bound = kombu_queue(connection.default_channel)
        bound.declare()
        messages = []
        while len(messages) < limit:
            message = bound.get(no_ack=False, accept=list(accept))
            if message is None:
                break
            messages.append(message)
        for message in messages:
            message.reject(requeue=True)
        return messages
    finally:
        connection.release()


def stored_message_rows(database_path):
    """Rows in the embedded broker's message table(s), of any queue."""
    if not os.path.exists(database_path):
        return 0
    connection = sqlite3.connect(database_path)
    try:
        tables = [name for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name IN ('kombu_message', 'pscheduler_message')")]
        return sum(connection.execute(f'SELECT COUNT(*) FROM {table}')
                   .fetchone()[0] for table in tables)
    finally:
        connection.close()


class EventLog:
    """A listener that keeps every event, with helpers to wait on them."""

    def __init__(self):
        self._lock = threading.Lock()
        self.events = []

    def __call__(self, event):
        with self._lock:
            self.events.append(event)

    def types(self, job_id):
        with self._lock:
            return [e['type'] for e in self.events
                    if e.get('job') and e['job']['id'] == job_id]

    def of(self, job_id, type_):
        with self._lock:
            return [e for e in self.events if e['type'] == type_
                    and e.get('job') and e['job']['id'] == job_id]

    def wait_for(self, job_id, type_, count=1, timeout=TIMEOUT):
        return poll(lambda: len(self.of(job_id, type_)) >= count
                    and self.of(job_id, type_), timeout=timeout,
                    message=lambda: f'no {count} {type_} event(s) for job '
                    f'{job_id}; it had {self.types(job_id)}')


class Harness:
    """One combined-mode web app (WebTest) and what a test observes of it."""

    def __init__(self, app, records):
        from webtest import TestApp
        self.app = app
        self.registry = app.registry
        self.scheduler = app.registry.scheduler
        self.settings = self.scheduler.settings
        self.web = TestApp(app)
        self.records_path = records
        self.events = EventLog()
        self.scheduler.add_listener(self.events)

    def start(self):
        """Serve the first request, which starts the combined-mode runtime
        (or start one as a script would, when not in combined mode)."""
        self.web.get('/')
        if not self.settings.combined:
            self.scheduler.start()
        return poll(lambda: self.scheduler.runtime is not None
                    and self.scheduler.runtime.wait_ready(0.1)
                    and self.scheduler.runtime, message='runtime not ready')

    @property
    def runtime(self):
        return self.scheduler.runtime

    def schedule(self, kind, *args, **params):
        """POST /schedule: add a ``record(records, *args)`` job; its id."""
        params['kind'] = kind
        params['args'] = [self.records_path, *args]
        return self.web.post_json('/schedule', params).json['id']

    def records(self):
        return jobs.read_records(self.records_path)

    def values(self):
        return [r['values'] for r in self.records()]

    def wait_records(self, count, timeout=TIMEOUT, where=None):
        """Wait for ``count`` records (matching ``where`` if given)."""
        def matching():
            return [r for r in self.records()
                    if where is None or where(r)]
        return poll(lambda: len(matching()) >= count and matching(),
                    timeout=timeout,
                    message=lambda: f'expected {count} job runs, have '
                    f'{matching()}')

    def queued(self, queue='jobs'):
        return queued(self.settings, queue)

    def peek(self, queue='jobs'):
        return peek(self.settings, queue)


def base_settings(tmp_path, **settings):
    values = {
        'scheduler.combined': 'true',
        'scheduler.database': str(tmp_path / 'scheduler.sqlite'),
        # The jobs live in tests.jobs, outside the app's package (tests.apps).
        'scheduler.allowed_modules': 'tests.jobs',
        'test.name': 'webapp',
    }
    values.update(settings)
    return values


@pytest.fixture(autouse=True)
def _no_consume_override(monkeypatch):
    """The tests decide; a PYRAMID_SCHEDULER_CONSUME in the shell does not."""
    monkeypatch.delenv(CONSUME_ENV, raising=False)


@pytest.fixture
def records(tmp_path):
    return str(tmp_path / 'records.jsonl')


@pytest.fixture
def make_app(tmp_path):
    """``make_app(**settings)``: a tests.apps.webapp WSGI app, shut down after."""
    from tests.apps import webapp
    apps = []

    def make(**settings):
        app = webapp.main({}, **base_settings(tmp_path, **settings))
        apps.append(app)
        return app
    yield make
    for app in apps:
        app.registry.scheduler.shutdown(timeout=5)
    if apps:
        # shutdown() leaves no thread of ours behind.
        poll(lambda: not runtime_threads(),
             message=lambda: f'threads left after shutdown: '
             f'{runtime_threads()}')


def runtime_threads():
    """The live threads a runtime (or a standby) starts."""
    return [t.name for t in threading.enumerate()
            if t.name.startswith(('pscheduler', 'APScheduler'))]


@pytest.fixture
def make_harness(make_app, records):
    def make(**settings):
        return Harness(make_app(**settings), records)
    return make


@pytest.fixture
def harness(make_harness):
    """A combined-mode app whose runtime has started (first request served)."""
    h = make_harness()
    h.start()
    return h


@pytest.fixture
def local_timezone(monkeypatch):
    """``local_timezone('Asia/Kolkata')``: the process' local zone, for a test."""
    import tzlocal
    changed = []

    def set_zone(name):
        changed.append(name)
        monkeypatch.setenv('TZ', name)
        time.tzset()
        tzlocal.reload_localzone()
        return tzlocal.get_localzone()
    yield set_zone
    if changed:
        monkeypatch.undo()
        time.tzset()
        tzlocal.reload_localzone()
