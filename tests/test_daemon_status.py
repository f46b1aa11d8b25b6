"""Every process answers: ``status`` and ``ping`` show the whole daemon,
and the master serves Prometheus metrics (issue 16).

Real daemons: a child is really SIGKILLed, the metrics are really scraped
over HTTP and parsed with prometheus_client's own parser.
"""
import datetime
import json
import os
import signal
import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pscheduler import exitcodes
from tests import jobs
from tests.daemon_helpers import (
    _free_port, producer, run_cli, wait_for, write_ini)

pytestmark = pytest.mark.slow


def status_json(ini):
    done = run_cli('--message', 'status', '--json', ini=ini)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def the_daemon(ini):
    daemons = status_json(ini)['daemons']
    assert len(daemons) == 1, daemons
    return daemons[0]


def children_of(daemon, queue=None):
    return {(p['queue'], p['slot']): p for p in daemon['processes']
            if p['role'] == 'child' and queue in (None, p['queue'])}


def executed(daemon, queue, key='since_daemon_start'):
    return sum(p[key]['executed'] for p in children_of(daemon, queue).values())


def test_status_lists_every_process_and_counters_survive_a_killed_child(
        tmp_path, broker_for, daemons):
    settings = broker_for('redis', **{'scheduler.processes': '2'})
    ini = write_ini(tmp_path / 'app.ini', queues=('alpha', 'beta'),
                    settings=settings)
    daemon = daemons(ini)
    pids = daemon.wait_ready(['alpha #1', 'alpha #2', 'beta #1', 'beta #2'])

    view = the_daemon(ini)
    assert view['master_pid'] == daemon.pid
    assert view['host'] == socket.gethostname()
    roles = sorted((p['role'], p['queue'] or '', p['slot'] or 0, p['pid'])
                   for p in view['processes'])
    assert roles == sorted(
        [('master', '', 0, daemon.pid)]
        + [('child', name.split(' #')[0], int(name[-1]) - 1, pid)
           for name, pid in pids.items()])
    for process in view['processes']:
        assert process['rss'] > 0 and process['cpu'] >= 0
        assert process['uptime'] >= 0
    owners = {key: p['owns_jobstore'] for key, p in children_of(view).items()}
    assert owners == {('alpha', 0): True, ('alpha', 1): False,
                      ('beta', 0): True, ('beta', 1): False}
    assert all(p['scheduler_alive'] for p in children_of(view).values()
               if p['owns_jobstore'])
    owners = {reply['queue']: reply['result']['store_owner']
              for reply in status_json(ini)['replies']}
    assert owners == {
        queue: {'host': socket.gethostname(), 'pid': pids[f'{queue} #1']}
        for queue in ('alpha', 'beta')}

    out = str(tmp_path / 'out')
    with producer(ini) as scheduler:
        for n in range(20):
            scheduler.add_async_job(jobs.record, args=(out, n), queue='alpha')
        wait_for(lambda: executed(the_daemon(ini), 'alpha') == 20, 60,
                 what='20 jobs counted')
        view = the_daemon(ini)
        busiest = max(children_of(view, 'alpha').values(),
                      key=lambda p: p['since_start']['executed'])
        before = busiest['since_daemon_start']['executed']
        assert before == busiest['since_start']['executed'] > 0

        os.kill(busiest['pid'], signal.SIGKILL)
        key = ('alpha', busiest['slot'])

        def replaced():
            child = children_of(the_daemon(ini)).get(key)
            return (child if child and child['pid'] != busiest['pid']
                    and child['state'] == 'ready' else None)
        child = wait_for(replaced, 60, what='the killed child replaced')
        assert child['since_start']['executed'] == 0
        assert child['since_daemon_start']['executed'] == before
        view = the_daemon(ini)
        assert executed(view, 'alpha') == 20
        assert view['restarts'] == [{'queue': 'alpha',
                                     'slot': busiest['slot'],
                                     'reason': 'killed', 'count': 1}]

        scheduler.add_async_job(jobs.record, args=(out, 'after'),
                                queue='alpha')
        wait_for(lambda: executed(the_daemon(ini), 'alpha') == 21, 60,
                 what='the 21st job counted')

    text = run_cli('--message', 'status', ini=ini).stdout
    assert (f'job store owner: {socket.gethostname()} pid '
            f'{pids["beta #1"]}') in text
    assert f'daemon on {socket.gethostname()}: master {daemon.pid}' in text
    assert f'alpha #{busiest["slot"] + 1} killed x1' in text
    ping = run_cli('--message', 'ping', ini=ini)
    assert ping.returncode == 0
    assert f'  {child["pid"]} child alpha #{busiest["slot"] + 1} ready' \
        in ping.stdout


