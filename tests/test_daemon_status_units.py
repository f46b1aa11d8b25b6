"""The parts of the whole-daemon status, without a daemon: why a restart
is counted, the table joined with metrics files, the command line's
table."""
import os
import subprocess
import sys
import textwrap
import types

import pytest

from pscheduler import exitcodes
from pscheduler.daemonreport import daemons_of, format_daemon
from pscheduler.handles import HUNG, MEMORY_LIMIT, RELOAD, SHUTDOWN
from pscheduler.message import format_duration
from pscheduler.processtable import restart_reason
from pyramid_scheduler.daemonview import daemon_view, write_table


@pytest.mark.parametrize('stop_reason, code, reason', [
    (None, -9, 'killed'),
    (None, 1, 'failed'),
    (None, 0, 'exited'),
    (None, exitcodes.HARD_TIME_LIMIT, 'hard_time_limit'),
    (HUNG, -9, 'no_heartbeat'),
    (MEMORY_LIMIT, 0, 'memory_limit'),
    (RELOAD, 0, 'reload'),
    (SHUTDOWN, 0, None),
])
def test_why_a_child_was_replaced(stop_reason, code, reason):
    child = types.SimpleNamespace(stop_reason=stop_reason)
    assert restart_reason(child, code) == reason


WRITE_METRICS = textwrap.dedent('''
    import sys
    from pyramid_scheduler.runtime.metrics import RuntimeMetrics
    metrics = RuntimeMetrics(['jobs'], slot=int(sys.argv[1]))
    for _ in range(int(sys.argv[2])):
        metrics.count('executed', 'jobs')
    metrics.count('failed', 'jobs')
    metrics.sample('jobs', in_flight=2, scheduler_alive=True,
                   owns_store=sys.argv[1] == '0')
    print(__import__('os').getpid())
''')


def write_metrics(directory, slot, executed):
    """Metrics files as a child writes them: another process, in
    prometheus_client's multiprocess mode; its pid."""
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(directory))
    done = subprocess.run([sys.executable, '-c', WRITE_METRICS, str(slot),
                           str(executed)], env=env, capture_output=True,
                          text=True, check=True)
    return int(done.stdout)


@pytest.mark.slow   # other processes write the files
def test_the_table_joined_with_the_files_of_live_and_dead_children(tmp_path):
    metrics = tmp_path / 'metrics'
    metrics.mkdir()
    dead = write_metrics(metrics, 0, executed=5)
    live = write_metrics(metrics, 0, executed=2)   # its replacement
    other = write_metrics(metrics, 1, executed=1)
    write_table(str(tmp_path), {
        'host': 'h', 'master_pid': os.getpid(), 'started': 1.0,
        'processes': [
            {'role': 'master', 'pid': os.getpid(), 'queue': None,
             'slot': None, 'state': 'running', 'started': 1.0},
            {'role': 'child', 'pid': live, 'queue': 'jobs', 'slot': 0,
             'state': 'ready', 'started': 2.0},
            {'role': 'child', 'pid': other, 'queue': 'jobs', 'slot': 1,
             'state': 'ready', 'started': 2.0}],
        'restarts': [{'queue': 'jobs', 'slot': 0, 'reason': 'killed',
                      'count': 1}]})
    view = daemon_view(str(tmp_path))
    master, owner, second = view['processes']
    assert master['rss'] > 0   # this process: psutil reads it
    assert owner['rss'] is None  # gone: nothing to read, no error
    assert owner['since_start'] == {'executed': 2, 'failed': 1, 'retried': 0}
    assert owner['since_daemon_start'] == {'executed': 7, 'failed': 2,
                                           'retried': 0}
    assert (owner['running'], owner['owns_jobstore'],
            owner['scheduler_alive']) == (2, True, True)
    assert second['since_daemon_start']['executed'] == 1
    assert second['owns_jobstore'] is False
    assert dead not in {p['pid'] for p in view['processes']}

    text = format_daemon(view, format_duration)
    assert 'daemon on h: master' in text
    assert 'restarts: jobs #1 killed x1' in text
    assert f'{live}  child   jobs #1' in text
    assert f'{other}  child   jobs #2' in text
    brief = format_daemon(view, format_duration, brief=True)
    assert f'  {other} child jobs #2 ready' in brief.splitlines()


def test_a_daemon_is_shown_once_whatever_the_queues_that_answer():
    daemon = {'host': 'h', 'master_pid': 1, 'processes': []}
    replies = [{'result': {'daemon': daemon}}, {'result': {'daemon': daemon}},
               {'result': {'daemon': {'host': 'g', 'master_pid': 1}}},
               {'result': {}}, {'error': 'boom'}]
    assert [d['host'] for d in daemons_of(replies)] == ['h', 'g']


def test_no_table_no_daemon(tmp_path):
    assert daemon_view(str(tmp_path)) is None


@pytest.mark.slow   # another process writes the files
def test_a_scrape_does_without_a_file_being_created(tmp_path):
    """An empty file (a process creating it this instant) fails
    prometheus_client's own collector, and only that file is left out."""
    from pscheduler.metricsserver import FilesCollector
    (tmp_path / 'counter_123.db').touch()
    write_metrics(tmp_path, 0, executed=3)
    samples = {(sample.name, sample.labels.get('outcome')): sample.value
               for family in FilesCollector(str(tmp_path)).collect()
               for sample in family.samples}
    assert samples[('pscheduler_jobs_total', 'succeeded')] == 3
