"""The whole path in combined mode, through WebTest.

A view calls ``request.scheduler.add_*_job``; the message goes through the
embedded SQLite broker to the runtime the first request started in this
process, which runs the job. Jobs record each run in a file
(``tests.jobs.record``), which is what these tests look at.
"""
import datetime
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import zoneinfo

import pytest
from webtest import TestApp

from pyramid_scheduler import CONSUME_ENV
from pyramid_scheduler.runtime.storelock import StoreLock, lock_path
from tests import jobs
from tests.conftest import (
    TIMEOUT, base_settings, poll, runtime_threads)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- each kind of job ---------------------------------------------------------

@pytest.mark.slow
def test_async_job_runs_with_its_args_and_kwargs(harness):
    job_id = harness.web.post_json('/schedule', {
        'kind': 'async', 'args': [harness.records_path, 'a', 1, [2, 3]],
        'kwargs': {'flag': True, 'name': 'x'}}).json['id']
    [run] = harness.wait_records(1)
    assert run['values'] == ['a', 1, [2, 3]]
    assert run['extra'] == {'flag': True, 'name': 'x'}
    assert run['pid'] == os.getpid()  # combined mode: this process ran it
    harness.events.wait_for(job_id, 'job.removed')


@pytest.mark.slow
def test_date_job_half_a_second_ahead_runs_within_a_second(harness):
    added = time.time()
    run_date = added + 0.5
    harness.schedule('date', 'd', date=run_date)
    [run] = harness.wait_records(1)
    assert run['values'] == ['d']
    assert run['at'] >= run_date - 0.01, 'ran before its date'
    assert run['at'] - added < 1.0, f'ran {run["at"] - added:.2f}s after add'


@pytest.mark.slow
def test_interval_job_runs_repeatedly(harness):
    job_id = harness.schedule('interval', 'i', 7, seconds=0.3)
    runs = harness.wait_records(3)
    assert all(r['values'] == ['i', 7] for r in runs)
    gaps = [b['at'] - a['at'] for a, b in zip(runs, runs[1:])]
    assert all(0.2 < gap < 1.0 for gap in gaps), gaps
    harness.web.post_json('/cancel', {'id': job_id})
    harness.events.wait_for(job_id, 'job.removed')


@pytest.mark.slow
def test_cron_job_fires_every_second(harness):
    job_id = harness.schedule('cron', 'c', kwargs={'k': 'v'}, second='*')
    runs = harness.wait_records(2)
    assert [r['values'] for r in runs] == [['c'], ['c']]
    assert runs[0]['extra'] == {'k': 'v'}
    harness.web.post_json('/cancel', {'id': job_id})
    harness.events.wait_for(job_id, 'job.removed')


def test_cron_job_from_a_crontab(harness):
    # Every minute: it is stored with the right next run time (a test cannot
    # wait a minute for it to fire).
    job_id = harness.schedule('cron', 'tab', crontab='* * * * *')
    harness.events.wait_for(job_id, 'job.created')
    job = poll(lambda: harness.runtime.deferred.get_job(job_id))
    assert str(job.trigger).startswith('cron[')
    now = datetime.datetime.now(datetime.timezone.utc)
    assert 0 < (job.next_run_time - now).total_seconds() <= 60
    assert job.next_run_time.second == 0


@pytest.mark.slow
def test_cancel_job_stops_an_interval_job(harness):
    job_id = harness.schedule('interval', 'canceled', seconds=0.2)
    harness.wait_records(2)
    harness.web.post_json('/cancel', {'id': job_id})
    harness.events.wait_for(job_id, 'job.removed')
    runs_at_cancel = len(harness.records())
    assert harness.runtime.deferred.get_job(job_id) is None
    # A clock job: once it has ticked three times, the canceled job (every
    # 0.2s) would have run again had it not been canceled.
    clock = harness.schedule('interval', 'clock', seconds=0.2)
    harness.wait_records(3, where=lambda r: r['values'] == ['clock'])
    canceled_runs = [r for r in harness.records()
                     if r['values'] == ['canceled']]
    assert len(canceled_runs) <= runs_at_cancel
    harness.web.post_json('/cancel', {'id': clock})
    harness.events.wait_for(clock, 'job.removed')


