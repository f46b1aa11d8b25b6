"""pyramid_scheduler and pscheduler.

Producer: the benchmark process builds the app of ``bench/app.py`` (the
``[app:main]`` of a generated ini) and calls ``request.scheduler.add_*_job``
inside a request made by ``pyramid.scripting.prepare`` (threadlocals pushed,
no pyramid_tm: the message is sent inside the timed call).

Worker: ``python -m pscheduler tmp.ini`` (master + one child for the queue
``jobs``), or, while pscheduler cannot start, ``python -m bench.psworker``
(the same app and Runtime a child runs, in one process): the table says which.
"""
import contextlib
import functools
import importlib.util
import os
import subprocess
import sys

from .base import System, amqp_delete, redis_delete_matching
from .common import AMQP_URL, REDIS_DB, ROOT, redis_url

LOGGING = """
[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(asctime)s %(levelname)s [%(name)s][%(process)d] %(message)s
"""


@functools.lru_cache()
def pscheduler_available():
    """True when ``python -m pscheduler`` can run (its CLI exists)."""
    if importlib.util.find_spec('pscheduler') is None:
        return False
    if not os.path.exists(os.path.join(ROOT, 'pscheduler', 'cli.py')):
        return False
    try:
        result = subprocess.run([sys.executable, '-m', 'pscheduler', '--help'],
                                cwd=ROOT, capture_output=True, timeout=60)
    except Exception:
        return False
    return result.returncode == 0


def write_ini(ctx, name, settings):
    path = ctx.path(name + '.ini')
    lines = ['[app:main]', 'use = call:bench.app:main']
    lines += [f'{k} = {v}' for k, v in settings.items()]
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n' + LOGGING)
    return path


def ps_broker_url(broker, db=None):
    if broker == 'redis':
        return redis_url('pyramid_scheduler') if db is None else \
            f'redis://127.0.0.1:6379/{db}'
    if broker == 'amqp':
        return AMQP_URL
    return ''


class PyramidSchedulerSystem(System):
    key = 'pyramid_scheduler'
    label = 'pyramid_scheduler'
    supports_date = True

    def __init__(self, ctx, broker, redis_db=None, extra_settings=None,
                 use_daemon=None, processes=1):
        super().__init__(ctx, broker)
        suffix = f'_p{processes}' if processes > 1 else ''
        # Its own queues, ini and database beside the one-process system's.
        self.queue += suffix
        self.scheduler_id = f'{ctx.run_id}_{broker}{suffix}'
        if processes > 1:
            self.label = f'pyramid_scheduler ({processes} processes)'
        self.database = os.path.join(ctx.tmp, f'ps-{self.queue}.sqlite')
        self.redis_db = redis_db
        self.settings = {
            'scheduler.queues': 'jobs',
            'scheduler.id': self.scheduler_id,
            'scheduler.database': self.database,
        }
        url = ps_broker_url(broker, redis_db)
        if url:
            self.settings['scheduler.broker.url'] = url
        if processes > 1:
            self.settings['scheduler.processes'] = str(processes)
        self.settings.update(extra_settings or {})
        self.use_daemon = (pscheduler_available() if use_daemon is None
                           else use_daemon)
        self.processes = processes
        children = '1 child' if processes == 1 else f'{processes} children'
        self.worker_label = (f'pscheduler (master + {children})'
                             if self.use_daemon
                             else 'bench.psworker (1 process)')

    def setup(self):
        from .app import make_app
        self.ini = write_ini(self.ctx, self.queue, self.settings)
        self.app = make_app(dict(self.settings))
        self.scheduler = self.app.registry.scheduler
        from .jobs import cpu_record, io_record, noop, record
        self._noop, self._record = noop, record
        self._work = {'io': io_record, 'cpu': cpu_record}

    @contextlib.contextmanager
    def enqueue_context(self):
        from pyramid.scripting import prepare
        env = prepare(registry=self.app.registry)
        try:
            self._request_scheduler = env['request'].scheduler
            yield
        finally:
            env['closer']()

    def enqueue_noop(self):
        self._request_scheduler.add_async_job(self._noop)

    def send_record(self, path, tag):
        self.scheduler.add_async_job(self._record, args=(path, tag))

    def send_work(self, kind, path, tag):
        self.scheduler.add_async_job(self._work[kind], args=(path, tag))

    def send_record_at(self, path, when):
        self.scheduler.add_date_job(self._record, when, args=(path, when))

    def worker_argv(self):
        if self.use_daemon:
            return [sys.executable, '-m', 'pscheduler', self.ini]
        return [sys.executable, '-m', 'bench.psworker', self.ini]

    def child_processes(self):
        """The processes that run jobs (the children, or the stand-in)."""
        procs = self.worker_processes()
        if self.use_daemon:
            return procs[1:]
        return procs

    def purge(self):
        from pyramid_scheduler import naming, transports
        settings = self.scheduler.settings
        conn = transports.connect(settings)
        try:
            conn.default_channel.queue_purge(
                naming.queue_name(settings, 'jobs'))
        except Exception:
            pass
        finally:
            conn.release()

    def teardown(self):
        try:
            self.scheduler.shutdown(timeout=1)
        except Exception:
            pass
        prefix = self.scheduler_id
        if self.broker == 'amqp':
            amqp_delete([f'{prefix}.jobs', f'{prefix}.jobs.admin',
                         f'{prefix}.jobs.dead'])
        elif self.broker == 'redis':
            db = self.redis_db if self.redis_db is not None else \
                REDIS_DB['pyramid_scheduler']
            redis_delete_matching(db, f'*{prefix}*')
