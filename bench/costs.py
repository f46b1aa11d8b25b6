"""Case 10: what the newer features cost, on pscheduler (Redis, one child).

- Status records: there is no setting that turns them off (every job's
  record is written by the runtime, bench note in docs/benchmarks.rst);
  what a deployment chooses is where they go: the embedded SQLite file
  (default) or PostgreSQL (``scheduler.jobstore.url``). The throughput
  case runs with each.
- Metrics: the throughput case without ``scheduler.metrics.bind``, with it,
  and with it while ``/metrics`` is scraped every 100 ms (the scrape's
  own time is reported too).
- Outbox: a transaction (explicit ``transaction`` manager) that adds one
  job and commits, with ``scheduler.transactional`` on (the job goes
  through the outbox: an fsync) and off (sent at once); and the
  throughput of jobs committed through the outbox, 100 per transaction
  (the consumer checks each such message against its received copies).
"""
import os
import threading
import time
import urllib.request

from .cases import throughput
from .common import BenchError, p50_p99, percentile
from .dashboard import DEFAULT_PG, free_port
from .ps import PyramidSchedulerSystem

PER_TRANSACTION = 100


def pg_url():
    return os.environ.get('PSCHEDULER_BENCH_PG_URL', DEFAULT_PG)


def ps_system(ctx, tag, settings):
    """A one-child pscheduler on Redis with its own names and settings."""
    system = PyramidSchedulerSystem(ctx, 'redis', extra_settings=settings)
    system.queue += f'_{tag}'
    system.scheduler_id += f'_{tag}'
    system.settings['scheduler.id'] = system.scheduler_id
    system.database = system.database.replace('.sqlite', f'_{tag}.sqlite')
    system.settings['scheduler.database'] = system.database
    system.label = f'pyramid_scheduler ({tag})'
    return system


def with_system(system, run):
    system.setup()
    try:
        return run(system)
    finally:
        system.stop_worker()
        system.purge()
        system.teardown()
        if 'scheduler.jobstore.url' in system.settings:
            drop_tables(system.settings['scheduler.jobstore.url'],
                        system.scheduler_id)


def drop_tables(url, prefix):
    """Drop every table the system made in a shared database."""
    import sqlalchemy
    engine = sqlalchemy.create_engine(url)
    try:
        names = sqlalchemy.inspect(engine).get_table_names()
        with engine.begin() as conn:
            for name in names:
                if name.startswith(prefix):
                    conn.execute(sqlalchemy.text(f'DROP TABLE "{name}"'))
    finally:
        engine.dispose()


class Scraper:
    """GET /metrics every ``interval`` s in a thread; the times in ms."""

    def __init__(self, port, interval=0.1):
        self.url = f'http://127.0.0.1:{port}/metrics'
        self.interval = interval
        self.times, self.failures = [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def _run(self):
        while not self._stop.wait(self.interval):
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    response.read()
            except OSError:
                self.failures += 1   # the daemon not up yet, or restarting
                continue
            self.times.append((time.perf_counter() - t0) * 1000)


def throughput_rows(ctx, n, cap, errors=None):
    """{variant: {'rate'[, scrape figures]}} for the variants above."""
    port = free_port()
    metrics = {'scheduler.metrics.bind': f'127.0.0.1:{port}'}
    out = {}
    plain = lambda s: throughput(s, n, cap)  # noqa: E731
    out['sqlite'] = with_system(ps_system(ctx, 'base', {}), plain)
    try:   # a PostgreSQL that cannot be reached fails this row only
        out['postgres'] = with_system(ps_system(
            ctx, 'pg', {'scheduler.jobstore.url': pg_url()}), plain)
    except Exception as exc:
        if errors is not None:
            errors.append(f'costs, status records in PostgreSQL: {exc}')
        out['postgres'] = {'error': str(exc)}
    out['metrics_on'] = with_system(ps_system(ctx, 'met', metrics), plain)

    def scraped(system):
        with Scraper(port) as scraper:
            result = throughput(system, n, cap)
        if not scraper.times:
            raise BenchError('no metrics scrape answered during the run')
        result.update(scrapes=len(scraper.times),
                      scrape_p50=percentile(scraper.times, 50),
                      scrape_p99=percentile(scraper.times, 99))
        return result
    out['metrics_scraped'] = with_system(ps_system(ctx, 'scr', metrics),
                                         scraped)
    out['outbox'] = with_system(ps_system(ctx, 'obx', {}), lambda s: (
        throughput(s, n, cap, queue_jobs=lambda path, count: queue_committed(
            s, path, count))))
    return out


def explicit_manager():
    """An explicit-mode transaction manager installed as the package's
    (what the producer looks at), and a function that puts back the old."""
    import transaction
    manager = transaction.TransactionManager(explicit=True)
    saved, transaction.manager = transaction.manager, manager

    def restore():
        transaction.manager = saved
    return manager, restore


def queue_committed(system, path, n, per_transaction=PER_TRANSACTION):
    """``n`` record jobs, ``per_transaction`` per committed transaction."""
    manager, restore = explicit_manager()
    try:
        for first in range(0, n, per_transaction):
            manager.begin()
            for _ in range(min(per_transaction, n - first)):
                system.send_record(path, 0)
            manager.commit()
    finally:
        restore()


def commit_cost(system, rounds, warmup=20):
    """µs of begin + add_async_job + commit (p50 / p99), worker stopped."""
    manager, restore = explicit_manager()
    samples = []
    try:
        for i in range(warmup + rounds):
            t0 = time.perf_counter()
            manager.begin()
            system.scheduler.add_async_job(system._noop)
            manager.commit()
            if i >= warmup:
                samples.append((time.perf_counter() - t0) * 1e6)
    finally:
        restore()
        system.purge()
    return p50_p99(samples)


def costs_case(ctx, n, cap, rounds, errors=None):
    """Case 10: {'throughput': {...}, 'commit': {'outbox', 'direct'}}."""
    out = {'jobs': n, 'rounds': rounds,
           'throughput': throughput_rows(ctx, n, cap, errors)}
    out['commit'] = {
        'outbox': with_system(ps_system(ctx, 'txn', {}),
                              lambda s: commit_cost(s, rounds)),
        'direct': with_system(ps_system(
            ctx, 'notxn', {'scheduler.transactional': 'false'}),
            lambda s: commit_cost(s, rounds)),
    }
    return out