@pytest.mark.slow
def test_cancel_of_a_date_job_before_it_runs(harness):
    job_id = harness.schedule('date', 'never', date=time.time() + 3600)
    harness.events.wait_for(job_id, 'job.created')
    harness.web.post_json('/cancel', {'id': job_id})
    harness.events.wait_for(job_id, 'job.removed')
    assert harness.events.types(job_id) == ['job.created', 'job.canceled',
                                            'job.removed']
    assert harness.runtime.pending_count('jobs') == 0


def test_caller_chosen_id_replaces_the_job(harness):
    harness.schedule('interval', 'first', id='report', minutes=10)
    harness.schedule('interval', 'second', id='report', minutes=5)
    harness.events.wait_for('report', 'job.created', count=2)
    # (JOB_CREATED fires just before the job is stored: poll the store.)
    stored = poll(lambda: [
        job for job in harness.runtime.jobs_page('jobs')
        if job.args[1]['args'][1:] == ['second']] and
        harness.runtime.jobs_page('jobs'))
    assert [job.id for job in stored] == ['report']
    assert stored[0].trigger.interval == datetime.timedelta(minutes=5)
    # and the id is what the view got back
    assert harness.schedule('date', 'x', id='mine',
                            date=time.time() + 3600) == 'mine'


@pytest.mark.slow
def test_caller_chosen_id_replaces_a_running_interval_job(harness):
    harness.schedule('interval', 'old', id='ticker', seconds=0.2)
    harness.wait_records(1, where=lambda r: r['values'] == ['old'])
    harness.schedule('interval', 'new', id='ticker', seconds=0.2)
    harness.wait_records(3, where=lambda r: r['values'] == ['new'])
    assert len(harness.runtime.deferred.get_jobs('jobs')) == 1
    # After the replacement only the new one runs (allow one old run that
    # was already under way when the replacement arrived).
    first_new = next(i for i, r in enumerate(harness.records())
                     if r['values'] == ['new'])
    later_old = [r for r in harness.records()[first_new + 1:]
                 if r['values'] == ['old']]
    assert len(later_old) <= 1


def test_delegator_wraps_every_job(make_harness):
    h = make_harness(**{'scheduler.delegator': 'tests.jobs:delegator'})
    h.start()
    h.schedule('async', 'async-run')
    h.schedule('date', 'date-run', date=time.time() + 0.2)
    runs = h.wait_records(4)
    values = [r['values'] for r in runs]
    assert values.count(['delegated', 'record']) == 2
    assert ['async-run'] in values and ['date-run'] in values
    for run_value in (['async-run'], ['date-run']):
        assert values.index(['delegated', 'record']) < values.index(run_value)


def test_jobs_run_with_the_app_threadlocals(harness):
    harness.web.post_json('/schedule', {
        'kind': 'async', 'func': 'record_registry',
        'args': [harness.records_path, 'tl']})
    [run] = harness.wait_records(1)
    assert run['values'] == ['webapp', 'tl']


def test_a_failing_job_does_not_stop_the_runtime(harness):
    failing = harness.web.post_json('/schedule', {
        'kind': 'async', 'func': 'fail', 'args': ['boom']}).json['id']
    harness.events.wait_for(failing, 'job.failed')
    harness.schedule('async', 'after')
    assert harness.wait_records(1)[0]['values'] == ['after']
    assert harness.runtime.running


# --- dates and time zones -------------------------------------------------------

@pytest.mark.slow
def test_epoch_int_and_float_dates(harness):
    now = time.time()
    harness.schedule('date', 'float', date=now + 0.3)
    harness.schedule('date', 'int', date=int(now) + 1)
    runs = harness.wait_records(2)
    by_value = {r['values'][0]: r['at'] for r in runs}
    assert by_value['float'] >= now + 0.3 - 0.01
    assert by_value['int'] >= int(now) + 1 - 0.01
    assert max(by_value.values()) - now < 2.5


@pytest.mark.slow
def test_naive_datetime_is_local_time(make_harness, records, local_timezone):
    # A zone far from UTC, so that reading a naive datetime as UTC would be
    # hours off (and, in the past, refused as beyond the grace time).
    local_timezone('Asia/Kolkata')
    h = make_harness(**{'scheduler.misfire_grace_time': '60'})
    h.start()
    naive = datetime.datetime.now() + datetime.timedelta(seconds=0.5)
    assert naive.tzinfo is None
    added = time.time()
    h.scheduler.add_date_job(jobs.record, naive, args=[records, 'naive'])
    [run] = h.wait_records(1)
    assert 0.4 <= run['at'] - added < 1.5
    h.scheduler.add_date_job(jobs.record, naive + datetime.timedelta(
        hours=5, minutes=30), args=[records, 'later'])  # accepted: future
    job = poll(lambda: [j for j in h.runtime.jobs_page('jobs')
                        if j.args[1]['args'][1] == 'later'])[0]
    expected = naive.astimezone() + datetime.timedelta(hours=5, minutes=30)
    assert abs((job.next_run_time - expected).total_seconds()) < 0.01


