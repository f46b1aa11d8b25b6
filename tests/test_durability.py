"""Fault tests against the real daemon (issue 4): kills, reloads, outages.

Every test runs ``python -m pscheduler`` for real, in its own process group
(the ``daemons`` fixture kills the group whatever happens), against the
embedded SQLite default and Redis, and RabbitMQ where it costs little. Jobs
append their own id to a file with one ``O_APPEND`` write
(``tests.jobs.append_id``), so a job that ran twice shows twice.

Measured numbers (duplicates, redelivery delays) are printed: run with
``pytest -s tests/test_durability.py`` to see them.
"""
import datetime
import json
import os
import signal
import threading
import time
from collections import Counter

import kombu
import pytest

from pyramid_scheduler import broker as broker_module
from pyramid_scheduler.errors import BrokerUnavailable
from tests import jobs
from tests.daemon_helpers import (
    PersistentRedis, is_gone, kill_group, producer, run_cli, stored_job_ids,
    wait_for, write_ini)

# Not in the fast lane (pytest -m "not slow"): kills and restarts daemons
# against every broker.
pytestmark = pytest.mark.slow

ALL_BROKERS = ['sqlite', 'redis', 'rabbitmq']
BROKERS = ['sqlite', 'redis']


def report(text):
    print(f'\n[durability] {text}')


def wait_until(condition, timeout, what, state=lambda: ''):
    """wait_for, whose failure also shows ``state()`` at that moment."""
    try:
        return wait_for(condition, timeout, what=what)
    except AssertionError as exc:
        raise AssertionError(f'{exc}\n{state()}') from None


def ran(path):
    """``Counter`` of job ids in the file of ``append_id``."""
    return Counter(job_id for job_id, _, _ in jobs.read_ids(path))


class Producing(threading.Thread):
    """Runs ``produce(scheduler)`` in a thread with a producer of ``ini``;
    keeps the ids it got back and the exception that stopped it."""

    def __init__(self, ini, produce):
        super().__init__(daemon=True)
        self.ini = ini
        self.produce = produce
        self.ids = []
        self.error = None

    def run(self):
        try:
            with producer(self.ini) as scheduler:
                self.produce(scheduler, self.ids)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def finished(self):
        if self.error is not None:
            raise AssertionError(f'producing failed: {self.error!r}')
        return not self.is_alive()


def logged_at(daemon, text):
    """The time of the daemon's first log line containing ``text``."""
    for line in daemon.log().splitlines():
        if text in line:
            stamp, millis = line[:23].split(',')
            return time.mktime(time.strptime(stamp, '%Y-%m-%d %H:%M:%S')) \
                + int(millis) / 1000
    raise AssertionError(f'{text!r} not in the log:\n{daemon.log()}')


def serving_child(daemon, queue='jobs'):
    """The pid of the child serving ``queue`` once it said it is ready."""
    pid = daemon.child_pids().get(queue)
    if pid is not None and f'child {pid} serving queue {queue}' in \
            daemon.log():
        return pid
    return None


# --- 1. a child SIGKILLed every second ---------------------------------------

