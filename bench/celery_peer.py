"""Celery on the same broker: prefork pool, concurrency 2 (one per core).

Defaults except: results ignored, no remote control / gossip / mingle /
heartbeat / events (none of which the benchmark uses, and each would add
broker queues), and the queue name is unique to the run. Delayed jobs use
``apply_async(eta=...)`` (Celery's countdown/ETA, held by the worker).

The worker imports this module as its app (``-A bench.celery_peer``) and
reads the broker URL and queue from the environment.
"""
import datetime
import os
import sys

from .base import System, amqp_delete, redis_delete_matching
from .common import AMQP_URL, REDIS_DB, redis_url

BROKER_ENV = 'BENCH_CELERY_BROKER'
QUEUE_ENV = 'BENCH_CELERY_QUEUE'


def make_app(broker, queue):
    from celery import Celery
    app = Celery('bench', broker=broker, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        task_ignore_result=True,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )

    @app.task(name='bench.noop')
    def noop():
        pass

    @app.task(name='bench.record')
    def record(path, tag):
        from bench.jobs import record as record_job
        record_job(path, tag)

    @app.task(name='bench.work')
    def work(kind, path, tag):
        from bench.jobs import cpu_record, io_record
        (io_record if kind == 'io' else cpu_record)(path, tag)

    return app


# the worker's app (``celery -A bench.celery_peer worker``)
if os.environ.get(BROKER_ENV):
    app = make_app(os.environ[BROKER_ENV], os.environ[QUEUE_ENV])


class CelerySystem(System):
    key = 'celery'
    label = 'Celery'
    brokers = ('redis', 'amqp')
    supports_date = True
    concurrency = 2

    def __init__(self, ctx, broker):
        super().__init__(ctx, broker)
        self.url = redis_url('celery') if broker == 'redis' else \
            AMQP_URL.replace('amqp://', 'pyamqp://')

    def setup(self):
        self.app = make_app(self.url, self.queue)
        self.noop = self.app.tasks['bench.noop']
        self.record = self.app.tasks['bench.record']
        self.work = self.app.tasks['bench.work']
        self.noop.delay()  # connect and declare
        self.purge()

    def enqueue_noop(self):
        self.noop.delay()

    def send_record(self, path, tag):
        self.record.delay(path, tag)

    def send_work(self, kind, path, tag):
        self.work.delay(kind, path, tag)

    def set_processes(self, n):
        self.concurrency = n
        self.label = f'Celery (prefork -c {n})'

    def send_record_at(self, path, when):
        eta = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
        self.record.apply_async((path, when), eta=eta)

    def worker_env(self):
        return self.ctx.env(**{BROKER_ENV: self.url, QUEUE_ENV: self.queue})

    def worker_argv(self):
        return [sys.executable, '-m', 'celery', '-A', 'bench.celery_peer',
                'worker', '-P', 'prefork', '-c', str(self.concurrency),
                '-Q', self.queue, '-n', f'{self.queue}@%h',
                '--without-gossip', '--without-mingle', '--without-heartbeat',
                '-l', 'warning']

    def purge(self):
        with self.app.connection_for_write() as conn:
            try:
                conn.default_channel.queue_purge(self.queue)
            except Exception:
                pass

    def teardown(self):
        if self.broker == 'amqp':
            amqp_delete([self.queue], [self.queue])
        else:
            redis_delete_matching(REDIS_DB['celery'], f'*{self.queue}*')
            redis_delete_matching(REDIS_DB['celery'], 'unacked*')
        self.app.close()
