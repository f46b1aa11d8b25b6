"""Several processes per queue (``scheduler.processes``), on the real daemon.

Every queue gets N children: all run its async jobs, the first (``#1``)
alone owns its job store and takes its deferred jobs, cancels and admin
commands from the queue's store queue. These tests run ``python -m
pscheduler`` for real on the three brokers: jobs spread over the children,
deferred jobs and cancels keep their order, a SIGKILLed child of either
kind loses nothing, and a reload changes the number of processes.
"""
import datetime
import json
import os
import signal
import time
from collections import Counter

import pytest

from pyramid_scheduler import broker as broker_module
from pyramid_scheduler.settings import parse_settings
from tests import jobs
from tests.daemon_helpers import (
    producer, run_cli, wait_for, write_ini)

# Not in the fast lane (pytest -m "not slow"): starts pscheduler daemons
# against every broker.
pytestmark = pytest.mark.slow

ALL_BROKERS = ['sqlite', 'redis', 'rabbitmq']
THREE = {'jobs #1', 'jobs #2', 'jobs #3'}


def ran(path):
    return Counter(job_id for job_id, _, _ in jobs.read_ids(path))


def pids_of(path):
    """``{job id: set of pids that ran it}``."""
    found = {}
    for job_id, pid, _ in jobs.read_ids(path):
        found.setdefault(job_id, set()).add(pid)
    return found


def in_seconds(seconds):
    return (datetime.datetime.now(datetime.timezone.utc)
            + datetime.timedelta(seconds=seconds))


def all_served(daemon, labels):
    """The children's pids once each of ``labels`` said it serves."""
    pids = daemon.child_pids()
    if set(pids) != set(labels):
        return None
    log = daemon.log()
    if all(f'child {pid} serving queue {label}' in log
           for label, pid in pids.items()):
        return pids
    return None


def wait_served(daemon, labels, timeout=30):
    return wait_for(lambda: all_served(daemon, labels), timeout,
                    what=f'children {sorted(labels)} serving; log:\n'
                         f'{daemon.log()[-4000:]}')


# --- settings ----------------------------------------------------------------

def test_processes_settings(tmp_path):
    settings = parse_settings({
        'scheduler.queues': 'jobs mail',
        'scheduler.processes': '2',
        'scheduler.queue.mail.processes': '3'}, here=str(tmp_path))
    assert settings.processes('jobs') == 2
    assert settings.processes('mail') == 3
    assert parse_settings({}, here=str(tmp_path)).processes('jobs') == 1


@pytest.mark.parametrize('key', ['scheduler.processes',
                                 'scheduler.queue.jobs.processes'])
@pytest.mark.parametrize('value', ['0', '-1', 'two', ''])
def test_bad_processes_value_is_refused(tmp_path, key, value):
    from pyramid.exceptions import ConfigurationError
    with pytest.raises(ConfigurationError) as error:
        parse_settings({key: value}, here=str(tmp_path))
    assert key in str(error.value)
    assert 'a whole number of at least 1' in str(error.value)


def test_daemon_refuses_bad_processes_value(tmp_path):
    ini = write_ini(tmp_path / 'app.ini',
                    settings={'scheduler.processes': 'many'})
    result = run_cli(ini=ini, timeout=60)
    assert result.returncode != 0
    assert 'scheduler.processes' in result.stderr
    assert 'a whole number of at least 1' in result.stderr


# --- a runtime that does not own the job store ---------------------------------