@pytest.mark.parametrize('broker', ALL_BROKERS)
def test_async_jobs_survive_a_child_sigkilled_every_second(
        tmp_path, broker_for, daemons, broker):
    total = 2000
    ini = write_ini(tmp_path / 'app.ini', settings=broker_for(broker))
    daemon = daemons(ini)
    daemon.wait_ready({'jobs'})
    out = str(tmp_path / 'ids')

    def produce(scheduler, ids):
        # ~400 jobs a second: the 2,000 take about five seconds to send, so
        # the kills hit a queue that is being fed, drained and prefetched.
        for n in range(total):
            scheduler.add_async_job(jobs.append_id, args=(out, f'a{n}', 0.002))
            ids.append(f'a{n}')
            if n % 40 == 39:
                time.sleep(0.1)

    kills = []
    started = time.monotonic()
    feeding = Producing(ini, produce)
    feeding.start()

    serving_since = {}

    def all_ran_killing_every_second():
        # Each child is SIGKILLed once it has served for a second. (The
        # master restarts a child that keeps dying after a backoff that
        # doubles from 0.1s, so a wall-clock "every second" would soon kill
        # children the moment they come up, and no job would ever run.)
        pid = serving_child(daemon)
        now = time.monotonic()
        if pid is not None and not feeding_done_and_ran():
            since = serving_since.setdefault(pid, now)
            if now - since >= 1.0:
                os.kill(pid, signal.SIGKILL)
                kills.append((now, pid))
        return feeding_done_and_ran()

    def feeding_done_and_ran():
        return feeding.finished() and len(ran(out)) == total

    wait_until(all_ran_killing_every_second, 150, f'{total} jobs to run',
               lambda: f'ran {len(ran(out))}; log:\n{daemon.log()[-4000:]}')
    took = time.monotonic() - started
    counts = ran(out)
    assert set(counts) == {f'a{n}' for n in range(total)}
    twice = sum(1 for c in counts.values() if c > 1)
    report(f'{broker}: {total} async jobs, {len(kills)} child SIGKILLs '
           f'(each child killed after serving 1s), all ran at least once in '
           f'{took:.1f}s; {twice} ran more than once (max '
           f'{max(counts.values())} runs, {sum(counts.values()) - total} '
           f'extra runs)')
    assert len(kills) >= 3, 'the jobs ran before the kills could hit them'
    # The master kept restarting the child: the queue is served.
    assert daemon.wait_ready({'jobs'})


# --- 2. how soon an unacknowledged job runs again ----------------------------

@pytest.mark.parametrize('broker', ALL_BROKERS)
def test_redelivery_delay_after_a_child_sigkill(
        tmp_path, broker_for, daemons, broker):
    """The at-least-once bound: SIGKILL the child running a job; measure
    how long until the job runs again in the next child."""
    ini = write_ini(tmp_path / 'app.ini', settings=broker_for(broker))
    daemon = daemons(ini)
    daemon.wait_ready({'jobs'})
    out = str(tmp_path / 'ids')
    delays, after_ready = [], []
    with producer(ini) as scheduler:
        for attempt in range(3):
            label = f'slow{attempt}'
            pid = wait_for(lambda: serving_child(daemon), what='a child')
            # Long enough never to finish (and be acknowledged) by itself.
            scheduler.add_async_job(jobs.append_id, args=(out, label, 120))
            wait_for(lambda: ran(out)[label] == 1, what=f'{label} to start')
            assert [p for j, p, _ in jobs.read_ids(out) if j == label] == \
                [pid]
            os.kill(pid, signal.SIGKILL)
            killed_at = time.time()
            again = wait_for(
                lambda: [(p, at) for j, p, at in jobs.read_ids(out)
                         if j == label and at > killed_at],
                timeout=30, what=f'{label} to run again')
            new_pid, at = again[0]
            assert new_pid != pid
            delays.append(at - killed_at)
            # The master logs the child ready when it reads its report: on
            # a loaded machine, after the job has already started there.
            daemon.wait_log(f'child {new_pid} serving queue jobs')
            after_ready.append(at - logged_at(
                daemon, f'child {new_pid} serving queue jobs'))
    report(f'{broker}: a SIGKILLed child\'s unacknowledged async job ran '
           f'again {", ".join(f"{d:.2f}s" for d in delays)} after the kill '
           f'(the master\'s restart backoff: 0.1s, 0.2s, 0.4s), '
           f'{", ".join(f"{r:.3f}s" for r in after_ready)} after the new '
           f'child was ready')
    assert max(delays) < 10


# --- 3. SIGHUP every two seconds ---------------------------------------------