def scrape(port):
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics',
                                timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples[(sample.name, labels)] = sample.value
    return samples


def value(samples, name, **labels):
    """A sample's value, summed over the labels not given."""
    return sum(v for (n, sample_labels), v in samples.items()
               if n == name and labels.items() <= dict(sample_labels).items())


@pytest.mark.parametrize('broker', ('sqlite', 'redis', 'rabbitmq'))
def test_metrics_move_as_jobs_run_fail_and_retry(tmp_path, broker_for,
                                                 daemons, broker):
    port = _free_port()
    settings = broker_for(broker, **{
        'scheduler.metrics.bind': f'127.0.0.1:{port}',
        'scheduler.retry.retries': '1', 'scheduler.retry.backoff': '0'})
    ini = write_ini(tmp_path / 'app.ini', settings=settings)
    daemon = daemons(ini)
    pids = daemon.wait_ready(['jobs'])
    samples = wait_for(lambda: scrape(port), 30, what='a first scrape')
    assert value(samples, 'pscheduler_processes', queue='jobs',
                 state='ready') == 1
    assert value(samples, 'pscheduler_jobstore_owner', queue='jobs') == 1
    view = the_daemon(ini)
    metrics_process, = [p for p in view['processes']
                        if p['role'] == 'metrics']
    assert metrics_process['state'] == 'serving'

    def outcome(name):
        return value(scrape(port), 'pscheduler_jobs_total', queue='jobs',
                     outcome=name)

    out = str(tmp_path / 'out')
    with producer(ini) as scheduler:
        for n in range(3):
            scheduler.add_async_job(jobs.record, args=(out, n))
        wait_for(lambda: outcome('succeeded') == 3, 30, what='3 succeeded')
        scheduler.add_async_job(jobs.fail, args=('boom',))
        wait_for(lambda: outcome('failed') == 1, 30, what='1 failed')
        samples = scrape(port)
        assert value(samples, 'pscheduler_jobs_total',
                     outcome='retried') == 1
        assert value(samples, 'pscheduler_job_duration_seconds_count',
                     queue='jobs') == 5   # 3 runs, a failed one, its retry
        assert value(samples, 'pscheduler_failed_jobs', queue='jobs') in (
            0, 1)   # counted every 5s
        wait_for(lambda: value(scrape(port), 'pscheduler_failed_jobs',
                               queue='jobs') == 1, 30,
                 what='the failed registry counted')

        # Deferred runs so far: the retry, when the broker stored it.
        late_runs = value(scrape(port),
                          'pscheduler_job_lateness_seconds_count')
        now = datetime.datetime.now(datetime.timezone.utc)
        scheduler.add_date_job(jobs.record, now, args=(out, 'due'))
        for n in range(2):
            scheduler.add_date_job(jobs.record,
                                   now + datetime.timedelta(days=1),
                                   args=(out, n))
        wait_for(lambda: value(scrape(port),
                               'pscheduler_job_lateness_seconds_count',
                               queue='jobs') == late_runs + 1, 30,
                 what='the due run measured')
        wait_for(lambda: value(scrape(port), 'pscheduler_scheduled_jobs',
                               queue='jobs') == 2, 30,
                 what='2 stored jobs counted')
        assert value(scrape(port), 'pscheduler_queue_depth',
                     queue='jobs') == 0
        assert value(scrape(port), 'pscheduler_dead_letters',
                     queue='jobs') == 0

        os.kill(pids['jobs'], signal.SIGKILL)
        wait_for(lambda: value(scrape(port), 'pscheduler_child_restarts_total',
                               queue='jobs', reason='killed') == 1, 30,
                 what='the restart counted')
        wait_for(lambda: value(scrape(port), 'pscheduler_processes',
                               queue='jobs', state='ready') == 1, 60,
                 what='the new child ready')
        samples = scrape(port)
        assert value(samples, 'pscheduler_jobs_total', outcome='succeeded') \
            == 4   # the child's counters outlive it
        scheduler.add_async_job(jobs.record, args=(out, 'after'))
        wait_for(lambda: outcome('succeeded') == 5, 30, what='5 succeeded')

    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    with pytest.raises(OSError):
        scrape(port)


def test_a_taken_metrics_address_stops_the_start(tmp_path, broker_for):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = broker_for('redis', **{
            'scheduler.metrics.bind': f'127.0.0.1:{port}'})
        ini = write_ini(tmp_path / 'app.ini', settings=settings)
        done = run_cli(ini=ini, timeout=60)
    assert done.returncode == exitcodes.CONFIG
    assert (f'setting "scheduler.metrics.bind": cannot listen on '
            f'127.0.0.1:{port}') in done.stderr
    assert 'choose another address' in done.stderr