@pytest.mark.parametrize('broker', ALL_BROKERS)
def test_non_owner_passes_deferred_jobs_and_commands_on_intact(
        tmp_path, broker_for, broker):
    """Signed and compressed, a deferred job, a cancel and a command that
    reach slot 1 arrive on the store queue as their sender made them."""
    from pyramid_scheduler import codec, wire
    from pyramid_scheduler.producer import Producer
    from pyramid_scheduler.runtime import Runtime
    from tests.conftest import peek
    settings = parse_settings(dict(broker_for(broker), **{
        'scheduler.broker.secret': 's3cret' * 6,
        'scheduler.broker.compressor': 'zlib',
        'scheduler.allowed_modules': 'tests.jobs',
        'scheduler.processes': '2'}), here=str(tmp_path))
    runtime = Runtime(settings, slot=1)
    assert runtime.acquire_stores()   # nothing to take: it owns none
    assert [q.name for q in runtime.kombu_queues()] == [
        broker_module.queue_name(settings, 'jobs')]
    runtime.start()
    producer = Producer(settings)
    try:
        assert runtime.wait_ready(10)
        spec = {'id': 'later', 'kind': 'date', 'func': 'tests.jobs:noop',
                'args': [], 'kwargs': {}, 'options': {},
                'trigger': {'run_date': in_seconds(60).isoformat()}}
        bodies = [wire.job_created('jobs', spec),
                  wire.job_canceled('jobs', 'later'),
                  wire.command('ping', 'r1')]
        main = broker_module.job_queue(settings, 'jobs')
        for body in bodies:
            producer.publish(body, main.name, declare=[main])
        store = broker_module.store_queue(settings, 'jobs')
        passed = wait_for(lambda: (lambda m: m if len(m) == 3 else None)(
            peek(settings, kombu_queue=store)), 20,
            what='three messages on the store queue')
    finally:
        producer.close()
        runtime.stop(timeout=5)
    # The store owner's decode: checks signature and content.
    decoded = [codec.decode(settings, message) for message in passed]
    assert [body['type'] for body in decoded] == [
        wire.JOB_CREATED, wire.JOB_CANCELED, wire.COMMAND]
    assert decoded[0]['job'] == spec
    assert runtime.stats.snapshot()['executed'] == 0
    assert runtime.dead_letters == []


# --- the daemon ----------------------------------------------------------------

@pytest.mark.parametrize('broker', ALL_BROKERS)
def test_async_jobs_spread_and_deferred_jobs_go_to_the_owner(
        tmp_path, broker_for, daemons, broker):
    ini = write_ini(tmp_path / 'app.ini', settings=broker_for(
        broker, **{'scheduler.processes': '3'}))
    daemon = daemons(ini)
    pids = wait_served(daemon, THREE)
    assert len(set(pids.values())) == 3
    out = str(tmp_path / 'ids')
    total = 600
    with producer(ini) as scheduler:
        # Deferred jobs, half of them cancelled at once: a cancel must
        # never overtake the job it cancels.
        date_ids = [scheduler.add_date_job(
            jobs.append_id, in_seconds(3), args=(out, f'd{n}'))
            for n in range(20)]
        for job_id in date_ids[::2]:
            scheduler.cancel_job(job_id)
        for n in range(total):
            # Long enough that the first child's prefetch cannot drain
            # the queue before the others fetch.
            scheduler.add_async_job(jobs.append_id, args=(out, f'a{n}', 0.01))
    wanted = {f'a{n}' for n in range(total)} | {
        f'd{n}' for n in range(1, 20, 2)}
    wait_for(lambda: wanted <= set(ran(out)), 60,
             what=f'{len(wanted)} jobs to run; log:\n{daemon.log()[-4000:]}')
    # Cancelled ones never run, even a while after their time.
    time.sleep(0.5)
    counts = ran(out)
    assert set(counts) == wanted
    by_pid = Counter(pid for job_id, pid, _ in jobs.read_ids(out)
                     if job_id.startswith('a'))
    assert len(by_pid) >= 2, f'async jobs ran in one process only: {by_pid}'
    assert set(by_pid) <= set(pids.values())
    deferred_pids = {pid for job_id, pid, _ in jobs.read_ids(out)
                     if job_id.startswith('d')}
    assert deferred_pids == {pids['jobs #1']}
    assert all(count == 1 for count in counts.values())
    # Admin commands reach the owner, once per queue.
    result = run_cli('--message', 'ping', '--json', ini=ini)
    assert result.returncode == 0, result.stderr
    replies = json.loads(result.stdout)['replies']
    assert [reply['pid'] for reply in replies] == [pids['jobs #1']]


