"""Helpers for the pscheduler daemon tests: real processes, real signals.

Import the helpers you use explicitly (``from tests.daemon_helpers import
...``); the fixtures (``daemons``, ``broker_for``) come to every test module
through ``pytest_plugins`` in tests/conftest.py.

Every daemon is started in its own session, so its process group holds the
master and all its children; the ``daemons`` fixture kills that group after
the test, whatever happened.
"""
import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import psutil
import pytest

from tests.conftest import poll

REPO_ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get('PSCHEDULER_TEST_REDIS_URL',
                           'redis://127.0.0.1:6379/0')
# The daemon tests use their own Redis database, and a unique scheduler.id
# per test, so they share nothing with other tests or with each other.
DAEMON_REDIS_DB = 11

LOGGING = """
[loggers]
keys = root, pscheduler, pyramid_scheduler

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[logger_pscheduler]
level = INFO
handlers =
qualname = pscheduler

[logger_pyramid_scheduler]
level = INFO
handlers =
qualname = pyramid_scheduler

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(asctime)s %(levelname)-5.5s [%(name)s:%(process)d] %(message)s
"""


# --- waiting ---------------------------------------------------------------

def wait_for(condition, timeout=15.0, interval=0.05, what=None):
    """Poll ``condition()`` until it returns something true; return it."""
    return poll(condition, timeout, interval, message=(
        f'timed out after {timeout}s waiting for '
        f'{what or getattr(condition, "__name__", "a condition")}'))


# --- ini files ---------------------------------------------------------------

def write_ini(path, queues=('jobs',), app='tests.apps.simple:main',
              settings=None, logging=True):
    """Write an ini for ``app`` serving ``queues``; return its path.

    The embedded SQLite database goes beside the ini (the default). Short
    timeouts keep the tests fast; ``settings`` adds or overrides keys.
    """
    values = {
        'scheduler.queues': ' '.join(queues),
        'scheduler.shutdown_timeout': '10s',
        'scheduler.admin.timeout': '5s',
        # The jobs live in tests.jobs, outside the app's package (tests.apps).
        'scheduler.allowed_modules': 'tests.jobs',
    }
    values.update(settings or {})
    lines = ['[app:main]', f'use = call:{app}']
    lines += [f'{key} = {value}' for key, value in values.items()]
    text = '\n'.join(lines) + '\n' + (LOGGING if logging else '')
    path = Path(path)
    path.write_text(text, encoding='utf-8')
    return path


def redis_settings(scheduler_id=None):
    """Settings for the Redis broker, isolated by a unique scheduler.id."""
    base = REDIS_URL.rsplit('/', 1)[0]
    return {'scheduler.broker.url': f'{base}/{DAEMON_REDIS_DB}',
            'scheduler.id': scheduler_id or f'pst-{uuid.uuid4().hex[:12]}'}


def delete_redis_keys(settings):
    """Remove every key a test's unique scheduler.id left in Redis."""
    import redis
    client = redis.Redis.from_url(settings['scheduler.broker.url'])
    try:
        for key in client.scan_iter(f'*{settings["scheduler.id"]}*'):
            client.delete(key)
    finally:
        client.close()


def child_env(**extra):
    """The environment of a daemon: this checkout importable, no systemd."""
    env = dict(os.environ)
    env.pop('NOTIFY_SOCKET', None)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in env.get('PYTHONPATH', '').split(
            os.pathsep) if p])
    env['PYTHONUNBUFFERED'] = '1'
    env.update({key: str(value) for key, value in extra.items()})
    return env


# --- processes ---------------------------------------------------------------

def title(process):
    try:
        return ' '.join(process.cmdline()).strip()
    except psutil.Error:
        return ''


