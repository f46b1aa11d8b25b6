"""The table of medians and ratios, the targets of issues 6 and 18, and the
.rst."""
import datetime
import os
import platform
import subprocess
import sys

SYSTEMS = ('pyramid_scheduler', 'kombu', 'celery', 'huey')
# pscheduler with two children per queue (scheduler.processes = 2): the
# throughput case runs it too, in a row of its own.
POOL_KEY = 'pyramid_scheduler_p2'
LABELS = {'pyramid_scheduler': 'pyramid_scheduler', 'kombu': 'raw kombu',
          'celery': 'Celery', 'huey': 'Huey'}
BROKER_LABELS = {'redis': 'Redis', 'amqp': 'RabbitMQ', 'sqlite': 'SQLite'}


def machine():
    cpu = '?'
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    nproc = os.cpu_count()
    return (f'{platform.machine()}, {nproc} CPUs ({cpu}), '
            f'Linux {platform.release()}, Python {platform.python_version()}')


def server_versions():
    out = {}
    try:
        import redis
        client = redis.Redis(host='127.0.0.1', port=6379)
        out['Redis'] = client.info('server')['redis_version']
        client.close()
    except Exception:
        out['Redis'] = '?'
    try:
        import kombu
        from .common import AMQP_URL
        with kombu.Connection(AMQP_URL) as conn:
            conn.connect()
            props = conn.connection.server_properties
            out['RabbitMQ'] = props.get('version', '?')
    except Exception:
        out['RabbitMQ'] = '?'
    import sqlite3
    out['SQLite'] = sqlite3.sqlite_version
    return out


def package_versions():
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ('pyramid_scheduler', 'kombu', 'APScheduler', 'SQLAlchemy',
                 'redis', 'amqp', 'pyramid', 'celery', 'huey'):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = 'not installed'
    try:
        rev = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'],
                             capture_output=True, text=True, cwd=os.path.dirname(
                                 os.path.dirname(os.path.abspath(__file__))))
        dirty = subprocess.run(['git', 'status', '--porcelain', '--',
                                'pyramid_scheduler', 'pscheduler'],
                               capture_output=True, text=True,
                               cwd=os.path.dirname(os.path.dirname(
                                   os.path.abspath(__file__))))
        out['pyramid_scheduler'] += f' (git {rev.stdout.strip()}' + (
            ' + uncommitted changes)' if dirty.stdout.strip() else ')')
    except Exception:
        pass
    return out


# --- formatting ------------------------------------------------------------

def fmt(value, unit=''):
    if value is None:
        return '—'
    if isinstance(value, str):
        return value
    if abs(value) >= 100:
        text = f'{value:,.0f}'
    elif abs(value) >= 10:
        text = f'{value:.1f}'
    elif abs(value) >= 1:
        text = f'{value:.2f}'
    else:
        text = f'{value:.3f}'
    return text + unit


def fmt_ratio(value):
    if value is None:
        return '—'
    return f'{value:.3f}×' if value < 0.1 else f'{value:.2f}×'


def pair(a, b, unit):
    if a is None:
        return '—'
    return f'{fmt(a)} / {fmt(b)}{unit}'


# --- building the rows ---------------------------------------------------------

# metric key -> (label, unit, how to show): 'pair' shows p50/p99
CASE_ROWS = [
    ('enqueue', 'pair', '1. enqueue one no-op, p50 / p99', ' µs'),
    ('throughput', 'rate', '2. throughput, queued no-op jobs', '/s'),
    ('latency', 'pair', '3. time to execution, p50 / p99', ' ms'),
    ('lateness', 'pair', '4. date job lateness, p50 / p99', ' ms'),
    ('idle', 'cpu', '7. idle CPU of the worker, % of a core', ' %'),
]


def main_rows(results, sizes):
    """[(case, broker, cells per system..., ratios...)] from the medians."""
    rows = []
    for case, kind, label, unit in CASE_ROWS:
        for broker in ('redis', 'amqp', 'sqlite'):
            rows += _rows_of(results, sizes, case, kind, label, unit, broker)
    return rows


