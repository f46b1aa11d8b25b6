"""The pscheduler daemon, run for real: subprocesses, signals, a real broker.

The embedded SQLite broker (the default) serves most tests; the Redis ones
use a unique scheduler.id each. Every daemon runs in its own process group,
killed by the ``daemons`` fixture whatever happens.
"""
import json
import os
import signal
import socket
import time

import psutil
import pytest

from tests import jobs
from tests.daemon_helpers import (
    REPO_ROOT, NotifySocket, child_env, delete_redis_keys, is_gone,
    producer, redis_settings, run_cli, start_cli, stored_job_ids, title,
    wait_for, write_ini)

# Not in the fast lane (pytest -m "not slow"): starts pscheduler daemons.
pytestmark = pytest.mark.slow


def test_one_child_per_queue_with_titles(tmp_path, daemons):
    import_log = tmp_path / 'imports.log'
    ini = write_ini(tmp_path / 'app.ini', queues=('jobs', 'mail'))
    env = child_env(PSCHEDULER_TEST_IMPORT_LOG=import_log)
    daemon = daemons(ini, env=env)
    pids = daemon.wait_ready({'jobs', 'mail'})

    master = psutil.Process(daemon.pid)
    assert title(master) == f'pscheduler: master [{ini}]'
    assert {queue: title(psutil.Process(pid)) for queue, pid in pids.items()} \
        == {'jobs': 'pscheduler: queue jobs', 'mail': 'pscheduler: queue mail'}
    # The master stays single-threaded and never imports the application.
    assert master.num_threads() == 1
    importers = {int(line) for line in import_log.read_text().split()}
    assert daemon.pid not in importers
    assert set(pids.values()) <= importers, daemon.log()

    # Each child runs the jobs of its own queue.
    records = tmp_path / 'records.jsonl'
    with producer(ini) as scheduler:
        scheduler.add_async_job(jobs.record, args=(str(records), 'to-jobs'))
        scheduler.add_async_job(jobs.record, args=(str(records), 'to-mail'),
                                queue='mail')
    ran = wait_for(lambda: len(jobs.read_records(records)) == 2
                   and jobs.read_records(records), what='both jobs')
    assert {r['values'][0]: r['pid'] for r in ran} == {
        'to-jobs': pids['jobs'], 'to-mail': pids['mail']}


def test_queue_option_serves_only_the_named_queue(tmp_path, daemons):
    ini = write_ini(tmp_path / 'app.ini', queues=('jobs', 'mail', 'reports'))
    daemon = daemons(ini, '-q', 'mail', '--queue', 'reports')
    assert set(daemon.wait_ready({'mail', 'reports'})) == {'mail', 'reports'}


@pytest.mark.parametrize('broker', ['sqlite', 'redis'])
def test_sigkilled_child_is_replaced_within_a_second(tmp_path, daemons,
                                                     broker):
    settings = redis_settings() if broker == 'redis' else {}
    ini = write_ini(tmp_path / 'app.ini', queues=('jobs', 'mail'),
                    settings=settings)
    try:
        daemon = daemons(ini)
        before = daemon.wait_ready({'jobs', 'mail'})
        records = tmp_path / 'records.jsonl'

        os.kill(before['jobs'], signal.SIGKILL)
        killed_at = time.monotonic()
        # A job sent while no child serves the queue waits in the broker.
        with producer(ini) as scheduler:
            scheduler.add_async_job(jobs.record,
                                    args=(str(records), 'meanwhile'))
        after = wait_for(
            lambda: (pids := daemon.child_pids()).get('jobs') not in
            (None, before['jobs']) and pids, timeout=5, interval=0.02,
            what='a new child for queue jobs')
        assert time.monotonic() - killed_at < 1.0, daemon.log()
        assert after['mail'] == before['mail']  # the other queue is untouched

        ran = wait_for(lambda: jobs.read_records(records), what='the job')
        assert [(r['values'], r['pid']) for r in ran] == [
            (['meanwhile'], after['jobs'])]
        assert 'died (killed by SIGKILL)' in daemon.log()

        ping = run_cli('--message', 'ping', ini=ini)
        assert ping.returncode == 0, ping.stderr
        assert ping.stdout.splitlines()[:3] == [
            f'queue jobs (pid {after["jobs"]}): pong',
            f'queue mail (pid {after["mail"]}): pong',
            f'daemon on {socket.gethostname()}: master {daemon.pid}; '
            'processes:']
        # The killed child is gone from the daemon's processes.
        assert f'  {after["jobs"]} child jobs ready' in ping.stdout
        assert f' {before["jobs"]} ' not in ping.stdout
    finally:
        if broker == 'redis':
            delete_redis_keys(settings)


