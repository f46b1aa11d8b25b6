"""Huey on the same broker: RedisHuey, or SqliteHuey for the SQLite cases.

Consumer ``huey_consumer -w 2 -k process`` (two worker processes, one per
core), otherwise Huey's defaults (Redis: blocking BRPOP; SQLite: polling
from 0.1 s with backoff; scheduler checks delayed tasks every second).
Delayed jobs use ``task.schedule(eta=...)``.

The consumer imports ``bench.huey_peer.huey``, configured from the
environment.
"""
import datetime
import os
import sys

from .base import System, redis_delete_matching
from .common import REDIS_DB, REDIS_HOST, REDIS_PORT

NAME_ENV = 'BENCH_HUEY_NAME'
FILE_ENV = 'BENCH_HUEY_SQLITE'


def make_huey(name, sqlite_path=None):
    from huey import RedisHuey, SqliteHuey
    if sqlite_path:
        huey = SqliteHuey(name, filename=sqlite_path)
    else:
        huey = RedisHuey(name, host=REDIS_HOST, port=REDIS_PORT,
                         db=REDIS_DB['huey'])

    @huey.task(name='bench.noop')
    def noop():
        pass

    @huey.task(name='bench.record')
    def record(path, tag):
        from bench.jobs import record as record_job
        record_job(path, tag)

    @huey.task(name='bench.work')
    def work(kind, path, tag):
        from bench.jobs import cpu_record, io_record
        (io_record if kind == 'io' else cpu_record)(path, tag)

    return huey, noop, record, work


if os.environ.get(NAME_ENV):
    huey, _noop, _record, _work = make_huey(os.environ[NAME_ENV],
                                     os.environ.get(FILE_ENV) or None)


class HueySystem(System):
    key = 'huey'
    label = 'Huey'
    brokers = ('redis', 'sqlite')
    supports_date = True
    # Huey's scheduler is the same on every storage (it looks every second)
    date_brokers = ('redis',)
    workers = 2
    worker_type = 'process'

    def __init__(self, ctx, broker):
        super().__init__(ctx, broker)
        self.sqlite_path = (os.path.join(ctx.tmp, f'{self.queue}.sqlite')
                            if broker == 'sqlite' else None)

    def setup(self):
        self.huey, self.noop, self.record, self.work = make_huey(self.queue,
                                                      self.sqlite_path)

    def enqueue_noop(self):
        self.noop()

    def send_record(self, path, tag):
        self.record(path, tag)

    def send_work(self, kind, path, tag):
        self.work(kind, path, tag)

    def set_processes(self, n):
        self.workers = n
        self.label = f'Huey (-w {n} -k process)'

    def send_record_at(self, path, when):
        eta = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
        self.record.schedule(args=(path, when), eta=eta)

    def worker_env(self):
        return self.ctx.env(**{NAME_ENV: self.queue,
                               FILE_ENV: self.sqlite_path or ''})

    def worker_argv(self):
        return [sys.executable, '-m', 'huey.bin.huey_consumer',
                'bench.huey_peer.huey', '-w', str(self.workers),
                '-k', self.worker_type, '-q']

    def purge(self):
        self.huey.flush()

    def teardown(self):
        if self.broker == 'redis':
            redis_delete_matching(REDIS_DB['huey'], f'*{self.queue}*')