@pytest.mark.parametrize('broker', ALL_BROKERS)
def test_deferred_job_sent_to_the_main_queue_is_passed_to_the_owner(
        tmp_path, broker_for, daemons, broker):
    """A web app still on one process per queue sends deferred jobs to the
    main queue: whichever child takes one passes it to the store queue."""
    settings = broker_for(broker)
    daemon_ini = write_ini(tmp_path / 'daemon.ini', settings=dict(
        settings, **{'scheduler.processes': '3'}))
    web_dir = tmp_path / 'web'
    web_dir.mkdir()
    # Same database and broker, one process per queue.
    web_ini = write_ini(web_dir / 'web.ini', settings=dict(
        settings, **{'scheduler.database': str(tmp_path / 'pscheduler.sqlite')}))
    daemon = daemons(daemon_ini)
    pids = wait_served(daemon, THREE)
    out = str(tmp_path / 'ids')
    with producer(web_ini) as scheduler:
        for n in range(60):
            scheduler.add_date_job(jobs.append_id, in_seconds(3),
                                   args=(out, f'd{n}'))
    wanted = {f'd{n}' for n in range(60)}
    wait_for(lambda: wanted <= set(ran(out)), 60,
             what=f'60 date jobs; log:\n{daemon.log()[-4000:]}')
    time.sleep(0.5)
    counts = ran(out)
    assert set(counts) == wanted and set(counts.values()) == {1}
    assert {pid for _, pid, _ in jobs.read_ids(out)} == {pids['jobs #1']}


@pytest.mark.parametrize('broker', ALL_BROKERS)
@pytest.mark.parametrize('victim', ['jobs #1', 'jobs #2'])
def test_a_sigkilled_process_of_a_queue_loses_nothing(
        tmp_path, broker_for, daemons, broker, victim):
    ini = write_ini(tmp_path / 'app.ini', settings=broker_for(
        broker, **{'scheduler.processes': '2'}))
    daemon = daemons(ini)
    labels = {'jobs #1', 'jobs #2'}
    pids = wait_served(daemon, labels)
    out = str(tmp_path / 'ids')
    total = 300
    with producer(ini) as scheduler:
        for n in range(total):
            scheduler.add_async_job(jobs.append_id, args=(out, f'a{n}', 0.05))
    # Both hold prefetched jobs by now; kill one while it runs them.
    wait_for(lambda: len(ran(out)) >= 20, 30, what='jobs to start')
    os.kill(pids[victim], signal.SIGKILL)
    new_pids = wait_for(
        lambda: (lambda p: p if p and p[victim] != pids[victim] else None)(
            all_served(daemon, labels)), 30,
        what=f'{victim} replaced; log:\n{daemon.log()[-4000:]}')
    assert new_pids[victim] != pids[victim]
    other = (labels - {victim}).pop()
    assert new_pids[other] == pids[other], 'the sibling was not touched'
    wanted = {f'a{n}' for n in range(total)}
    # Well within the visibility timeout (1h): redelivered at once.
    wait_for(lambda: wanted <= set(ran(out)), 60,
             what=f'{total} jobs; ran {len(ran(out))}; log:\n'
                  f'{daemon.log()[-4000:]}')
    runs = jobs.read_ids(out)
    assert set(ran(out)) == wanted
    # The replacement restored only what its slot held: no job the sibling
    # ran first (it held the message, and acknowledged it) ran again.
    first_runs = {}
    for job_id, pid, _ in runs:
        first_runs.setdefault(job_id, pid)
    again = [job_id for job_id, pid in first_runs.items()
             if pid == pids[other] and ran(out)[job_id] > 1]
    assert not again, f'jobs of the live sibling ran again: {again[:10]}'