def test_sighup_reloads_queues_and_settings_one_child_at_a_time(
        tmp_path, daemons):
    ini = write_ini(tmp_path / 'app.ini', queues=('jobs',),
                    settings={'test.marker': 'before'})
    notify = NotifySocket()
    try:
        daemon = daemons(ini, env=child_env(NOTIFY_SOCKET=notify.path))
        before = daemon.wait_ready({'jobs'})
        wait_for(lambda: notify.keys() == ['READY'], what='READY=1')

        # A date job stored by the old child must fire once, after the reload.
        records = tmp_path / 'records.jsonl'
        with producer(ini) as scheduler:
            job_id = scheduler.add_date_job(
                jobs.record, time.time() + 4, args=(str(records), 'date'))
        wait_for(lambda: stored_job_ids(ini, 'jobs') == [job_id],
                 what='the date job in the store')

        write_ini(ini, queues=('jobs', 'mail'),
                  settings={'test.marker': 'after',
                            'scheduler.shutdown_timeout': '7s'})
        daemon.send_signal(signal.SIGHUP)
        after = daemon.wait_ready({'jobs', 'mail'}, count=2)
        assert after['jobs'] != before['jobs']
        assert daemon.log_count('restarting the child of queue jobs') == 1
        assert daemon.log_count('restarting the child of queue mail') == 0
        assert notify.keys() == ['READY', 'RELOADING', 'READY']

        # Both children run the new settings.
        settings_seen = tmp_path / 'settings.jsonl'
        with producer(ini) as scheduler:
            for queue in ('jobs', 'mail'):
                scheduler.add_async_job(
                    jobs.record_setting,
                    args=(str(settings_seen), 'test.marker'), queue=queue)
        seen = wait_for(lambda: len(jobs.read_records(settings_seen)) == 2
                        and jobs.read_records(settings_seen), what='settings')
        assert {(r['pid'], r['values'][1]) for r in seen} == {
            (after['jobs'], 'after'), (after['mail'], 'after')}

        # Once, by the new child: the old one was gone before it started.
        wait_for(lambda: jobs.read_records(records), timeout=15,
                 what='the date job')
        wait_for(lambda: stored_job_ids(ini, 'jobs') == [],
                 what='the date job removed from its store')
        assert [(r['values'], r['pid']) for r in jobs.read_records(records)] \
            == [(['date'], after['jobs'])]
        log = daemon.log()
        assert log.index(f'child {before["jobs"]} (queue jobs) exited') < \
            log.index(f'started child {after["jobs"]} for queue jobs')

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait_exit() == 0
        assert notify.keys()[-1] == 'STOPPING'
    finally:
        notify.close()


def test_reload_keeps_running_when_the_new_ini_is_invalid(tmp_path, daemons):
    ini = write_ini(tmp_path / 'app.ini')
    daemon = daemons(ini)
    before = daemon.wait_ready({'jobs'})
    write_ini(ini, settings={'scheduler.shutdown_timeout': 'soonish'})
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_log('reload failed; the children keep running')
    assert 'scheduler.shutdown_timeout' in daemon.log()
    assert daemon.child_pids() == before


@pytest.mark.parametrize('signals_sent', [1, 2],
                         ids=['once', 'twice-at-once'])
