"""Two pscheduler daemons for the same queue, sharing a broker (Redis or
RabbitMQ) and a PostgreSQL job store, with lock files that never meet (two directories, as
two hosts, or systemd's ``PrivateTmp=yes``): issue 17 on one machine.

The second stands by and tells systemd it is ready (READY=1, STATUS says it
stands by); date jobs run once each; SIGKILL of the owner's whole process
group hands its deferred jobs to the standby within ``scheduler.failover``
(5 s by default), and no run happens twice.
"""
import json
import time
from collections import Counter

import pytest

from tests import jobs
from tests.daemon_helpers import (
    PG_URL, NotifySocket, child_env, producer, run_cli, wait_for, write_ini)

pytestmark = pytest.mark.slow


def two_daemon_inis(tmp_path, broker_for, broker='redis', **extra):
    settings = broker_for(broker, **{
        'scheduler.jobstore.url': PG_URL, **extra})
    inis = []
    for name in ('a', 'b'):
        (tmp_path / name).mkdir()
        inis.append(write_ini(tmp_path / name / 'app.ini', settings=settings))
    return inis


def interval_doubles(runs, job_id, period=1.0):
    """Runs of an interval job by two processes closer than half its
    period: one tick fired by both (a tick missed during the failover may
    run late, then the next on time, in one process)."""
    mine = sorted((at, pid) for name, pid, at in runs if name == job_id)
    return sum(1 for (a, pid_a), (b, pid_b) in zip(mine, mine[1:])
               if b - a < period / 2 and pid_a != pid_b)


def store_owner_pids(ini):
    """The pids ``status`` says own the queue's job store."""
    done = run_cli('--message', 'status', '--json', ini=ini)
    assert done.returncode == 0, done.stderr
    return {(reply['result']['store_owner'] or {}).get('pid')
            for reply in json.loads(done.stdout)['replies']}


@pytest.mark.parametrize('broker', ['redis', 'rabbitmq'])
def test_a_standby_reports_ready_and_takes_over_within_the_failover(
        tmp_path, broker_for, daemons, broker):
    ini_a, ini_b = two_daemon_inis(tmp_path, broker_for, broker)
    out = str(tmp_path / 'runs')
    owner = daemons(ini_a)
    owner.wait_ready({'jobs'})
    notify = NotifySocket()
    try:
        standby = daemons(ini_b, env=child_env(NOTIFY_SOCKET=notify.path))
        standby.wait_ready({'jobs'})
        ready = wait_for(lambda: [m for m in notify.received()
                                  if m.get('READY') == '1'], 20)
        assert 'standing by' in ready[0]['STATUS'], ready
        assert f'pid {owner.child_pids()["jobs"]}' in ready[0]['STATUS']
        standby_pid = standby.child_pids()['jobs']
        assert store_owner_pids(ini_b) == {owner.child_pids()['jobs']}
        # The standby runs its share of the async jobs meanwhile.
        with producer(ini_a) as scheduler:
            for number in range(40):
                scheduler.add_async_job(jobs.append_id, args=(
                    out, f'async{number}', 0.05))
        wait_for(lambda: len([r for r in jobs.read_ids(out)
                              if r[0].startswith('async')]) == 40, 20)
        assert {pid for name, pid, _ in jobs.read_ids(out)} == {
            owner.child_pids()['jobs'], standby_pid}
        start = time.time()
        with producer(ini_a) as scheduler:
            for number in range(20):
                scheduler.add_date_job(
                    jobs.append_id, start + 1 + number * 0.3,
                    args=(out, f'date{number}'), id=f'date{number}')
            scheduler.add_interval_job(jobs.append_id, seconds=1,
                                       args=(out, 'tick'), id='tick')
        owner_pid = owner.child_pids()['jobs']
        wait_for(lambda: sum(1 for r in jobs.read_ids(out)
                             if r[0].startswith('date')) >= 10, 20)
        killed = time.time()
        owner.kill_all()
        wait_for(lambda: [r for r in jobs.read_ids(out)
                          if r[1] == standby_pid and r[0] == 'tick'], 15,
                 what=f'a tick by the standby; log:\n{standby.log()}')
        taken_over = min(at for name, pid, at in jobs.read_ids(out)
                         if pid == standby_pid and at > killed) - killed
        wait_for(lambda: len({r[0] for r in jobs.read_ids(out)
                              if r[0].startswith('date')}) == 20, 20)
        wait_for(lambda: notify.received() and any(
            'standing by' not in m.get('STATUS', 'standing by')
            for m in notify.received()), 10)
        # status names the new owner, read from the shared store.
        assert store_owner_pids(ini_b) == {standby_pid}
    finally:
        notify.close()
    runs = jobs.read_ids(out)
    dates = Counter(name for name, _, _ in runs if name.startswith('date'))
    assert len(runs) == len(set(runs))
    assert Counter(n for n, _, _ in runs if n.startswith('async')) == {
        f'async{number}': 1 for number in range(40)}
    print(f'{broker}: failover after SIGKILL of the owner: '
          f'{taken_over:.2f}s; '
          f'{sum(dates.values())} date runs of 20 jobs')
    assert taken_over < 5.0
    assert all(count == 1 for count in dates.values()), dates
    assert interval_doubles(runs, 'tick') == 0, runs
    assert {pid for _, pid, _ in runs} == {owner_pid, standby_pid}


def test_two_daemons_with_two_processes_on_one_host_run_each_job_once(
        tmp_path, broker_for, daemons):
    """The second daemon starts while the first runs jobs: at its start it
    puts back only what dead processes held, never its live sibling's
    messages (consumer instances: host, pid and a random part)."""
    ini_a, ini_b = two_daemon_inis(tmp_path, broker_for,
                                   **{'scheduler.processes': '2'})
    out = str(tmp_path / 'runs')
    first = daemons(ini_a)
    first.wait_ready({'jobs #1', 'jobs #2'})
    with producer(ini_a) as scheduler:
        for number in range(300):
            scheduler.add_async_job(jobs.append_id, args=(
                out, f'a{number}', 0.2))
    wait_for(lambda: len(jobs.read_ids(out)) >= 20, 20)
    second = daemons(ini_b)
    second.wait_ready({'jobs #1', 'jobs #2'})
    wait_for(lambda: len({r[0] for r in jobs.read_ids(out)}) == 300, 40,
             what='300 async jobs')
    time.sleep(2)   # a doubled run would show by now
    counts = Counter(name for name, _, _ in jobs.read_ids(out))
    pids = {pid for _, pid, _ in jobs.read_ids(out)}
    print(f'two daemons, processes = 2, one host: {len(counts)} of 300 '
          f'jobs ran, {sum(counts.values()) - len(counts)} twice, in '
          f'{len(pids)} processes')
    assert set(counts.values()) == {1}
    assert pids & set(second.child_pids().values())