def _rows_of(results, sizes, case, kind, label, unit, broker):
    rows = []
    ours_keys = ['pyramid_scheduler']
    if case == 'throughput' and (case, broker, POOL_KEY) in results:
        ours_keys.append(POOL_KEY)
    for ours_key in ours_keys:
        cells = {}
        for system in SYSTEMS:
            key = ours_key if system == 'pyramid_scheduler' else system
            r = results.get((case, broker, key))
            if r is None:
                continue
            cells[system] = r
        if not cells:
            continue
        row_label = label
        if case == 'throughput' and sizes.get(('throughput', broker)):
            row_label = (f'2. throughput, '
                         f'{sizes[("throughput", broker)]:,} queued '
                         'no-op jobs')
        if ours_key == POOL_KEY:
            row_label += ' (ours: 2 processes per queue)'
        texts, firsts = {}, {}
        for system, r in cells.items():
            if 'error' in r:
                texts[system], firsts[system] = 'error', None
                continue
            if kind == 'pair':
                texts[system] = pair(r['p50'], r['p99'], unit)
                firsts[system] = r['p50']
            elif kind == 'rate':
                texts[system] = fmt(r['rate'], unit)
                if r.get('partial'):
                    texts[system] += ' (cut)'
                firsts[system] = r['rate']
            else:
                texts[system] = fmt(r['cpu'], unit)
                firsts[system] = r['cpu']
        ours = firsts.get('pyramid_scheduler')
        ratios = {}
        for peer in ('kombu', 'celery', 'huey'):
            theirs = firsts.get(peer)
            ratios[peer] = (ours / theirs if ours is not None and theirs
                            else None)
        rows.append((row_label, BROKER_LABELS[broker],
                     [texts.get(s, '—') for s in SYSTEMS],
                     [fmt_ratio(ratios[p]) for p in
                      ('kombu', 'celery', 'huey')]))
    return rows


def _get(results, case, broker, system, key):
    r = results.get((case, broker, system))
    if not r or 'error' in r:
        return None
    return r.get(key)