def test_sigterm_lets_the_running_job_finish(tmp_path, daemons,
                                             signals_sent):
    """Twice at once is what timeout(1) or a shell trap plus a group kill
    send: still one graceful stop."""
    ini = write_ini(tmp_path / 'app.ini', queues=('jobs', 'mail'))
    pidfile = tmp_path / 'pscheduler.pid'
    daemon = daemons(ini, '--pidfile', str(pidfile))
    children = daemon.wait_ready({'jobs', 'mail'})
    assert pidfile.read_text().strip() == str(daemon.pid)

    records = tmp_path / 'records.jsonl'
    with producer(ini) as scheduler:
        scheduler.add_async_job(jobs.record_around_sleep,
                                args=(str(records), 2, 'slow'))
    wait_for(lambda: jobs.read_records(records), what='the job to start')
    master = psutil.Process(daemon.pid)
    for _ in range(signals_sent):
        daemon.send_signal(signal.SIGTERM)

    # While the child drains, the master waits without spinning.
    cpu_before, measured_from = sum(master.cpu_times()[:2]), time.monotonic()
    wait_for(lambda: time.monotonic() - measured_from >= 1, what='1s')
    assert sum(master.cpu_times()[:2]) - cpu_before < 0.2
    assert daemon.wait_exit(timeout=20) == 0
    steps = [r['values'][1] for r in jobs.read_records(records)]
    assert steps == ['start', 'end']
    assert all(is_gone(pid) for pid in children.values())
    assert daemon.group_members() == []
    assert not pidfile.exists()


def test_second_instance_with_the_same_pidfile_refuses(tmp_path, daemons):
    ini = write_ini(tmp_path / 'app.ini')
    pidfile = tmp_path / 'pscheduler.pid'
    first = daemons(ini, '--pidfile', str(pidfile))
    first.wait_ready({'jobs'})
    second = run_cli('--pidfile', str(pidfile), ini=ini)
    assert second.returncode == 21, second.stderr
    assert f'names pscheduler process {first.pid}' in second.stderr
    assert pidfile.read_text().strip() == str(first.pid)


@pytest.mark.parametrize('app, settings, code, message', [
    ('tests.apps.broken:main', {'scheduler.child.boot_failures': 3}, 20,
     "No module named 'pscheduler_test_module_that_does_not_exist'"),
    ('tests.apps.noscheduler:main', {}, 10,
     'does not include pyramid_scheduler'),
    ('tests.apps.simple:main', {'scheduler.combined': 'true'}, 11,
     'scheduler.combined = true'),
    ('tests.apps.combined_in_code:main', {}, 11, 'runs its jobs itself'),
    ('tests.apps.simple:main', {'scheduler.shutdown_timeout': 'soonish'}, 3,
     'scheduler.shutdown_timeout'),
], ids=['import-error', 'no-include', 'combined-ini', 'combined-code',
        'bad-setting'])
def test_start_failures_stop_with_their_exit_code(tmp_path, daemons, app,
                                                  settings, code, message):
    ini = write_ini(tmp_path / 'app.ini', app=app, settings=settings)
    started = time.monotonic()
    daemon = daemons(ini)
    assert daemon.wait_exit(timeout=30) == code, daemon.log()
    assert time.monotonic() - started < 10
    assert message in daemon.log()
    assert daemon.group_members() == []
    if code == 20:
        assert 'failed to start 3 times in a row' in daemon.log()


def test_children_killed_while_starting_do_not_stop_the_master(tmp_path,
                                                               daemons):
    """SIGKILL from outside is not the application failing to start: more
    of them than scheduler.child.boot_failures must not end in exit 20."""
    ini = write_ini(tmp_path / 'app.ini',
                    settings={'scheduler.child.boot_failures': 2})
    daemon = daemons(ini)
    killed = []
    for _ in range(4):
        pid = wait_for(lambda: next((p for p in daemon.child_pids().values()
                                     if p not in killed), None),
                       interval=0.01, what='a new child starting')
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    assert daemon.log_count('stopped from outside while starting') >= 3, \
        daemon.log()

    pids = daemon.wait_ready({'jobs'})
    assert pids['jobs'] not in killed
    assert daemon.process.poll() is None
    assert 'failed to start' not in daemon.log()
    records = tmp_path / 'records.jsonl'
    with producer(ini) as scheduler:
        scheduler.add_async_job(jobs.record, args=(str(records), 'after'))
    ran = wait_for(lambda: jobs.read_records(records), what='the job')
    assert [(r['values'], r['pid']) for r in ran] == [(['after'],
                                                       pids['jobs'])]