def is_gone(pid):
    """Dead, or a zombie nobody reaped (PID 1 in a container may not)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_group(pgid):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class Daemon:
    """One ``python -m pscheduler`` process tree, started in a new session."""

    def __init__(self, ini, args=(), env=None, log_path=None):
        self.ini = Path(ini)
        self.args = list(args)
        self.env = env or child_env()
        self.log_path = Path(log_path or self.ini.with_suffix('.log'))
        self.process = None

    def start(self):
        with open(self.log_path, 'ab') as log:
            self.process = subprocess.Popen(
                [sys.executable, '-m', 'pscheduler', *self.args,
                 str(self.ini)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=str(self.ini.parent), env=self.env,
                start_new_session=True)
        return self

    @property
    def pid(self):
        return self.process.pid

    def log(self):
        try:
            return self.log_path.read_text(encoding='utf-8', errors='replace')
        except FileNotFoundError:
            return ''

    def log_count(self, text):
        return self.log().count(text)

    def wait_log(self, text, count=1, timeout=20):
        wait_for(lambda: self.log_count(text) >= count, timeout,
                 what=f'{count} x {text!r} in the log of pscheduler '
                      f'{self.pid}:\n{self.log()}')

    def children(self):
        """``{queue: psutil.Process}`` of the master's live children."""
        try:
            processes = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return {}
        found = {}
        for process in processes:
            name = title(process)
            if name.startswith('pscheduler: queue ') and not is_gone(
                    process.pid):
                found[name[len('pscheduler: queue '):]] = process
        return found

    def child_pids(self):
        return {queue: p.pid for queue, p in self.children().items()}

    def wait_ready(self, queues, count=1, timeout=20):
        """Wait until the master said ready ``count`` times, serving queues."""
        self.wait_log('pscheduler ready', count, timeout)
        pids = wait_for(lambda: self.child_pids() if set(
            self.child_pids()) == set(queues) else None, timeout,
            what=f'children for {queues}; log:\n{self.log()}')
        return pids

    def send_signal(self, signum):
        os.kill(self.pid, signum)

    def wait_exit(self, timeout=30):
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f'pscheduler {self.pid} still runs after '
                                 f'{timeout}s; log:\n{self.log()}') from None

    def group_members(self):
        members = []
        for process in psutil.process_iter(['pid']):
            with contextlib.suppress(psutil.Error):
                if os.getpgid(process.pid) == self.pid and not is_gone(
                        process.pid):
                    members.append(process.pid)
        return members

    def kill_all(self):
        if self.process is None:
            return
        kill_group(self.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)


@pytest.fixture
def daemons():
    """``start(ini, *args, env=None)`` -> a started Daemon, killed after."""
    started = []

    def start(ini, *args, env=None, log_path=None):
        daemon = Daemon(ini, args, env=env, log_path=log_path).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill_all()


def run_cli(*args, ini, timeout=60, env=None):
    """Run ``pscheduler ARGS INI`` to completion -> CompletedProcess."""
    return subprocess.run(
        [sys.executable, '-m', 'pscheduler', *args, str(ini)],
        capture_output=True, text=True, timeout=timeout,
        env=env or child_env(), cwd=str(Path(ini).parent),
        stdin=subprocess.DEVNULL)