def targets(results, extra):
    """[(target, measured, ratio text, met)] for issue 6's targets, then
    issue 18's (labelled ``18:``)."""
    out = []

    def ratio_target(label, ours, theirs, limit, higher_is_better=False):
        if ours is None or theirs is None:
            out.append((label, '—', 'not measured', None))
            return
        ratio = ours / theirs
        met = ratio >= limit if higher_is_better else ratio <= limit
        text = f'{ratio:.2f}×'
        if text == f'{limit:.2f}×':  # too close to tell at 2 decimals
            text = f'{ratio:.4f}×'
        out.append((label, f'{fmt(ours)} vs {fmt(theirs)}', text, met))

    def abs_target(label, value, limit, unit, higher_is_better=False):
        if value is None:
            out.append((label, '—', 'not measured', None))
            return
        met = value >= limit if higher_is_better else value <= limit
        out.append((label, fmt(value, unit), f'{value / limit:.2f}× the limit',
                    met))

    g = lambda *a: _get(results, *a)  # noqa: E731
    for broker in ('redis', 'amqp'):
        name = BROKER_LABELS[broker]
        if g('enqueue', broker, 'celery', 'p50') is not None:
            ratio_target(f'enqueue p50 ≤ 0.5× Celery ({name})',
                         g('enqueue', broker, 'pyramid_scheduler', 'p50'),
                         g('enqueue', broker, 'celery', 'p50'), 0.5)
    ratio_target('enqueue p50 ≤ 1.5× Huey (Redis)',
                 g('enqueue', 'redis', 'pyramid_scheduler', 'p50'),
                 g('enqueue', 'redis', 'huey', 'p50'), 1.5)
    def pool_rate(broker):
        """Throughput with two children per queue (the issue's lever, and
        Celery c=2's number of processes), or else with one."""
        rate = g('throughput', broker, POOL_KEY, 'rate')
        if rate is not None:
            return rate, ', pscheduler 2 processes per queue'
        return g('throughput', broker, 'pyramid_scheduler', 'rate'), ''

    rate, how = pool_rate('redis')
    ratio_target(f'throughput ≥ 2× Celery prefork c=2 (Redis{how})', rate,
                 g('throughput', 'redis', 'celery', 'rate'), 2.0, True)
    rate, how = pool_rate('amqp')
    ratio_target(f'throughput ≥ 0.8× raw kombu (RabbitMQ{how})', rate,
                 g('throughput', 'amqp', 'kombu', 'rate'), 0.8, True)
    ours = g('latency', 'redis', 'pyramid_scheduler', 'p50')
    theirs = g('latency', 'redis', 'kombu', 'p50')
    ratio_target('time to execution p50 ≤ raw kombu + 20 % (Redis)', ours,
                 theirs, 1.2)
    ratio_target('time to execution p99 ≤ Celery (Redis)',
                 g('latency', 'redis', 'pyramid_scheduler', 'p99'),
                 g('latency', 'redis', 'celery', 'p99'), 1.0)
    for broker in ('redis', 'amqp', 'sqlite'):
        value = g('lateness', broker, 'pyramid_scheduler', 'p50')
        if value is not None:
            abs_target(f'date-job lateness p50 ≤ 2 ms '
                       f'({BROKER_LABELS[broker]})', value, 2.0, ' ms')
    for broker in ('redis', 'amqp'):
        if g('lateness', broker, 'celery', 'p99') is not None:
            ratio_target(f'date-job lateness p99 ≤ Celery ETA p99 '
                         f'({BROKER_LABELS[broker]})',
                         g('lateness', broker, 'pyramid_scheduler', 'p99'),
                         g('lateness', broker, 'celery', 'p99'), 1.0)
    cron = extra.get('cron') or {}
    n = cron.get('jobs')
    tag = f'{n:,}' if n else '100k'
    abs_target(f'{tag} cron jobs: child start ≤ 10 s',
               cron.get('child_start_s'), 10.0, ' s')
    abs_target(f'{tag} cron jobs: child RSS ≤ 300 MB',
               cron.get('rss_restarted_mb'), 300.0, ' MB')
    abs_target(f'{tag} cron jobs: a `jobs` page ≤ 1 s (CLI)',
               cron.get('jobs_cli_s'), 1.0, ' s')
    abs_target('SQLite: time to execution p50 ≤ 10 ms',
               g('latency', 'sqlite', 'pyramid_scheduler', 'p50'), 10.0, ' ms')
    ratio_target('SQLite: time to execution p50 ≤ SqliteHuey',
                 g('latency', 'sqlite', 'pyramid_scheduler', 'p50'),
                 g('latency', 'sqlite', 'huey', 'p50'), 1.0)
    abs_target('SQLite: throughput ≥ 2,500 jobs/s',
               g('throughput', 'sqlite', 'pyramid_scheduler', 'rate'), 2500.0,
               '/s', True)
    ratio_target('SQLite: throughput ≥ SqliteHuey',
                 g('throughput', 'sqlite', 'pyramid_scheduler', 'rate'),
                 g('throughput', 'sqlite', 'huey', 'rate'), 1.0, True)
    abs_target('SQLite: idle CPU of a child ≤ 0.5 % of a core',
               g('idle', 'sqlite', 'pyramid_scheduler', 'cpu'), 0.5, ' %')
    daemon = extra.get('daemon') or {}
    abs_target('child replaced ≤ 1 s after SIGKILL',
               daemon.get('kill_served_s'), 1.0, ' s')
    abs_target('HUP reload ≤ 2 s', daemon.get('hup_served_s'), 2.0, ' s')
    # Issue 18: ahead of every peer, on every case, in the same run.
    ratio_target('18: enqueue p50 ≤ Huey (Redis)',
                 g('enqueue', 'redis', 'pyramid_scheduler', 'p50'),
                 g('enqueue', 'redis', 'huey', 'p50'), 1.0)
    for stat in ('p50', 'p99'):
        ratio_target(f'18: time to execution {stat} ≤ Huey (Redis)',
                     g('latency', 'redis', 'pyramid_scheduler', stat),
                     g('latency', 'redis', 'huey', stat), 1.0)
    ratio_target('18: time to execution p50 ≤ 1.1× raw kombu (RabbitMQ)',
                 g('latency', 'amqp', 'pyramid_scheduler', 'p50'),
                 g('latency', 'amqp', 'kombu', 'p50'), 1.1)
    ratio_target('18: throughput ≥ 0.8× raw kombu (RabbitMQ, one child)',
                 g('throughput', 'amqp', 'pyramid_scheduler', 'rate'),
                 g('throughput', 'amqp', 'kombu', 'rate'), 0.8, True)
    return out


