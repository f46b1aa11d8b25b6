"""Case 11: one million stored cron jobs (pscheduler, Redis, SQLite job
store).

The jobs are written straight into the queue's job store table as its
child would (:func:`bench.daemon.bulk_load`) while no daemon runs; then
pscheduler starts and the case times: the start (``python -m pscheduler``
until a job sent at the start has run), the child's RSS, the ``jobs``
admin command (CLI wall time, and the round trip from a loaded process),
dashboard pages (served in this process through WebTest, their admin
commands over the broker) and a metrics scrape of the master
(``scheduler.metrics.bind``) once it counts the stored jobs.
"""
import time

from .common import rss
from .daemon import CASE6_DB, Daemon
from .dashboard import free_port, time_pages, time_scrapes

# Of bench.dashboard.pages: overview, jobs page 1, a job, the middle page,
# the last page (the deep pages last: a runtime still busy with one that
# timed out would make the next page wait too).
PAGES = (0, 1, 8, 2, 3)
STARTS = 2


def median_of(values):
    return sorted(values)[len(values) // 2]


def million_case(ctx, n_jobs, repeat):
    """{'jobs', 'load_s', 'start_s', 'rss_mb', 'jobs_cli_s', 'jobs_rt_s',
    'pages': [[label, ms]], 'scrape_ms'}."""
    port = free_port()
    d = Daemon(ctx, 'redis', CASE6_DB, tag='million', extra_settings={
        'scheduler.metrics.bind': f'127.0.0.1:{port}'})
    d.setup()
    out = {'jobs': n_jobs}
    try:
        d.ensure_worker()          # creates the job store's tables
        d.stop_worker()
        t0 = time.perf_counter()
        from .daemon import bulk_load
        bulk_load(d.scheduler.settings, range(n_jobs), time.time() + 2 * 86400)
        out['load_s'] = time.perf_counter() - t0
        ctx.log(f'million: {n_jobs:,} cron jobs written in '
                f'{out["load_s"]:.0f} s')
        out['start_s'] = median_of([timed_start(d) for _ in range(STARTS)])
        out['rss_mb'] = rss(d.the_child()) / 1e6
        out['jobs_cli_s'] = median_of([d.message_cli('jobs')
                                       for _ in range(repeat)])
        out['jobs_rt_s'] = median_of([d.message_roundtrip('jobs')
                                      for _ in range(repeat)])
        # the last page of `jobs`, once: how long the dashboard would wait
        out['jobs_last_rt_s'] = d.message_roundtrip(
            'jobs', args={'offset': max(n_jobs - 50, 0), 'limit': 50},
            timeout=300)
        out['pages'] = dashboard_pages(d, n_jobs, repeat)
        out['scrape_ms'] = time_scrapes(port, n_jobs, repeat)[0]
        out['rss_after_mb'] = rss(d.the_child()) / 1e6
        return out
    finally:
        d.stop_worker()
        d.teardown()


def timed_start(d):
    """Seconds from ``python -m pscheduler`` to a job run by its child."""
    d.stop_worker()
    t0 = time.perf_counter()
    d.start_worker()
    d.wait_ready()
    return time.perf_counter() - t0


def dashboard_pages(d, n_jobs, repeat):
    """[[label, median ms or the page's warning]] of the PAGES."""
    from pyramid_scheduler.dashboard.data import ANSWER_TIMEOUT

    from .dashboard import make_app, pages
    app = make_app({}, **d.settings)
    out = []
    every = pages(n_jobs)
    try:
        for chosen in [every[i][0] for i in PAGES]:
            try:
                out += [[label, ms] for label, ms, _ in
                        time_pages(app, n_jobs, repeat, [chosen])]
            except SystemExit:   # the page says the daemon did not answer
                out.append([chosen, 'no answer within the page\'s timeout'
                            f' ({ANSWER_TIMEOUT:g} s)'])
        return out
    finally:
        app.registry.scheduler.shutdown(timeout=1)
