"""The benchmark's cases 8-11: their command line, the medians of their
repetitions and their rows in the report (pure functions; the cases
themselves run with ``python -m bench --quick --cases 8,9,10,11``)."""
import pytest

pytest.importorskip('psutil')

from bench import __main__ as bench_main  # noqa: E402
from bench import extracases, report, report_more  # noqa: E402


def test_the_new_cases_are_chosen_by_number_or_name():
    by_number = bench_main.parse_args(['--cases', '8,9,10,11'])
    by_name = bench_main.parse_args(['--cases',
                                     'realistic,soak,costs,million'])
    assert by_number.cases == by_name.cases == [
        'realistic', 'soak', 'costs', 'million']
    assert bench_main.parse_args([]).cases[-4:] == by_number.cases


def test_an_unknown_case_is_refused():
    with pytest.raises(SystemExit):
        bench_main.parse_args(['--cases', '12'])


def test_medians_walk_through_dicts_and_lists_and_skip_failed_runs():
    runs = [{'a': {'rate': 1.0}, 'pages': [['x', 3.0]], 'jobs': 10},
            {'a': {'rate': 5.0}, 'pages': [['x', 1.0]], 'jobs': 10},
            {'a': {'rate': 2.0}, 'pages': [['x', 2.0]], 'jobs': 10},
            {'error': 'broker gone'}]
    assert extracases.median_nested(runs) == {
        'a': {'rate': 2.0}, 'pages': [['x', 2.0]], 'jobs': 10}
    assert extracases.median_nested([{'error': 'x'}]) == {'error': 'x'}


EXTRA = {
    'realistic': {'jobs': 2000,
                  'pyramid_scheduler|io|1': {'rate': 800.0, 'p50': 1.0,
                                             'p99': 2.0},
                  'celery|io|1': {'rate': 200.0, 'p50': 1.0, 'p99': 9.0},
                  'huey|io|1': {'error': 'no consumer'},
                  'pyramid_scheduler|cpu|1': {'rate': 190.0, 'p50': 1.0,
                                              'p99': 2.0}},
    'soak': {'jobs': 300, 'every': 100, 'rates': [10.0, 9.0, 8.0],
             'rss_mb': [60.0, 61.0, 62.0, 63.0]},
    'costs': {'jobs': 20, 'rounds': 5, 'throughput': {
        'sqlite': {'rate': 100.0}, 'postgres': {'rate': 90.0},
        'metrics_on': {'rate': 99.0},
        'metrics_scraped': {'rate': 98.0, 'scrapes': 3, 'scrape_p50': 1.0,
                            'scrape_p99': 2.0},
        'outbox': {'rate': 50.0, 'partial': True}},
        'commit': {'outbox': {'p50': 300.0, 'p99': 600.0},
                   'direct': {'p50': 60.0, 'p99': 90.0}}},
    'million': {'error': 'timed out'},
}


def test_case_8_rows_have_a_cell_per_system_and_ratios_of_jobs_per_second():
    rows = report_more.realistic_rows(EXTRA)
    io = [r for r in rows if 'I/O' in r[0] and '1 process' in r[0]][0]
    assert io[2] == ['800/s, 2.00 ms', '—', '200/s, 9.00 ms', 'error']
    assert io[3] == ['—', '4.00×', '—']


def test_cases_9_to_11_rows_say_what_was_measured_or_what_failed():
    rows = dict(report_more.more_rows(EXTRA))
    assert rows['9. 300 async jobs through one child: jobs/s of the first '
                '/ last 100'] == '10.0 / 8.00 jobs/s'
    assert '3.00 MB (10,000 bytes a job)' in rows[
        '9. child RSS growth over 300 jobs']
    outbox = [v for k, v in rows.items() if 'outbox, 100' in k][0]
    assert outbox == '50.0/s (cut)'
    assert rows['11. a million stored cron jobs'] == 'error: timed out'


def test_the_tables_hold_the_new_rows():
    main, more, _ = report.tables({}, EXTRA, {})
    assert '8. 2,000 jobs of 5 ms I/O wait' in main
    assert '10. begin + add one job + commit' in more