@pytest.mark.parametrize('broker', BROKERS)
def test_sighup_every_two_seconds_loses_nothing(
        tmp_path, broker_for, daemons, broker):
    settings = broker_for(broker)
    ini = write_ini(tmp_path / 'app.ini', settings=settings)
    daemon = daemons(ini)
    daemon.wait_ready({'jobs'})
    out = str(tmp_path / 'ids')
    deferred = []

    def produce(scheduler, ids):
        # 12 s of traffic: 25 async jobs a second, and every second a burst
        # of 6 date jobs due together 2 s later, each taking 0.4 s, so a
        # reload often finds deferred jobs running and waiting for a worker.
        for n in range(300):
            scheduler.add_async_job(jobs.append_id, args=(out, f'a{n}', 0.01))
            ids.append(f'a{n}')
            if n % 25 == 0:
                due = time.time() + 2
                for k in range(6):
                    job_id = scheduler.add_date_job(
                        jobs.append_id, due, args=(out, f'd{n}.{k}', 0.4))
                    deferred.append(f'd{n}.{k}')
                    assert job_id
            time.sleep(0.04)

    feeding = Producing(ini, produce)
    feeding.start()
    hups = []

    def everything_ran_hupping_every_two_seconds():
        now = time.monotonic()
        if feeding.is_alive() and (not hups or now - hups[-1] >= 2.0):
            daemon.send_signal(signal.SIGHUP)
            hups.append(now)
        counts = ran(out)
        return (feeding.finished()
                and all(counts[i] for i in feeding.ids + deferred)
                and not stored_job_ids(ini, 'jobs', settings['scheduler.id']))

    def state():
        counts = ran(out)
        missing = [i for i in feeding.ids + deferred if not counts[i]]
        stored = stored_job_ids(ini, 'jobs', settings['scheduler.id'])
        return (f'missing: {missing[:20]}; stored: {stored[:10]}; log:\n'
                f'{daemon.log()[-4000:]}')

    wait_until(everything_ran_hupping_every_two_seconds, 90,
               'every job to run', state)
    counts = ran(out)
    async_twice = sorted(i for i in feeding.ids if counts[i] > 1)
    deferred_twice = sorted(i for i in deferred if counts[i] > 1)
    restarts = daemon.log_count('restarting the child of queue jobs')
    report(f'{broker}: {len(hups)} SIGHUPs 2s apart ({restarts} child '
           f'restarts): {len(feeding.ids)} async jobs all ran '
           f'({len(async_twice)} twice), {len(deferred)} date jobs all ran '
           f'({len(deferred_twice)} twice)')
    assert deferred_twice == []
    assert len(hups) >= 5 and restarts >= 3, daemon.log()[-3000:]


def test_sighup_while_due_runs_are_handed_over(tmp_path, broker_for,
                                              daemons):
    """A reload that stops the child while APScheduler hands 300 due runs
    to the workers: each still runs once (APScheduler used to mark itself
    stopped in mid-pass, its thread died, and a run handed over stayed in
    the store, to fire again in the next child)."""
    settings = broker_for('sqlite', **{'scheduler.misfire_grace_time': '60s'})
    scheduler_id = settings['scheduler.id']
    ini = write_ini(tmp_path / 'app.ini', settings=settings)
    daemon = daemons(ini)
    before = daemon.wait_ready({'jobs'})
    out = str(tmp_path / 'ids')
    ids = [f'd{n}' for n in range(300)]
    due = time.time() + 2
    with producer(ini) as scheduler:
        for job_id in ids:
            scheduler.add_date_job(jobs.append_id, due, args=(out, job_id),
                                   id=job_id)
    wait_for(lambda: len(stored_job_ids(ini, 'jobs', scheduler_id)) == 300,
             20, what='the 300 jobs stored')
    wait_for(lambda: time.time() >= due + 0.03, 10, interval=0.002,
             what='the runs to come due')
    daemon.send_signal(signal.SIGHUP)
    wait_until(lambda: set(ran(out)) == set(ids) and not stored_job_ids(
        ini, 'jobs', scheduler_id), 30, 'every run', lambda: daemon.log())
    daemon.wait_ready({'jobs'}, count=2)
    counts = ran(out)
    twice = sorted(j for j, c in counts.items() if c > 1)
    ran_before = sum(1 for _, pid, _ in jobs.read_ids(out)
                     if pid == before['jobs'])
    report(f'sqlite: SIGHUP 30ms after 300 date jobs came due: '
           f'{ran_before} ran in the old child, {300 - ran_before} in the '
           f'new one; {len(twice)} ran twice')
    assert twice == []
    assert 'Exception in thread APScheduler' not in daemon.log()


