"""What a dashboard page costs with many stored jobs.

    python -m bench.dashboard [--jobs 100000] [--jobstore sqlite|postgres]
                              [--repeat 5]

Starts pscheduler on a fresh directory (the embedded SQLite broker; the job
store in the same SQLite file, or in PostgreSQL with ``--jobstore postgres``
at ``PSCHEDULER_BENCH_PG_URL``, default the local pscheduler_test
database), stores ``--jobs`` cron jobs (``cron-0`` ...; the first 200 sent
through the broker, the rest written straight into the job store table as
the child would, bench.daemon.bulk_load), then times each page of the
dashboard, served in this process through WebTest: the median of
``--repeat`` requests, in ms; then the daemon's metrics scrape (over HTTP,
20 times). The pages that ask the daemon (overview,
scheduled jobs, a job) include the admin command's round trip over the
broker.
"""
import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from pyramid.config import Configurator

from .common import ROOT, wait_for

DEFAULT_PG = 'postgresql+psycopg2://postgres@127.0.0.1:5432/pscheduler_test'
SENT = 200


def make_app(global_config, **settings):
    """The benchmark's app: the dashboard, open (no security policy)."""
    settings.setdefault('scheduler.dashboard.permission',
                        '__no_permission_required__')
    config = Configurator(settings=settings)
    config.include('pyramid_scheduler.dashboard')
    return config.make_wsgi_app()


def pages(n_jobs):
    last = (n_jobs - 1) // 50 + 1
    return [
        ('overview', '/scheduler/'),
        ('jobs, page 1', '/scheduler/jobs'),
        (f'jobs, page {last // 2} (offset {(last // 2 - 1) * 50:,})',
         f'/scheduler/jobs?page={last // 2}'),
        (f'jobs, last page {last}', f'/scheduler/jobs?page={last}'),
        ('search, one id (q=cron-77777)', '/scheduler/jobs?q=cron-77777'),
        ('search, 111 ids (q=cron-123)', '/scheduler/jobs?q=cron-123'),
        ('search, every job by name (q=noop: 1000+)',
         '/scheduler/jobs?q=noop'),
        ('search, no match (q=nothing-like-it)',
         '/scheduler/jobs?q=nothing-like-it'),
        (f'a job (cron-{n_jobs // 2})', f'/scheduler/job/cron-{n_jobs // 2}'),
        ('failed jobs', '/scheduler/failed'),
        ('dead letters', '/scheduler/dead-letters'),
    ]


def write_ini(work, jobstore_url, metrics_port):
    lines = ['[app:main]', 'use = call:bench.dashboard:make_app',
             'scheduler.queues = jobs', 'scheduler.allowed_modules = bench',
             f'scheduler.database = {work / "pscheduler.sqlite"}',
             f'scheduler.id = dash{os.getpid()}',
             f'scheduler.metrics.bind = 127.0.0.1:{metrics_port}']
    if jobstore_url:
        lines.append(f'scheduler.jobstore.url = {jobstore_url}')
    ini = work / 'bench.ini'
    ini.write_text('\n'.join(lines) + '\n')
    return ini


def fill(scheduler, n_jobs):
    from .daemon import bulk_load
    from .jobs import noop
    start = time.time() + 2 * 86400
    for i in range(min(SENT, n_jobs)):
        scheduler.add_cron_job(noop, start_date=start, id=f'cron-{i}',
                               crontab=f'{i % 60} {(i // 60) % 24} * * *')
    wait_for(lambda: _stored(scheduler) >= min(SENT, n_jobs), 300,
             what='the jobs sent stored')
    bulk_load(scheduler.settings, range(SENT, n_jobs), start)
    stored = _stored(scheduler)
    if stored != n_jobs:
        raise SystemExit(f'{stored} jobs stored, not {n_jobs}')


def _stored(scheduler):
    replies, missing = scheduler.send_message('jobs', wait=True, timeout=10)
    return replies[0]['result']['total'] if replies else 0


def time_pages(app, n_jobs, repeat, chosen=None):
    """[(label, median ms, max ms)] of each page (or of those whose label
    is one of ``chosen``, or it followed by a space and more)."""
    from webtest import TestApp
    web = TestApp(app)
    results = []
    for label, url in pages(n_jobs):
        if chosen and not any(label == c or label.startswith(c + ' ')
                              for c in chosen):
            continue
        page = web.get(url)   # warm: imports, connections, caches
        if 'class="msg warn"' in page.text:   # not answered: not a timing
            raise SystemExit(f'{label}: {url} says: ' + page.text.split(
                'class="msg warn"')[1][:300])
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            web.get(url, status=200)
            times.append((time.perf_counter() - t0) * 1000)
        results.append((label, statistics.median(times), max(times)))
    return results


def time_scrapes(port, n_jobs, repeat):
    """The metrics scrape, once the owner has counted the stored jobs."""
    import urllib.request
    url = f'http://127.0.0.1:{port}/metrics'

    def scrape():
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()
    wait_for(lambda: scheduled_jobs(scrape()) == n_jobs, 60,
             what='the stored jobs counted in the metrics')
    times = []
    for _ in range(max(repeat, 20)):
        t0 = time.perf_counter()
        scrape()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times)


def scheduled_jobs(text, queue='jobs'):
    """The gauge pscheduler_scheduled_jobs of ``queue`` in a scrape (its
    value may read ``1e+06``)."""
    prefix = f'pscheduler_scheduled_jobs{{queue="{queue}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return None


def free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def drop_table(url, scheduler_id):
    import sqlalchemy
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        for suffix in ('jobs_jobs', 'jobs_jobs_due', 'jobs_status'):
            conn.execute(sqlalchemy.text(
                f'DROP TABLE IF EXISTS "{scheduler_id}_{suffix}"'))
    engine.dispose()


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m bench.dashboard')
    parser.add_argument('--jobs', type=int, default=100000)
    parser.add_argument('--jobstore', choices=('sqlite', 'postgres'),
                        default='sqlite')
    parser.add_argument('--repeat', type=int, default=5)
    args = parser.parse_args(argv)
    from pyramid.paster import get_app
    work = pathlib.Path(tempfile.mkdtemp(prefix='pscheduler-dash-bench-'))
    url = (os.environ.get('PSCHEDULER_BENCH_PG_URL', DEFAULT_PG)
           if args.jobstore == 'postgres' else None)
    port = free_port()
    ini = write_ini(work, url, port)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    log = open(work / 'pscheduler.log', 'wb')
    daemon = subprocess.Popen([sys.executable, '-m', 'pscheduler', str(ini)],
                              cwd=work, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    app = get_app(str(ini))
    scheduler = app.registry.scheduler
    try:
        wait_for(lambda: scheduler.send_message(
            'ping', wait=True, timeout=2)[0], 60, what='pscheduler answering')
        t0 = time.perf_counter()
        fill(scheduler, args.jobs)
        print(f'{args.jobs:,} cron jobs stored in '
              f'{time.perf_counter() - t0:.1f} s (job store: '
              f'{args.jobstore})')
        print(f'{"page":48} {"median ms":>10} {"max ms":>8}')
        for label, median, most in time_pages(app, args.jobs, args.repeat):
            print(f'{label:48} {median:10.1f} {most:8.1f}')
        median, most = time_scrapes(port, args.jobs, args.repeat)
        print(f'{"metrics scrape (GET /metrics, 20 times)":48} '
              f'{median:10.1f} {most:8.1f}')
    finally:
        daemon.terminate()
        daemon.wait(60)
        scheduler.shutdown()
        if url:
            drop_table(url, scheduler.settings.scheduler_id)


if __name__ == '__main__':
    main()