def test_unknown_queue_option_lists_the_configured_queues(tmp_path):
    ini = write_ini(tmp_path / 'app.ini', queues=('jobs', 'mail'))
    result = run_cli('-q', 'nope', ini=ini)
    assert result.returncode == 2
    assert "unknown queue 'nope'" in result.stderr
    assert 'jobs, mail' in result.stderr


def test_restart_option_starts_again_after_a_boot_loop(tmp_path, daemons):
    ini = write_ini(tmp_path / 'app.ini', app='tests.apps.broken:main',
                    settings={'scheduler.child.boot_failures': 1})
    daemon = daemons(ini, '--restart', '--restart-interval', '0.5')
    daemon.wait_log('--restart: starting again', count=2)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(timeout=10) == 0


def test_killed_master_takes_its_children_along(tmp_path, daemons):
    ini = write_ini(tmp_path / 'app.ini', queues=('jobs', 'mail'))
    daemon = daemons(ini)
    children = daemon.wait_ready({'jobs', 'mail'})
    daemon.send_signal(signal.SIGKILL)
    wait_for(lambda: all(is_gone(pid) for pid in children.values()),
             timeout=5, what='the orphaned children to exit')


def test_hung_child_is_killed_and_replaced(tmp_path, daemons):
    ini = write_ini(tmp_path / 'app.ini',
                    settings={'scheduler.child.heartbeat_timeout': '1.5s'})
    daemon = daemons(ini)
    before = daemon.wait_ready({'jobs'})
    os.kill(before['jobs'], signal.SIGSTOP)  # alive, but silent
    wait_for(lambda: daemon.child_pids().get('jobs') not in
             (None, before['jobs']), timeout=10, what='a replacement child')
    assert 'sent no heartbeat' in daemon.log()
    wait_for(lambda: is_gone(before['jobs']), what='the hung child killed')


def test_child_over_its_memory_limit_is_replaced(tmp_path, daemons):
    ini = write_ini(tmp_path / 'app.ini',
                    settings={'scheduler.child.memory_limit': '250MB'})
    daemon = daemons(ini)
    before = daemon.wait_ready({'jobs'})
    records = tmp_path / 'records.jsonl'
    with producer(ini) as scheduler:
        scheduler.add_async_job(jobs.hoard_memory, args=(str(records), 300))
    wait_for(lambda: daemon.child_pids().get('jobs') not in
             (None, before['jobs']), timeout=15, what='a replacement child')
    assert 'over scheduler.child.memory_limit (250.0MB)' in daemon.log()
    assert f'child {before["jobs"]} (queue jobs) exited (exit code 0), as ' \
           'asked: memory limit' in daemon.log()


def test_admin_messages_answer_on_the_command_line(tmp_path, daemons):
    ini = write_ini(tmp_path / 'app.ini', queues=('jobs', 'mail'))
    daemon = daemons(ini)
    pids = daemon.wait_ready({'jobs', 'mail'})
    with producer(ini) as scheduler:
        job_id = scheduler.add_date_job(jobs.noop, time.time() + 86400,
                                        name='tomorrow')
    wait_for(lambda: stored_job_ids(ini, 'jobs') == [job_id],
             what='the job stored')
    (tmp_path / 'idle').mkdir()
    nobody = write_ini(tmp_path / 'idle' / 'app.ini')  # no daemon serves it

    # Started together: each waits on the broker, not on the others.
    calls = {
        'ping': start_cli('--message', 'ping', ini=ini),
        'json': start_cli('--message', 'ping', '--json', ini=ini),
        'status': start_cli('--message', 'status', ini=ini),
        'jobs': start_cli('--message', 'jobs limit=10', '-q', 'jobs', ini=ini),
        'print-jobs': start_cli('--message', 'print-jobs', ini=ini),
        'unknown': start_cli('--message', 'fly', ini=ini),
        'nobody': start_cli('--message', 'ping', '--timeout', '1', ini=nobody),
    }
    results = {}
    for name, process in calls.items():
        out, err = process.communicate(timeout=60)
        results[name] = (process.returncode, out, err)

    code, out, err = results['ping']
    assert code == 0, err
    assert out.splitlines()[:2] == [
        f'queue jobs (pid {pids["jobs"]}): pong',
        f'queue mail (pid {pids["mail"]}): pong']

    code, out, err = results['json']
    answer = json.loads(out)
    assert code == 0 and answer['missing'] == []
    assert {(r['queue'], r['pid']) for r in answer['replies']} == {
        ('jobs', pids['jobs']), ('mail', pids['mail'])}

    code, out, err = results['status']
    assert code == 0, err
    jobs_line, mail_line = out.splitlines()[:2]
    assert jobs_line.startswith(f'queue jobs (pid {pids["jobs"]}): up ')
    assert 'pending 1,' in jobs_line and 'pending 0,' in mail_line

    code, out, err = results['jobs']
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == \
        f'queue jobs (pid {pids["jobs"]}): 1 deferred job(s); #1-1:'
    assert job_id in lines[1] and 'tomorrow' in lines[1]

    code, out, err = results['print-jobs']
    assert code == 0, err
    assert f'queue jobs (pid {pids["jobs"]}): logged 1 job(s)' in out
    daemon.wait_log('Jobstore jobs:')
    assert 'tomorrow' in daemon.log()

    code, out, err = results['unknown']
    assert code == 5
    assert "unknown command 'fly'" in out and "unknown command 'fly'" in err

    code, out, err = results['nobody']
    assert code == 4
    assert 'no answer' in err and 'is pscheduler running' in err


