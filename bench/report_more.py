"""The rows of cases 8-11 in the report (bench.report builds the tables)."""
from .report import SYSTEMS, fmt, fmt_ratio

KIND_LABELS = {'io': '5 ms I/O wait (sleep)', 'cpu': '5 ms of CPU'}


def realistic_rows(extra):
    """Case 8 rows in the shape of bench.report.main_rows: jobs/s and p99
    time to execution per system; the ratios are of the jobs/s."""
    case = extra.get('realistic')
    if not case:
        return []
    if 'error' in case:
        return [('8. realistic jobs', 'Redis',
                 ['error: ' + case['error']] + ['—'] * (len(SYSTEMS) - 1),
                 ['—'] * 3)]
    rows = []
    counts = sorted({int(k.split('|')[2]) for k in case if '|' in k})
    for kind in ('io', 'cpu'):
        for count in counts:
            cells, rates = [], {}
            for system in SYSTEMS:
                r = case.get(f'{system}|{kind}|{count}')
                cells.append(_cell(r))
                if r and 'error' not in r:
                    rates[system] = r['rate']
            ours = rates.get('pyramid_scheduler')
            ratios = [fmt_ratio(ours / rates[p]) if ours and rates.get(p)
                      else '—' for p in ('kombu', 'celery', 'huey')]
            rows.append((f'8. {case["jobs"]:,} jobs of {KIND_LABELS[kind]}, '
                         f'{count} process{"es" if count > 1 else ""} per '
                         'queue: jobs/s, p99 time to execution', 'Redis',
                         cells, ratios))
    return rows


def _cell(r):
    if r is None:
        return '—'
    if 'error' in r:
        return 'error'
    return f'{fmt(r["rate"])}/s, {fmt(r["p99"])} ms'


def soak_rows(extra):
    soak = extra.get('soak')
    if not soak:
        return []
    if 'error' in soak:
        return [('9. async jobs through one child', 'error: ' + soak['error'])]
    n, every, rates = soak['jobs'], soak['every'], soak['rates']
    sizes = soak['rss_mb']
    return [
        (f'9. {n:,} async jobs through one child: jobs/s of the first / '
         f'last {every:,}', f'{fmt(rates[0])} / {fmt(rates[-1])} jobs/s'),
        (f'9. child RSS at start, then every {every:,} jobs',
         ', '.join(fmt(v) for v in sizes) + ' MB'),
        (f'9. child RSS growth over {n:,} jobs',
         f'{fmt(sizes[-1] - sizes[0])} MB '
         f'({fmt((sizes[-1] - sizes[0]) * 1e6 / n)} bytes a job)'),
    ]


COST_LABELS = [
    ('sqlite', 'status records in the SQLite file (default)'),
    ('postgres', 'status records in PostgreSQL (scheduler.jobstore.url)'),
    ('metrics_on', 'scheduler.metrics.bind set, not scraped'),
    ('metrics_scraped', '/metrics scraped every 100 ms'),
    ('outbox', 'jobs committed through the outbox, 100 a transaction'),
]


def costs_rows(extra):
    costs = extra.get('costs')
    if not costs:
        return []
    if 'error' in costs:
        return [('10. costs', 'error: ' + costs['error'])]
    rows = []
    for key, label in COST_LABELS:
        r = costs['throughput'].get(key) or {}
        text = (fmt(r.get('rate'), '/s') if 'rate' in r else
                'error: ' + r.get('error', '?')[:100])
        if r.get('partial'):
            text += ' (cut)'
        if key == 'metrics_scraped' and 'scrape_p50' in r:
            text += (f' (scrape {fmt(r["scrape_p50"])} / '
                     f'{fmt(r["scrape_p99"])} ms p50 / p99, '
                     f'{r["scrapes"]:.0f} scrapes)')
        rows.append((f'10. throughput, {costs["jobs"]:,} queued jobs, '
                     f'{label}', text))
    commit = costs['commit']
    rows.append((f'10. begin + add one job + commit ({costs["rounds"]:,} '
                 'rounds), p50 / p99: outbox (scheduler.transactional on) /'
                 ' sent at once (off)',
                 f'{fmt(commit["outbox"]["p50"])} / '
                 f'{fmt(commit["outbox"]["p99"])} µs / '
                 f'{fmt(commit["direct"]["p50"])} / '
                 f'{fmt(commit["direct"]["p99"])} µs'))
    return rows


def million_rows(extra):
    case = extra.get('million')
    if not case:
        return []
    if 'error' in case:
        return [('11. a million stored cron jobs', 'error: ' + case['error'])]
    n = case['jobs']
    rows = [
        (f'11. {n:,} cron jobs written to the job store (bench shortcut)',
         f'{fmt(case["load_s"])} s'),
        (f'11. {n:,} stored: pscheduler start to a job run by its child',
         f'{fmt(case["start_s"])} s'),
        (f'11. {n:,} stored: child RSS after start / after the pages',
         f'{fmt(case["rss_mb"])} / {fmt(case["rss_after_mb"])} MB'),
        (f'11. {n:,} stored: `pscheduler --message jobs` (CLI wall time) / '
         'the same command from a loaded process',
         f'{fmt(case["jobs_cli_s"])} s / '
         f'{fmt(case["jobs_rt_s"] * 1000)} ms'),
        (f'11. {n:,} stored: the last page of `jobs` (offset '
         f'{max(n - 50, 0):,}) from a loaded process, once',
         f'{fmt(case["jobs_last_rt_s"])} s'),
    ]
    rows += [(f'11. {n:,} stored: dashboard, {label}',
              ms if isinstance(ms, str) else f'{fmt(ms)} ms')
             for label, ms in case['pages']]
    rows.append((f'11. {n:,} stored: metrics scrape (GET /metrics)',
                 f'{fmt(case["scrape_ms"])} ms'))
    return rows


def more_rows(extra):
    """Rows of cases 9-11 for the pscheduler table."""
    return soak_rows(extra) + costs_rows(extra) + million_rows(extra)