def extra_rows(extra):
    rows = []
    cron = extra.get('cron')
    if cron:
        if 'error' in cron:
            rows.append(('5. stored cron jobs', 'error: ' + cron['error']))
        else:
            n, sent = cron['jobs'], cron['sent']
            rows += [
                (f'5. {sent:,} cron jobs sent with add_cron_job: producer '
                 'time / time until all stored (store rate)',
                 f'{fmt(cron["send_s"])} s / {fmt(cron["store_s"])} s '
                 f'({fmt(cron["store_rate"])} jobs/s)'),
                (f'5. {n - sent:,} more written straight to the job store '
                 '(bench shortcut, not timed as a product number)',
                 f'{fmt(cron["bulk_s"])} s'),
                (f'5. child RSS: empty / {n:,} jobs stored / new child with '
                 'them', f'{fmt(cron["rss_empty_mb"])} / '
                 f'{fmt(cron["rss_full_mb"])} / '
                 f'{fmt(cron["rss_restarted_mb"])} MB'),
                (f'5. child start with {n:,} jobs (fork to first job run), '
                 'after SIGHUP', f'{fmt(cron["child_start_s"])} s'),
                (f'5. SIGHUP to a job run by the new child, {n:,} jobs',
                 f'{fmt(cron["hup_served_s"])} s'),
                ('5. `pscheduler --message jobs` (one page of 50, CLI wall '
                 'time) / the same command from a loaded process',
                 f'{fmt(cron["jobs_cli_s"])} s / '
                 f'{fmt(cron["jobs_rt_s"] * 1000)} ms'),
                ('5. `pscheduler --message print-jobs` (CLI wall time) / '
                 '`status` from a loaded process',
                 f'{fmt(cron["print_jobs_cli_s"])} s / '
                 f'{fmt(cron["status_rt_s"] * 1000)} ms'),
                (f'5. date job among {n:,} cron jobs, lateness p50 / p99',
                 f'{fmt(cron["late_p50"])} / {fmt(cron["late_p99"])} ms'),
            ]
    daemon = extra.get('daemon')
    if daemon:
        if 'error' in daemon:
            rows.append(('6. daemon', 'error: ' + daemon['error']))
        else:
            rows += [
                ('6. SIGKILL of the child to a job run by its replacement',
                 f'{fmt(daemon["kill_served_s"])} s'),
                ('6. SIGHUP to a job run by the reloaded child / its fork '
                 'to that job', f'{fmt(daemon["hup_served_s"])} s / '
                 f'{fmt(daemon["child_start_s"])} s'),
                ('6. RSS: master / child (idle, one queue)',
                 f'{fmt(daemon["master_rss_mb"])} / '
                 f'{fmt(daemon["child_rss_mb"])} MB'),
            ]
    return rows


# --- text and rst ----------------------------------------------------------------

def grid(headers, rows):
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    sep = '+' + '+'.join('-' * (w + 2) for w in widths) + '+'
    head = '+' + '+'.join('=' * (w + 2) for w in widths) + '+'

    def line(cells):
        return '|' + '|'.join(f' {str(c):<{w}} ' for c, w in
                              zip(cells, widths)) + '|'
    out = [sep, line(headers), head]
    for row in rows:
        out += [line(row), sep]
    return '\n'.join(out)


def tables(results, extra, sizes):
    headers = ['case', 'broker'] + [LABELS[s] for s in SYSTEMS] + [
        'ours / kombu', 'ours / Celery', 'ours / Huey']
    from .report_more import more_rows, realistic_rows
    rows = [[label, broker] + cells + ratios
            for label, broker, cells, ratios in
            main_rows(results, sizes) + realistic_rows(extra)]
    main = grid(headers, rows) if rows else ''
    more = extra_rows(extra) + more_rows(extra)
    daemon = grid(['pscheduler only (Redis; SQLite job store unless said)',
                   'measured'], more) if more else ''
    target_rows = [[label, value, ratio,
                    {True: 'met', False: 'MISSED', None: '—'}[met]]
                   for label, value, ratio, met in targets(results, extra)]
    goal = grid(['target (issue 6; 18: issue 18)', 'measured', 'ratio', ''],
                target_rows)
    return main, daemon, goal