def test_reload_option_restarts_on_code_and_ini_change(tmp_path, daemons):
    # An app module of the test's own, so that the test may edit it.
    module = f'reloadapp_{tmp_path.name.replace("-", "_")}'
    source = (REPO_ROOT / 'tests' / 'apps' / 'simple.py').read_text()
    (tmp_path / f'{module}.py').write_text(source)
    ini = write_ini(tmp_path / 'app.ini', app=f'{module}:main')
    env = child_env(PYTHONPATH=os.pathsep.join([str(tmp_path),
                                                child_env()['PYTHONPATH']]))
    daemon = daemons(ini, '--reload', '--reload-interval', '0.2', env=env)
    # hupper's monitor is the process we started; the master is its worker.
    first = wait_for(lambda: _reload_master(daemon, queues={'jobs'}),
                     what='the master under hupper')

    # The master never imports the app: it learns its files from the child.
    # hupper learns them a moment after the child is ready, so the test
    # edits again until the change is seen.
    app_file = tmp_path / f'{module}.py'
    second = wait_for(
        _edit_until(lambda n: app_file.write_text(source + f'# {n}\n'),
                    lambda: _reload_master(daemon, queues={'jobs'},
                                           not_pid=first.pid),
                    while_running=first),
        timeout=30, what='a new master after the code change')

    wait_for(
        _edit_until(lambda n: write_ini(ini, queues=('jobs', 'mail'),
                                        app=f'{module}:main',
                                        settings={'test.edit': n}),
                    lambda: _reload_master(daemon, queues={'jobs', 'mail'},
                                           not_pid=second.pid),
                    while_running=second),
        timeout=30, what='a new master serving both queues')

    daemon.send_signal(signal.SIGTERM)
    daemon.wait_exit(timeout=30)
    assert daemon.group_members() == []


def _edit_until(edit, condition, while_running, every=1.0):
    """A wait_for condition that calls ``edit(n)`` every ``every`` seconds
    until the master ``while_running`` is gone: edits after that would
    reload its successor again while it starts (on a loaded machine,
    again and again)."""
    state = {'n': 0, 'next': 0.0}

    def edited_and_checked():
        if time.monotonic() >= state['next'] and \
                not is_gone(while_running.pid):
            state['n'] += 1
            edit(state['n'])
            state['next'] = time.monotonic() + every
        return condition()
    return edited_and_checked


def _reload_master(daemon, queues, not_pid=None):
    """The master under hupper, once it serves exactly ``queues``."""
    try:
        processes = psutil.Process(daemon.pid).children()
    except psutil.NoSuchProcess:
        return None
    for process in processes:
        if title(process).startswith('pscheduler: master') and \
                process.pid != not_pid and not is_gone(process.pid) and \
                set(_queues_of(process)) == set(queues):
            return process
    return None


def _queues_of(master):
    try:
        return [title(p)[len('pscheduler: queue '):] for p in master.children()
                if title(p).startswith('pscheduler: queue ')
                and not is_gone(p.pid)]
    except psutil.NoSuchProcess:
        return []