@pytest.mark.slow
def test_naive_datetime_uses_the_timezone_setting(make_harness, records):
    h = make_harness(**{'scheduler.timezone': 'Pacific/Auckland',
                        'scheduler.misfire_grace_time': '60'})
    h.start()
    zone = zoneinfo.ZoneInfo('Pacific/Auckland')
    naive = (datetime.datetime.now(zone)
             + datetime.timedelta(seconds=0.5)).replace(tzinfo=None)
    added = time.time()
    h.scheduler.add_date_job(jobs.record, naive, args=[records, 'nz'])
    [run] = h.wait_records(1)
    assert 0.4 <= run['at'] - added < 1.5


@pytest.mark.slow
def test_aware_datetime_is_honoured(harness, records):
    tokyo = zoneinfo.ZoneInfo('Asia/Tokyo')
    when = datetime.datetime.now(tokyo) + datetime.timedelta(seconds=0.5)
    added = time.time()
    harness.scheduler.add_date_job(jobs.record, when, args=[records, 'tokyo'])
    [run] = harness.wait_records(1)
    assert 0.4 <= run['at'] - added < 1.5
    # A fixed-offset zone (as a JSON round trip gives back) works too.
    minus_five = datetime.timezone(datetime.timedelta(hours=-5))
    later = datetime.datetime.now(minus_five) + datetime.timedelta(hours=2)
    job_id = harness.scheduler.add_date_job(jobs.noop, later)
    job = poll(lambda: harness.runtime.deferred.get_job(job_id))
    assert job.next_run_time == later


def test_date_in_the_past_within_grace_runs_late(harness):
    job_id = harness.schedule('date', 'late', date=time.time() - 30)
    [run] = harness.wait_records(1)
    assert run['values'] == ['late']
    harness.events.wait_for(job_id, 'job.removed')
    assert harness.events.types(job_id) == ['job.created', 'job.executed',
                                            'job.removed']


# --- scripts that load the app never consume --------------------------------------

def _write_ini(tmp_path, **settings):
    lines = ['[app:main]', 'use = call:tests.apps.webapp:main',
             'scheduler.combined = true',
             # The jobs live outside the app's package (tests.apps).
             'scheduler.allowed_modules = tests.jobs']
    lines += [f'{key} = {value}' for key, value in settings.items()]
    path = tmp_path / 'app.ini'
    path.write_text('\n'.join(lines) + '\n')
    return str(path)


def test_bootstrap_of_a_combined_app_does_not_consume(tmp_path):
    from pyramid.paster import bootstrap
    ini = _write_ini(tmp_path)
    before = threading.active_count()
    env = bootstrap(ini)
    try:
        scheduler = env['registry'].scheduler
        assert scheduler.settings.combined
        assert scheduler.runtime is None
        assert env['request'].scheduler is scheduler
        # The embedded database defaults to the ini file's directory.
        assert scheduler.settings.database_path == str(
            tmp_path / 'pscheduler.sqlite')
        # A script may still add jobs: they wait for a consumer.
        scheduler.add_async_job(jobs.noop)
        assert scheduler.runtime is None
        assert not runtime_threads()
    finally:
        env['closer']()
        env['registry'].scheduler.shutdown(timeout=5)
    assert threading.active_count() == before


def test_get_app_without_a_request_does_not_consume(tmp_path):
    from pyramid.paster import get_app
    app = get_app(_write_ini(tmp_path))
    try:
        assert app.registry.scheduler.runtime is None
        assert not runtime_threads()
        assert not os.path.exists(tmp_path / 'pscheduler.sqlite')
    finally:
        app.registry.scheduler.shutdown(timeout=5)