def header_lines(info):
    versions = ', '.join(f'{k} {v}' for k, v in info['packages'].items())
    servers = ', '.join(f'{k} {v}' for k, v in info['servers'].items())
    return [
        f'- date: {info["date"]}',
        f'- machine: {info["machine"]}',
        f'- load average (1 min) at start / end: {info["load_start"]:.2f} / '
        f'{info["load_end"]:.2f}',
        f'- servers: {servers} (all on loopback)',
        f'- packages: {versions}',
        f'- command: ``{info["command"]}`` ({info["duration"]:.0f} s, '
        f'{info["repeat"]} repetition(s), medians shown)',
        f'- pyramid_scheduler worker: {info["worker"]}',
    ]


def print_report(info, main, daemon, goal, errors, file=sys.stdout):
    print('\n'.join(header_lines(info)), file=file)
    for table in (main, daemon, goal):
        if table:
            print(file=file)
            print(table, file=file)
    if errors:
        print('\nerrors:', file=file)
        for e in errors:
            print('  ' + e, file=file)


RST_HEAD = """\
==========
Benchmarks
==========

pyramid_scheduler and pscheduler side by side with raw kombu, Celery and
Huey, on the same broker, in the same run. This page is written by the
benchmark command; do not edit it by hand (the method is in
``bench/__init__.py`` and below).

.. code-block:: bash

   pip install -e '.[redis,amqp,bench]'
   python -m bench                 # everything, medians of 3 (~30 min here)
   python -m bench --quick         # smaller counts, one repetition, writes
                                   # nothing (~3 min here)
   python -m bench --brokers redis --cases enqueue,latency
   python -m bench --cases 8,9,10,11   # or realistic,soak,costs,million

Results
=======

"""

RST_METHOD = """
Method
======

- Every process the benchmark starts (workers, pscheduler) is in its own
  process group and is stopped at the end; one worker runs at a time.
  Traffic is on loopback; Redis databases 10-15 and queue names unique to
  the run keep it apart from the test suite.
- Jobs record ``time.time()`` when they start to a FIFO the benchmark reads
  (one ``write()`` per job): ``bench/jobs.py``.
- **Enqueue**: ``request.scheduler.add_async_job(noop)`` inside a request
  made with ``pyramid.scripting.prepare`` (threadlocals pushed, no
  pyramid_tm, so the message is sent inside the timed call), after 200
  warm-up calls, worker stopped. Peers: Celery ``task.delay()``, Huey
  ``task()``, kombu ``Producer.publish`` on one connection to a named
  direct exchange (its ordinary setup); pyramid_scheduler publishes to the
  default exchange.
- **Throughput**: 20,000 jobs (SQLite: 3,000, so that raw kombu's
  SQLAlchemy transport fits the time budget) are queued while the worker
  is stopped, then
  the worker starts; the rate is taken from the first to the last job's
  start. pyramid_scheduler runs ``python -m pscheduler`` (one queue: master
  + one child, ``scheduler.executor.size`` 4), then again with two children
  for the queue (``scheduler.processes = 2``, its own row); Celery prefork
  ``-c 2``;
  Huey ``-w 2 -k process``; kombu one consumer process, prefetch 100,
  ack after the job.
- **Time to execution**: one job at a time (200, or as many as fit in
  8 s), the next one a random
  0-10 ms (SQLite: 0-100 ms, raw kombu on SQLite 0-1 s, its polling
  interval) after the previous one ran; from just before the add call to
  the job's start.
- **Date-job lateness**: each job is added for 2 s after its own add call,
  one every 5 ms; scheduled time to the job's start. Celery:
  ``apply_async(eta=...)``; Huey: ``schedule(eta=...)`` (its scheduler
  looks every second; run on Redis only, it is the same on SQLite).
- **Idle CPU**: CPU time (``/proc/PID/task/*/schedstat``, ns) of the
  worker's job-running processes (for pscheduler, the child; for Huey, the
  consumer and its workers) over a quiet 4 s window, after a 2 s settle.
- **Cron jobs**: cron jobs (``crontab`` varying the minute and hour,
  starting in two days) are sent with ``add_cron_job`` and timed until the
  child has stored them all; the rest of the count is written straight to
  the child's job store table, in the format the child writes (so that the
  measures after it see the full count within the run's time budget).
- **Daemon**: each SIGKILL is done on a freshly started pscheduler (the
  master's first restart, after its 0.1 s backoff); the job that shows the
  queue is served again is sent once the killed process is gone (see the
  note on Redis below).
- Cases 5, 6 and 11 show medians of 3 tries inside one run; cases 8 and 10
  medians of the repetitions; case 9 is one run.
- **Realistic jobs** (8, Redis): a burst of 2,000 jobs that each sleep
  5 ms, then 2,000 that each burn 5 ms of their thread's CPU time, added
  as fast as the producer can to a running worker with 1, 2 and 4
  processes per queue (pscheduler ``scheduler.processes``, 4 threads per
  child; Celery prefork ``-c N``; Huey ``-w N -k process``). Jobs/s from
  the first to the last job's start; time to execution from the add call
  to the job's start, including the wait behind the rest of the burst.
  Raw kombu has no pool of processes: not run (``bench/realistic.py``).
- **A million jobs through one child** (9, pscheduler on Redis): rounds
  of 100,000 no-op jobs; the child is paused (SIGSTOP) while a round is
  added and resumed (SIGCONT), so the round's rate (first to last start)
  is the child's, not the producer's; its RSS is read after each round.
  The same child runs every round (``bench/soak.py``).
- **Costs** (10, pscheduler on Redis, one child): the throughput case
  (20,000 jobs) with the status records in the SQLite file and in
  PostgreSQL (there is no setting that turns status records off: where
  they go is the choice), without and with ``scheduler.metrics.bind``, and
  with ``/metrics`` scraped every 100 ms during the run; jobs committed
  through the outbox, 100 per transaction (explicit ``transaction``
  manager); and 1,000 rounds of begin, ``add_async_job``, commit with
  ``scheduler.transactional`` on (the outbox, with its fsync) and off
  (sent at once). PostgreSQL: ``PSCHEDULER_BENCH_PG_URL`` (default the
  local ``pscheduler_test`` database; the run's tables are dropped after)
  (``bench/costs.py``).
- **A million stored cron jobs** (11, pscheduler on Redis, SQLite job
  store): written to the job store table while no daemon runs
  (``bench.daemon.bulk_load``); then pscheduler start to a job run by its
  child (twice), the child's RSS, ``pscheduler --message jobs``, five
  dashboard pages (overview, the first, middle and last page of the
  scheduled jobs, a job; served in the benchmark's process through
  WebTest, their admin commands over the broker; a page whose answer
  does not come within the dashboard's 3 s says so) and ``GET /metrics`` once the
  master counts the stored jobs (``bench/million.py``).
"""


