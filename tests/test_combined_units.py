"""Combined mode's parts on their own, with no broker and no thread of a real
runtime: the standby of ``InProcessRunner`` and the ini-directory fallback.
(tests/test_combined.py runs the whole thing through WebTest.)"""
import threading
import time

import pytest
from pyramid.config import Configurator

from pyramid_scheduler import combined
from tests.conftest import poll


class FakeRuntime:
    """What InProcessRunner uses of a Runtime; its job store lock is free
    once ``free`` is set."""
    queues = ('jobs', 'mail')

    def __init__(self, free=True):
        self.free = threading.Event()
        if free:
            self.free.set()
        self.started = self.released = False
        self.stopped_with = 'not stopped'

    def acquire_stores(self, timeout=0, should_stop=lambda: False):
        deadline = time.monotonic() + timeout
        while not self.free.is_set():
            if should_stop() or time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def release_stores(self):
        self.released = True

    def start(self):
        self.started = True

    def stop(self, timeout=None):
        self.stopped_with = timeout


@pytest.fixture
def exits(monkeypatch):
    """The callables InProcessRunner registers with atexit."""
    registered = []
    monkeypatch.setattr(combined.atexit, 'register', registered.append)
    return registered


def make_runner(runtime):
    made = []

    def make_runtime(queues):
        made.append(queues)
        return runtime
    on_exit = object()
    return combined.InProcessRunner(make_runtime, on_exit), made, on_exit


def standby_threads():
    return [t for t in threading.enumerate() if t.name == 'pscheduler-standby']


def test_a_free_store_starts_the_runtime_at_once(exits):
    runtime = FakeRuntime()
    runner, made, on_exit = make_runner(runtime)
    runner.start(['jobs'])
    assert made == [['jobs']]
    assert runner.runtime is runtime and runtime.started
    assert exits == [on_exit]
    runner.start()  # running already: nothing more
    assert made == [['jobs']]
    runner.stop(timeout=3)
    assert runtime.stopped_with == 3
    assert runner.runtime is None


def test_a_held_store_makes_a_standby_that_takes_over_when_it_is_free(
        exits, caplog):
    runtime = FakeRuntime(free=False)
    runner, made, on_exit = make_runner(runtime)
    caplog.set_level('INFO', logger='pyramid_scheduler')
    runner.start(standby_interval=0.05)
    assert runner.runtime is None and not runtime.started
    assert standby_threads()
    assert 'another process runs the jobs of queue(s) jobs, mail; this one ' \
           'stands by to take over' in caplog.text
    runner.start()  # standing by already: nothing more
    assert len(made) == 1
    runtime.free.set()
    poll(lambda: runner.runtime is runtime)
    assert runtime.started and exits == [on_exit]
    poll(lambda: not standby_threads())
    runner.stop()
    assert runtime.stopped_with is None


def test_stop_during_the_standby_never_starts_and_releases_the_stores(exits):
    runtime = FakeRuntime(free=False)
    runner, _, _ = make_runner(runtime)
    runner.start(standby_interval=0.05)
    runner.stop()
    poll(lambda: not standby_threads())
    assert runtime.released and not runtime.started
    assert runner.runtime is None and exits == []
    # A later start() may stand by again.
    runtime.free.set()
    runner.start()
    assert runner.runtime is runtime


# --- the ini directory: explicit %(here)s, else a walk up the stack ---------

class LoaderContext:
    """What PasteDeploy's loader has in a local named ``context``."""
    def __init__(self, here):
        self.global_conf = {'here': here}


def test_ini_directory_is_found_in_the_loader_context_up_the_stack():
    def loader():
        context = LoaderContext('/srv/app')  # noqa: F841 (found by the walk)
        return config_include()

    def config_include():
        return includeme()

    def includeme():
        return combined.ini_directory()

    assert loader() == '/srv/app'


def test_ini_directory_is_none_without_a_loader():
    assert combined.ini_directory() is None


def test_an_explicit_database_path_needs_no_stack_walk(tmp_path, monkeypatch):
    def walk():
        raise AssertionError('the stack was walked')
    monkeypatch.setattr('pyramid_scheduler.ini_directory', walk)
    config = Configurator(settings={
        'scheduler.database': str(tmp_path / 'db.sqlite')})
    config.include('pyramid_scheduler')
    app = config.make_wsgi_app()
    assert app.registry.scheduler.settings.database_path == str(
        tmp_path / 'db.sqlite')