def test_prequest_style_request_does_not_consume(make_app):
    app = make_app()
    web = TestApp(app, extra_environ={'paste.command_request': True})
    assert web.get('/').json == {'runtime': False}
    assert app.registry.scheduler.runtime is None
    assert not runtime_threads()
    # and a real request afterwards does start it
    assert TestApp(app).get('/').status_int == 200
    assert app.registry.scheduler.runtime is not None


def test_consume_env_0_keeps_a_web_process_from_consuming(
        make_app, monkeypatch):
    monkeypatch.setenv(CONSUME_ENV, '0')
    app = make_app()
    TestApp(app).get('/')
    TestApp(app).get('/')
    assert app.registry.scheduler.runtime is None
    assert not runtime_threads()


def test_consume_env_1_lets_a_script_consume(tmp_path, monkeypatch, records):
    from pyramid.paster import bootstrap
    monkeypatch.setenv(CONSUME_ENV, '1')
    env = bootstrap(_write_ini(tmp_path))
    scheduler = env['registry'].scheduler
    try:
        assert scheduler.runtime is not None
        scheduler.add_async_job(jobs.record, args=[records, 'script'])
        poll(lambda: jobs.read_records(records))
    finally:
        env['closer']()
        scheduler.shutdown(timeout=5)


# --- two web processes on one store: each job runs once ---------------------------

def test_two_store_locks_in_one_process_conflict(tmp_path):
    # flock locks belong to an open file description: two opens of the same
    # file conflict even within one process, which is what lets the next
    # test run two combined-mode apps in one process.
    path = str(tmp_path / 'x.lock')
    first, second = StoreLock(path), StoreLock(path)
    assert first.try_acquire()
    assert not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()


@pytest.mark.slow
def test_two_combined_apps_on_one_store_run_each_job_once(
        make_app, records, tmp_path):
    first, second = make_app(), make_app()
    TestApp(first).get('/')
    TestApp(second).get('/')
    poll(lambda: first.registry.scheduler.runtime is not None)
    assert second.registry.scheduler.runtime is None  # standing by
    webs = [TestApp(first), TestApp(second)]
    for n in range(6):
        webs[n % 2].post_json('/schedule', {'kind': 'async',
                                            'args': [records, f'a{n}']})
    for n in range(2):
        webs[n % 2].post_json('/schedule', {
            'kind': 'date', 'date': time.time() + 0.3,
            'args': [records, f'd{n}']})
    poll(lambda: len(jobs.read_records(records)) >= 8)
    # Wait for the last date job's removal: nothing else can still run.
    runtime = first.registry.scheduler.runtime
    poll(lambda: runtime.pending_count('jobs') == 0 and not runtime.inflight)
    values = sorted(r['values'][0] for r in jobs.read_records(records))
    assert values == ['a0', 'a1', 'a2', 'a3', 'a4', 'a5', 'd0', 'd1']
    # When the consumer goes away, the one standing by takes over.
    first.registry.scheduler.shutdown(timeout=5)
    poll(lambda: second.registry.scheduler.runtime is not None)
    webs[1].post_json('/schedule', {'kind': 'async',
                                    'args': [records, 'after-failover']})
    poll(lambda: ['after-failover'] in
         [r['values'] for r in jobs.read_records(records)])


WEB_PROCESS = textwrap.dedent('''
    import json, sys
    from webtest import TestApp
    from tests.apps import webapp
    app = webapp.main({}, **json.loads(sys.argv[1]))
    TestApp(app).get('/')
    print('ready', app.registry.scheduler.runtime is not None, flush=True)
    sys.stdin.read()   # run until the test closes our stdin
    app.registry.scheduler.shutdown(timeout=5)
    print('stopped', flush=True)
''')