# --- 4. the whole daemon SIGKILLed twice while date jobs come due ------------

@pytest.mark.parametrize('broker', BROKERS)
def test_date_jobs_fire_once_across_two_daemon_kills(
        tmp_path, broker_for, daemons, broker):
    grace = 60
    settings = broker_for(broker, **{
        'scheduler.misfire_grace_time': f'{grace}s'})
    scheduler_id = settings['scheduler.id']
    ini = write_ini(tmp_path / 'app.ini', settings=settings)
    first = daemons(ini, log_path=tmp_path / 'run1.log')
    first_children = first.wait_ready({'jobs'})
    out = str(tmp_path / 'ids')

    # 200 date jobs, one every 0.1s from 1s to 20.9s from now.
    start = time.time() + 1
    due = {f'd{n}': start + n * 0.1 for n in range(200)}
    with producer(ini) as scheduler:
        for job_id, moment in due.items():
            scheduler.add_date_job(jobs.append_id, moment, args=(out, job_id),
                                   id=job_id)
    wait_until(lambda: len(set(stored_job_ids(ini, 'jobs', scheduler_id))
                           | set(ran(out))) == 200, 20,
               'the 200 date jobs stored', lambda: first.log()[-3000:])

    def down_until(moment):
        # Keeps the daemon down: jobs come due meanwhile, to fire late.
        while time.time() < moment:
            time.sleep(0.05)

    down = []  # (from, to): while no child served the queue

    # 1. SIGKILL the master alone: its children die with it (PDEATHSIG).
    down_until(start + 5)
    killed = time.time()
    first.send_signal(signal.SIGKILL)
    first.process.wait(10)
    wait_until(lambda: all(is_gone(pid) for pid in first_children.values()),
               15, 'the children of the killed master to exit',
               lambda: first.log()[-3000:])
    down_until(start + 7)
    second = daemons(ini, log_path=tmp_path / 'run2.log')
    second_children = second.wait_ready({'jobs'})
    down.append((killed, time.time()))

    # 2. SIGKILL the whole process group: master and children at once.
    down_until(start + 12)
    killed = time.time()
    kill_group(second.pid)
    second.process.wait(10)
    wait_for(lambda: all(is_gone(pid) for pid in second_children.values()),
             10, what='the killed children gone')
    down_until(start + 14)
    third = daemons(ini, log_path=tmp_path / 'run3.log')
    third.wait_ready({'jobs'})
    down.append((killed, time.time()))

    wait_until(lambda: len(ran(out)) == 200 and not stored_job_ids(
        ini, 'jobs', scheduler_id), 60, 'every date job to fire',
        lambda: f'missing {sorted(set(due) - set(ran(out)))[:20]}; stored '
                f'{stored_job_ids(ini, "jobs", scheduler_id)[:20]}\n'
                f'{third.log()[-3000:]}')
    counts = ran(out)
    fired = {job_id: at for job_id, _, at in jobs.read_ids(out)}
    late = {job_id: fired[job_id] - due[job_id] for job_id in due}
    while_down = [job_id for job_id, moment in due.items()
                  if any(a <= moment <= b for a, b in down)]
    on_time = [late[job_id] for job_id in due if job_id not in while_down]
    twice = sorted(job_id for job_id, count in counts.items() if count > 1)
    report(f'{broker}: 200 date jobs over 20s, master SIGKILLed (children '
           f'died with it), then the whole group SIGKILLed: {len(twice)} '
           f'fired twice; {len(while_down)} came due while it was down '
           f'({", ".join(f"{b - a:.1f}s" for a, b in down)}) and fired late '
           f'by up to {max(late[j] for j in while_down):.1f}s (grace '
           f'{grace}s); the others within {max(on_time):.2f}s of their time')
    assert twice == []
    assert set(counts) == set(due)
    assert max(late.values()) < grace
    assert len(while_down) >= 20, 'no job came due while the daemon was down'