def start_cli(*args, ini, env=None):
    """Start ``pscheduler ARGS INI`` -> Popen; collect with communicate()."""
    return subprocess.Popen(
        [sys.executable, '-m', 'pscheduler', *args, str(ini)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env or child_env(), cwd=str(Path(ini).parent),
        stdin=subprocess.DEVNULL)


# --- producing jobs from the test process ------------------------------------

@contextlib.contextmanager
def producer(ini):
    """A Scheduler that sends jobs to the queues of ``ini``, as a web app does.

    Built from the settings alone (no app loaded), so the test process never
    consumes: only the daemon runs the jobs.
    """
    from pscheduler.config import load_config
    from pyramid_scheduler.scheduler import Scheduler
    scheduler = Scheduler(load_config(str(ini)).settings)
    try:
        yield scheduler
    finally:
        scheduler.shutdown()


def start_one_worker_daemon(tmp_path, daemons, broker_for, broker,
                            **settings):
    """A daemon serving ``jobs`` on ``broker`` with one worker thread (a job
    held running keeps those behind it queued) unless ``settings`` say
    otherwise, ready -> ``(ini, daemon, child pid, settings)``."""
    values = broker_for(broker, **{'scheduler.executor.size': '1'})
    values.update(settings)
    ini = write_ini(tmp_path / 'app.ini', settings=values)
    daemon = daemons(ini)
    pids = daemon.wait_ready(['jobs'])
    return ini, daemon, pids['jobs'], values


def state_of(scheduler, job_id, state, daemon, timeout=30):
    """Wait until ``job_id``'s status record reads ``state``; its
    JobStatus (the daemon's log in the failure)."""
    def reached():
        found = scheduler.job_status(job_id)
        return found if found is not None and found.state == state else None
    return wait_for(reached, timeout, what=f'job {job_id} {state}; now '
                    f'{scheduler.job_status(job_id)}; log:\n{daemon.log()}')


def stored_job_ids(ini, queue, scheduler_id='pyramid_scheduler'):
    """Ids of the deferred jobs in the embedded SQLite job store of a queue."""
    database = Path(ini).parent / 'pscheduler.sqlite'
    table = f'{scheduler_id}_{queue}_jobs'.replace('.', '_')
    connection = sqlite3.connect(str(database), timeout=30)
    try:
        rows = connection.execute(f'SELECT id FROM "{table}"').fetchall()
    except sqlite3.OperationalError:
        return []  # not created yet
    finally:
        connection.close()
    return [row[0] for row in rows]


# --- systemd's notify socket -------------------------------------------------

class NotifySocket:
    """A stand-in for systemd's $NOTIFY_SOCKET: records what it is told."""

    def __init__(self):
        # AF_UNIX paths are limited to ~100 bytes: pytest's tmp_path is long.
        self.directory = tempfile.mkdtemp(prefix='psn-')
        self.path = os.path.join(self.directory, 'notify')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages = []

    def received(self):
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            self.messages.append(dict(
                line.split('=', 1) for line in data.decode().splitlines()
                if '=' in line))

    def keys(self):
        """The sequence of state changes: READY, RELOADING, STOPPING."""
        return [key for message in self.received() for key in message
                if key in ('READY', 'RELOADING', 'STOPPING')]

    def close(self):
        self.sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def pscheduler_executable(tmp_path):
    """A ``bin/pscheduler`` for the etc/ files, runnable with ``env -i``.

    The daemontools and systemd files run ``.../bin/pscheduler`` with a
    clean environment. This script stands in for it: it runs the installed
    console script when there is one for this checkout (so that is tested
    too), else ``python -m pscheduler``, and sets PYTHONPATH so that the
    test applications in tests/apps import.
    """
    installed = Path(sys.executable).parent / 'pscheduler'
    if installed.exists() and _runs_this_checkout(installed):
        command = str(installed)
    else:
        command = f'{sys.executable} -m pscheduler'
    wrapper = Path(tmp_path) / 'bin' / 'pscheduler'
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        PYTHONPATH={REPO_ROOT} exec {command} "$@"
        """), encoding='utf-8')
    wrapper.chmod(0o755)
    return wrapper


def _runs_this_checkout(script):
    """Whether the script's interpreter imports pscheduler from here."""
    shebang = script.read_text(errors='replace').splitlines()[0]
    if not shebang.startswith('#!'):
        return False
    code = 'import pscheduler; print(pscheduler.__file__)'
    result = subprocess.run(
        [*shebang[2:].split(), '-c', code], capture_output=True, text=True,
        env={'PATH': os.environ['PATH']}, cwd='/')
    return result.returncode == 0 and result.stdout.strip().startswith(
        str(REPO_ROOT))


# --- brokers for the fault tests (tests/test_durability.py) ------------------

AMQP_URL = os.environ.get('PSCHEDULER_TEST_AMQP_URL',
                          'pyamqp://guest:guest@127.0.0.1:5672//')
PG_URL = os.environ.get(
    'PSCHEDULER_TEST_PG_URL',
    'postgresql+psycopg2://postgres@127.0.0.1:5432/pscheduler_test')


def broker_settings(broker, scheduler_id=None):
    """Settings for ``'sqlite'`` (the embedded default), ``'redis'`` or
    ``'rabbitmq'``, with a unique scheduler.id."""
    scheduler_id = scheduler_id or f'pst-{uuid.uuid4().hex[:12]}'
    if broker == 'sqlite':
        return {'scheduler.id': scheduler_id}
    if broker == 'redis':
        return redis_settings(scheduler_id)
    if broker == 'rabbitmq':
        return {'scheduler.broker.url': AMQP_URL,
                'scheduler.id': scheduler_id}
    raise ValueError(f'unknown broker {broker!r}')


def delete_broker_queues(settings, queues=('jobs',)):
    """Remove what a test's unique scheduler.id left in a shared broker:
    its keys in Redis (and its entries in kombu's shared hash of
    unacknowledged messages), its queues in RabbitMQ."""
    url = settings.get('scheduler.broker.url', '')
    scheduler_id = settings['scheduler.id']
    if url.startswith('redis'):
        import json
        import redis
        delete_redis_keys(settings)
        client = redis.Redis.from_url(url)
        try:
            # kombu's hash, and those of the processes in slots 1 and up
            # (scheduler.processes; redis_transport.slot_options).
            suffixes = [''] + [key.decode()[len('unacked'):] for key in
                               client.scan_iter('unacked#*')]
            for suffix in suffixes:
                hash_key, index_key = 'unacked' + suffix, \
                    'unacked_index' + suffix
                for tag, entry in client.hgetall(hash_key).items():
                    with contextlib.suppress(ValueError, TypeError,
                                             IndexError):
                        if scheduler_id in json.loads(entry)[2]:
                            client.hdel(hash_key, tag)
                            client.zrem(index_key, tag)
        finally:
            client.close()
    elif url.startswith(('amqp', 'pyamqp')):
        import kombu
        with kombu.Connection(url, connect_timeout=5) as connection:
            for queue in queues:
                for suffix in ('', '.admin', '.store', '.dead'):
                    # Deleting a queue that does not exist is no error.
                    connection.default_channel.queue_delete(
                        f'{scheduler_id}.{queue}{suffix}')


@pytest.fixture
def broker_for():
    """``broker_for(name, **settings)`` -> settings for ``name`` with a
    unique scheduler.id, whose queues are deleted from the shared broker
    after the test. Tests ask for it before ``daemons``, so their daemons
    are dead by then."""
    made = []

    def make(name, **extra):
        settings = broker_settings(name)
        settings.update(extra)
        made.append(settings)
        return settings

    yield make
    for settings in made:
        delete_broker_queues(settings)


class PersistentRedis:
    """A private redis-server that keeps its data across kill and restart.

    Append-only file, fsynced at every write, in ``directory``; restarted
    on the same port and directory, it comes back with every message it
    had accepted.
    """

    #: redis-server's persistence arguments: an fsync at every write.
    arguments = ('--appendonly', 'yes', '--appendfsync', 'always')

    def __init__(self, directory, port=None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_port()
        self.process = None

    @property
    def url(self):
        return f'redis://127.0.0.1:{self.port}/0'

    def start(self, timeout=20):
        self.process = subprocess.Popen(
            [shutil.which('redis-server'), '--port', str(self.port),
             '--bind', '127.0.0.1', '--save', '', '--dir',
             str(self.directory), *self.arguments],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        wait_for(self._loaded, timeout,
                 what=f'private redis-server on port {self.port}')
        return self

    def _loaded(self):
        import redis
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2,
                             socket_timeout=0.5)
        try:
            return client.ping()  # refused with LOADING until the AOF is in
        except Exception:
            return False
        finally:
            client.close()

    def kill(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]