@pytest.mark.slow
def test_a_web_process_and_a_subprocess_run_each_job_once(
        make_app, records, tmp_path):
    settings = base_settings(tmp_path)
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop(CONSUME_ENV, None)
    other = subprocess.Popen(
        [sys.executable, '-c', WEB_PROCESS, json.dumps(settings)],
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        assert other.stdout.readline().split() == ['ready', 'True']
        app = make_app()
        web = TestApp(app)
        web.get('/')
        assert app.registry.scheduler.runtime is None  # the other one runs
        for n in range(4):
            web.post_json('/schedule', {'kind': 'async',
                                        'args': [records, f'a{n}']})
        web.post_json('/schedule', {'kind': 'date', 'date': time.time() + 0.3,
                                    'args': [records, 'd']})
        runs = poll(lambda: len(jobs.read_records(records)) >= 5
                    and jobs.read_records(records))
        assert {r['pid'] for r in runs} == {other.pid}
        other.stdin.close()
        assert other.stdout.readline().strip() == 'stopped'
        assert other.wait(TIMEOUT) == 0
        # This process takes over, and nothing ran twice.
        poll(lambda: app.registry.scheduler.runtime is not None)
        web.post_json('/schedule', {'kind': 'async',
                                    'args': [records, 'here']})
        runs = poll(lambda: len(jobs.read_records(records)) >= 6
                    and jobs.read_records(records))
        assert sorted(r['values'][0] for r in runs) == [
            'a0', 'a1', 'a2', 'a3', 'd', 'here']
        assert runs[-1]['pid'] == os.getpid()
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()


def test_each_runtime_locks_its_store(harness):
    settings = harness.settings
    assert not StoreLock(lock_path(settings, 'jobs')).try_acquire()
    harness.scheduler.shutdown(timeout=5)
    lock = StoreLock(lock_path(settings, 'jobs'))
    assert lock.try_acquire()
    lock.release()


@pytest.mark.slow
def test_several_queues_in_combined_mode(make_harness, records):
    h = make_harness(**{'scheduler.queues': 'jobs reports'})
    h.start()
    h.web.post_json('/schedule', {'kind': 'async', 'queue': 'reports',
                                  'args': [records, 'on-reports']})
    h.web.post_json('/schedule', {'kind': 'async',
                                  'args': [records, 'on-default']})
    runs = h.wait_records(2)
    assert sorted(r['values'][0] for r in runs) == ['on-default',
                                                   'on-reports']
    assert h.runtime.queues == ('jobs', 'reports')


# --- the demo ------------------------------------------------------------------------

@pytest.mark.slow
def test_demo_page_schedules_and_shows_runs(tmp_path, monkeypatch):
    """demo/ in combined mode: its home is the dashboard; each button of
    /add sends a job that runs, shows on /add and on the dashboard, where
    the periodic ones are canceled."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, 'demo'))
    import demoapp
    app = demoapp.main({'here': str(tmp_path)}, **{
        'scheduler.combined': 'true',
        'scheduler.dashboard.permission': '__no_permission_required__',
        'scheduler.database': str(tmp_path / 'demo.sqlite')})
    try:
        web = TestApp(app)
        assert web.get('/', status=303).location.endswith('/scheduler/')
        page = web.get('/add')
        assert 'No runs yet' in page.text
        for form in page.forms.values():
            if form.action.endswith('/schedule') and \
                    form['kind'].value in ('async', 'interval', 'cron'):
                assert '/scheduler/job/' in form.submit().location
        runs = str(tmp_path / 'demo-runs.jsonl')
        poll(lambda: len(jobs.read_records(runs)) >= 1)
        assert '<td>async</td>' in web.get('/add').text
        runtime = app.registry.scheduler.runtime
        poll(lambda: runtime.pending_count('jobs') == 2)
        listed = web.get('/scheduler/jobs').text
        assert 'demo-interval' in listed and 'demo-cron' in listed
        for job_id in ('demo-interval', 'demo-cron'):
            job_page = web.get(f'/scheduler/job/{job_id}')
            assert 'every' in job_page.text
            cancel = next(form for form in job_page.forms.values()
                          if form.action.endswith('/cancel'))
            assert cancel.submit().status_int == 303
        poll(lambda: runtime.pending_count('jobs') == 0)
        assert '0 deferred job(s)' in web.get('/scheduler/jobs').text
    finally:
        app.registry.scheduler.shutdown(timeout=5)


@pytest.mark.slow
def test_a_stopping_runtime_hands_messages_back(harness, records):
    """A message delivered while the runtime stops is requeued, not half
    handled (APScheduler and the worker pool are already shut down)."""
    class Message:
        acknowledged = False
        rejected = None

        def reject(self, requeue=False):
            self.rejected = requeue

        def ack(self):
            raise AssertionError('a stopping runtime must not ack')

    runtime = harness.runtime
    harness.scheduler.shutdown(timeout=5)
    message = Message()
    runtime.consumer.on_message(message)
    assert message.rejected is True
    # and a job sent while nobody consumes runs once a runtime is back
    harness.scheduler.add_async_job(jobs.record, args=[records, 'later'])
    harness.start()
    assert harness.wait_records(1)[0]['values'] == ['later']