def test_due_date_jobs_waiting_for_a_worker_survive_a_sigkill(
        tmp_path, broker_for, daemons):
    """More runs due at once than workers: those waiting for a worker were
    out of the job store already, and a SIGKILL used to lose them."""
    settings = broker_for('sqlite', **{'scheduler.misfire_grace_time': '60s'})
    scheduler_id = settings['scheduler.id']
    ini = write_ini(tmp_path / 'app.ini', settings=settings)
    first = daemons(ini, log_path=tmp_path / 'run1.log')
    first.wait_ready({'jobs'})
    out = str(tmp_path / 'ids')
    # 24 runs of 0.5s due together, 4 workers: 3s of work.
    due = time.time() + 1.5
    ids = [f'd{n}' for n in range(24)]
    with producer(ini) as scheduler:
        for job_id in ids:
            scheduler.add_date_job(jobs.append_id, due,
                                   args=(out, job_id, 0.5), id=job_id)
    # A run starts once its own job is out of the store, maybe before the
    # pass has taken the others out: wait for both.
    wait_for(lambda: len(ran(out)) >= 4, 20, what='the first runs to start')
    wait_for(lambda: stored_job_ids(ini, 'jobs', scheduler_id) == [], 20,
             what='every due run out of the store')
    kill_group(first.pid)
    first.process.wait(10)
    started_before = len(ran(out))
    second = daemons(ini, log_path=tmp_path / 'run2.log')
    second.wait_ready({'jobs'})
    wait_until(lambda: set(ran(out)) == set(ids), 30, 'every due run',
               lambda: f'ran {sorted(ran(out))}\n{second.log()[-3000:]}')
    counts = ran(out)
    report(f'sqlite: 24 date jobs due at once on 4 workers, whole daemon '
           f'SIGKILLed after {started_before} had started: the other '
           f'{24 - started_before} ran in the next daemon; '
           f'{sum(1 for c in counts.values() if c > 1)} ran twice')
    assert started_before < 20
    assert 'deferred run(s) that were due when the previous runtime died' \
        in second.log()
    assert all(count == 1 for count in counts.values()), counts


def test_due_runs_left_by_a_dead_daemon_start_once(
        tmp_path, broker_for, daemons):
    """What a daemon SIGKILLed between writing a due run down and
    APScheduler taking it out of the store leaves: the run in both places.
    The next daemon starts it once; and a due run no longer in the store
    starts from the table."""
    import pickle
    import sqlalchemy
    from pyramid_scheduler.runtime.dueruns import DueRuns
    settings = broker_for('sqlite')
    scheduler_id = settings['scheduler.id']
    ini = write_ini(tmp_path / 'app.ini', settings=settings)
    first = daemons(ini, log_path=tmp_path / 'run1.log')
    first.wait_ready({'jobs'})
    out = str(tmp_path / 'ids')
    with producer(ini) as scheduler:
        scheduler.add_date_job(jobs.append_id, time.time() + 3,
                               args=(out, 'kept'), id='kept')
    wait_for(lambda: stored_job_ids(ini, 'jobs', scheduler_id) == ['kept'],
             what='the job stored')
    first.send_signal(signal.SIGTERM)
    assert first.wait_exit() == 0

    engine = sqlalchemy.create_engine(
        f'sqlite:///{tmp_path / "pscheduler.sqlite"}')
    try:
        with engine.connect() as connection:
            state = connection.execute(sqlalchemy.text(
                f'SELECT job_state FROM "{scheduler_id}_jobs_jobs"')).scalar()
        kept = pickle.loads(state)
        queue, spec = kept['args']
        due_runs = DueRuns(engine, f'{scheduler_id}_jobs_due')
        due_runs.add({'job_id': 'kept', 'spec': spec, 'last_run': True,
                      'run_times': [kept['next_run_time']],
                      'misfire_grace_time': kept['misfire_grace_time']})
        gone = dict(spec, id='gone', args=[out, 'gone'])
        due_runs.add({'job_id': 'gone', 'spec': gone, 'last_run': True,
                      'run_times': [kept['next_run_time']
                                    - datetime.timedelta(seconds=2)],
                      'misfire_grace_time': 60})
    finally:
        engine.dispose()

    second = daemons(ini, log_path=tmp_path / 'run2.log')
    second.wait_ready({'jobs'})
    wait_until(lambda: set(ran(out)) == {'kept', 'gone'} and not
               stored_job_ids(ini, 'jobs', scheduler_id), 20, 'both runs',
               lambda: second.log()[-3000:])
    assert ran(out) == Counter({'kept': 1, 'gone': 1})
    assert 'starting 1 deferred run(s)' in second.log()