def write_rst(path, info, main, daemon, goal, errors, notes):
    parts = [RST_HEAD, '\n'.join(header_lines(info)), '\n']
    parts += ['\n', main, '\n']
    if daemon:
        parts += ['\n', daemon, '\n']
    parts += ['\nTargets\n=======\n\n', goal, '\n']
    if errors:
        parts += ['\nErrors in this run::\n\n']
        parts += [''.join('   ' + line + '\n' for line in e.splitlines())
                  for e in errors]
    parts.append(RST_METHOD)
    if notes:
        parts += ['\n', notes]
    with open(path, 'w', encoding='utf-8') as f:
        f.write(''.join(parts))


def now_text():
    return datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')


NOTES = """\
Reading the numbers
===================

- This is a 2-core machine shared with other work: the load average at the
  start and the end of the run is printed above. Ratios from one run (the
  same load for every system) are more telling than the absolute numbers.
- Time to execution and date-job lateness include the FIFO write of the
  job (a few µs) and nothing of the benchmark's own waiting.
- Date-job lateness at one job every 5 ms (200 deferred jobs a second)
  measures the job store as much as the timer: each date job is one
  insert and one delete in the queue's SQLite job store, each its own
  commit. When commits fall behind, lateness grows along the run instead
  of staying at the timer's precision.
- pscheduler's "time to a job run after SIGKILL" sends its job once the
  killed child is gone. With kombu's own Redis transport (``BRPOP``), a job
  pushed while the dying child still had its ``BRPOP`` pending was lost in
  every try while this benchmark was written (in neither the queue nor
  kombu's unacked hash afterwards); pyramid_scheduler's Redis transport
  (``BRPOPLPUSH`` into a fetched list,
  ``pyramid_scheduler/transports/redis/channel.py``)
  closes that window, and such a job was served by the new child in every
  try since. Celery and raw kombu on Redis still have the window.
- ``bench/psworker.py`` runs the same Runtime as a pscheduler child in one
  process, with switches (environment variables, see its docstring) that
  measure suggested changes without editing the package; the benchmark's
  own cases use ``python -m pscheduler``.
"""