@pytest.mark.parametrize('broker', ['sqlite', 'redis'])
def test_reload_changes_the_number_of_processes(tmp_path, broker_for,
                                                daemons, broker):
    settings = broker_for(broker)
    ini = write_ini(tmp_path / 'app.ini', settings=settings)
    daemon = daemons(ini)
    wait_served(daemon, {'jobs'})
    out = str(tmp_path / 'ids')
    with producer(ini) as scheduler:
        scheduler.add_interval_job(jobs.append_id, seconds=1,
                                   args=(out, 'tick'), id='tick')
    wait_for(lambda: ran(out)['tick'] >= 1, 30, what='the interval job')

    write_ini(ini, settings=dict(settings, **{'scheduler.processes': '3'}))
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_log('pscheduler ready', count=2, timeout=60)
    pids = wait_served(daemon, THREE)
    with producer(ini) as scheduler:
        for n in range(300):
            scheduler.add_async_job(jobs.append_id, args=(out, f'a{n}', 0.01))
    wait_for(lambda: all(f'a{n}' in ran(out) for n in range(300)), 60,
             what='async jobs after growing')
    ticks = ran(out)['tick']
    wait_for(lambda: ran(out)['tick'] > ticks, 30,
             what='the interval job, owned by #1 now')
    tick_pids = {pid for job_id, pid, _ in jobs.read_ids(out)
                 if job_id == 'tick'}
    assert pids['jobs #1'] in tick_pids

    write_ini(ini, settings=settings)
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_log('pscheduler ready', count=3, timeout=60)
    pids = wait_served(daemon, {'jobs'})
    ticks = ran(out)['tick']
    wait_for(lambda: ran(out)['tick'] > ticks, 30,
             what='the interval job, after shrinking')
    with producer(ini) as scheduler:
        for n in range(50):
            scheduler.add_async_job(jobs.append_id, args=(out, f'b{n}'))
        scheduler.add_date_job(jobs.append_id, in_seconds(1),
                               args=(out, 'late'))
    wait_for(lambda: {f'b{n}' for n in range(50)} | {'late'} <= set(ran(out)),
             30, what='jobs after shrinking')


def test_titles_name_every_process(tmp_path, broker_for, daemons):
    ini = write_ini(tmp_path / 'app.ini', queues=('jobs', 'mail'),
                    settings=broker_for('sqlite', **{
                        'scheduler.queue.mail.processes': '2'}))
    daemon = daemons(ini)
    pids = wait_served(daemon, {'jobs', 'mail #1', 'mail #2'})
    assert len(set(pids.values())) == 3
    assert 'serving queue(s) mail (async jobs only: process slot 1)' in \
        daemon.log()


def test_messages_of_a_removed_process_killed_while_stopping_come_back(
        tmp_path, broker_for, daemons):
    """Redis: a process of a slot that a reload removes, killed before it
    hands its messages back, left them in its slot's keys, where no consumer
    looks; once its liveness key expires, a consumer puts them back."""
    settings = broker_for('redis')
    ini = write_ini(tmp_path / 'app.ini', settings=dict(
        settings, **{'scheduler.processes': '2'}))
    daemon = daemons(ini)
    pids = wait_served(daemon, {'jobs #1', 'jobs #2'})
    out = str(tmp_path / 'ids')
    total = 300
    with producer(ini) as scheduler:
        for n in range(total):
            scheduler.add_async_job(jobs.append_id, args=(out, f'a{n}', 0.05))
    wait_for(lambda: len({pid for _, pid, _ in jobs.read_ids(out)}) == 2,
             30, what='both processes running jobs')
    write_ini(ini, settings=settings)   # back to one process
    daemon.send_signal(signal.SIGHUP)
    os.kill(pids['jobs #2'], signal.SIGKILL)   # dies holding its messages
    daemon.wait_log('pscheduler ready', count=2, timeout=60)
    wait_served(daemon, {'jobs'})
    wanted = {f'a{n}' for n in range(total)}
    # Well within the visibility timeout (1h): put back at once.
    wait_for(lambda: wanted <= set(ran(out)), 60,
             what=f'{total} jobs; ran {len(ran(out))}; log:\n'
                  f'{daemon.log()[-4000:]}')
    assert 'left by consumer process(es) that are gone' in daemon.log()