# --- 5. redis-server killed and restarted ------------------------------------

def test_redis_restart_loses_no_accepted_job(tmp_path, daemons):
    server = PersistentRedis(tmp_path / 'redis').start()
    try:
        settings = {'scheduler.broker.url': server.url,
                    'scheduler.id': f'pst-outage-{os.getpid()}'}
        ini = write_ini(tmp_path / 'app.ini', settings=settings)
        daemon = daemons(ini)
        before = daemon.wait_ready({'jobs'})
        out = str(tmp_path / 'ids')
        accepted = []
        waits = []
        with producer(ini) as scheduler:
            send_timeout = scheduler.settings.send_timeout
            # 400 jobs of 50ms on 4 workers: about five seconds of work, so
            # most of them are still in Redis when it is killed, even when a
            # loaded machine makes sending them take a second or two.
            for n in range(400):
                scheduler.add_async_job(jobs.append_id,
                                        args=(out, f'before{n}', 0.05))
                accepted.append(f'before{n}')
            wait_for(lambda: len(ran(out)) >= 20, what='the first jobs')
            server.kill()
            ran_when_killed = len(ran(out))

            for n in range(3):
                started = time.monotonic()
                with pytest.raises(BrokerUnavailable):
                    scheduler.add_async_job(jobs.append_id,
                                            args=(out, f'refused{n}'))
                waits.append(time.monotonic() - started)

            server.start()

            def accepts():
                try:
                    scheduler.add_async_job(jobs.append_id,
                                            args=(out, 'after0'))
                except BrokerUnavailable:
                    return False
                accepted.append('after0')
                return True
            wait_for(accepts, 20, what='the producer to send again')
            for n in range(1, 50):
                scheduler.add_async_job(jobs.append_id,
                                        args=(out, f'after{n}'))
                accepted.append(f'after{n}')

        def state():
            counts = ran(out)
            missing = [i for i in accepted if not counts[i]]
            return f'missing {missing[:20]}\n{daemon.log()[-4000:]}'
        wait_until(lambda: all(ran(out)[i] for i in accepted), 90,
                   'every accepted job to run', state)
        counts = ran(out)
        restarts = daemon.log_count('died')
        report(f'redis restart: {len(accepted)} accepted jobs all ran '
               f'({ran_when_killed} had run when redis-server was killed; '
               f'{sum(1 for i in accepted if counts[i] > 1)} ran twice); '
               f'producer refused in {", ".join(f"{w:.2f}s" for w in waits)} '
               f'(send_timeout {send_timeout:g}s); child restarts: {restarts}')
        assert not any(counts[f'refused{n}'] for n in range(3))
        assert max(waits) < send_timeout + 1.5
        assert ran_when_killed < 300, 'nothing was left queued in Redis'
        assert restarts <= 1, daemon.log()[-4000:]
        if restarts == 0:
            assert daemon.child_pids() == before
    finally:
        server.kill()


# --- 6. malformed messages ---------------------------------------------------

def _envelope(**fields):
    body = {'protocol': 'pyramid_scheduler', 'version': 1,
            'type': 'job.created', 'sent_at': time.time(), 'queue': 'jobs',
            'job': {'id': 'x', 'kind': 'async', 'func': 'tests.jobs:noop',
                    'args': [], 'kwargs': {}, 'trigger': {}, 'options': {}}}
    body.update(fields)
    return body


def _job(**fields):
    return _envelope(job=dict(_envelope()['job'], **fields))


JSON = {'content_type': 'application/json', 'content_encoding': 'utf-8'}
MALFORMED = [
    (b'\x00\xff\xfe not json at all', JSON),
    ('{"protocol": "pyramid_scheduler", "version": 1,', JSON),
    ('[1, 2, 3]', JSON),
    ('"just a string"', JSON),
    ('{}', JSON),
    (json.dumps(_envelope(protocol='celery')), JSON),
    (json.dumps(_envelope(version=99)), JSON),
    (json.dumps(_envelope(version='1')), JSON),
    (json.dumps(_envelope(type='job.exploded')), JSON),
    (json.dumps(_envelope(job=None)), JSON),
    (json.dumps({k: v for k, v in _envelope().items() if k != 'queue'}),
     JSON),
    (json.dumps(_envelope(queue='elsewhere')), JSON),
    (json.dumps(_job(func='pscheduler_no_such_module:nothing')), JSON),
    (json.dumps(_job(func='tests.jobs:no_such_function')), JSON),
    (json.dumps(_job(func='not a reference')), JSON),
    (json.dumps(_job(kind='sometimes')), JSON),
    (json.dumps(_job(args='not a list')), JSON),
    (json.dumps(_job(kind='date', trigger={'run_date': 'not a date'})),
     JSON),
    (json.dumps(_job(kind='cron', trigger={'minute': '61'})), JSON),
    (json.dumps(_job(kind='interval', trigger={'seconds': -5})), JSON),
    (json.dumps(_job(kind='date', id='', trigger={'run_date': '2099-01-01'})),
     JSON),
    (json.dumps(_envelope(type='job.canceled', job_id=12)), JSON),
    (json.dumps(_envelope(type='reply', request_id='r', pid=1)), JSON),
    (b'\x80\x04\x95\x00', {'content_type': 'application/x-python-serialize',
                           'content_encoding': 'binary'}),
    ('hello', {'content_type': 'text/plain', 'content_encoding': 'utf-8'}),
    (json.dumps(_job(func='tests.jobs:_hoard')), JSON),
    (json.dumps(_job(kwargs=['not', 'a', 'dict'])), JSON),
    (json.dumps(_envelope()), dict(JSON, headers={
        'compression': 'application/x-no-such-compression'})),
]


@pytest.mark.parametrize('broker', ALL_BROKERS)
def test_malformed_messages_are_dead_lettered(
        tmp_path, broker_for, daemons, broker):
    from pscheduler.config import load_config
    total = 1000
    ini = write_ini(tmp_path / 'app.ini', settings=broker_for(broker))
    daemon = daemons(ini)
    before = daemon.wait_ready({'jobs'})
    settings = load_config(str(ini)).settings
    target = broker_module.job_queue(settings, 'jobs')
    started = time.monotonic()
    with broker_module.connect(settings) as connection:
        publisher = kombu.Producer(connection.channel())
        for n in range(total):
            body, options = MALFORMED[n % len(MALFORMED)]
            publisher.publish(body, routing_key=target.name, exchange='',
                              declare=[target], **options)
    out = str(tmp_path / 'ids')
    with producer(ini) as scheduler:
        scheduler.add_async_job(jobs.append_id, args=(out, 'valid'))
    wait_until(lambda: ran(out)['valid'], 60, 'the valid job to run',
               lambda: daemon.log()[-3000:])

    def dead_letters():
        result = run_cli('--message', 'dead-letters', '--json', ini=ini)
        assert result.returncode == 0, result.stderr
        [answer] = json.loads(result.stdout)['replies']
        return answer
    answer = wait_until(lambda: (a := dead_letters())['result']['count']
                        >= total and a, 60, f'{total} dead letters',
                        lambda: f'{dead_letters()["result"]["count"]} dead '
                                f'letters\n{daemon.log()[-3000:]}')
    took = time.monotonic() - started
    reasons = Counter(d['reason'].split(':')[0][:40]
                      for d in answer['result']['recent'])
    report(f'{broker}: {total} malformed messages ({len(MALFORMED)} kinds) '
           f'dead-lettered in {took:.1f}s, child pid unchanged; recent '
           f'reasons: {dict(reasons.most_common(5))}')
    assert answer['result']['count'] == total
    assert answer['pid'] == before['jobs']
    assert daemon.child_pids() == before
    assert 'died' not in daemon.log()
    assert ran(out) == Counter({'valid': 1})
