"""The transactional outbox (issue 13, finding 2): a job added in a
committed transaction runs once, whatever the broker did at the commit.

Real processes: a web process (tests.apps.outbox_web, pyramid_tm) serves
one request and exits; a private redis-server of the test's own is killed
and restarted on its port; a pscheduler daemon drains the outbox. Each run
appends one line to a records file, so a lost job and a doubled one show.
"""
import json
import logging
import subprocess
import sys
import types

import pytest
import transaction

from pyramid_scheduler.spool import Spool, spool_path
from tests import jobs
from tests.conftest import base_settings, queued
from tests.daemon_helpers import (
    PersistentRedis, child_env, producer, wait_for, write_ini)

WEB_APP = 'tests.apps.outbox_web:main'


def serve_one_request(ini, records, label, *flags):
    """Run the web process: one committed request, then exit."""
    done = subprocess.run(
        [sys.executable, '-m', 'tests.apps.outbox_web', str(ini), records,
         label, *flags], capture_output=True, text=True, timeout=60,
        env=child_env(), cwd=str(ini.parent))
    return done


def labels(records):
    return [record['values'][0] for record in jobs.read_records(records)]


def run_marker_and_count(ini, records, label):
    """Send a marker job at once (no transaction) and wait for it: what
    was queued before it has been taken by then. The runs of ``label``."""
    with producer(ini) as scheduler:
        scheduler.add_async_job(jobs.record, args=[records, 'marker'])
    wait_for(lambda: 'marker' in labels(records), 30, what='the marker job')
    return labels(records).count(label)


def settings_for(tmp_path, broker_url, **extra):
    return {'scheduler.broker.url': broker_url,
            'scheduler.id': f'pst-outbox-{tmp_path.name[-20:]}',
            'scheduler.broker.send_timeout': '0.5s', **extra}


@pytest.mark.slow
def test_committed_job_runs_once_after_the_broker_came_back(
        tmp_path, daemons):
    redis_server = PersistentRedis(tmp_path / 'redis').start()
    try:
        ini = write_ini(tmp_path / 'app.ini', app=WEB_APP,
                        settings=settings_for(tmp_path, redis_server.url))
        records = str(tmp_path / 'records.jsonl')
        redis_server.kill()
        web = serve_one_request(ini, records, 'committed')
        assert web.returncode == 0, web.stderr
        answer = json.loads(web.stdout)
        assert 'is lost' not in web.stderr
        assert 'kept and will be sent when the broker is back' in web.stderr
        # The web process is gone; the job waits in its host's outbox.
        spool = Spool(spool_path(_settings(ini)))
        assert spool.count() == 1
        redis_server.start()
        daemon = daemons(ini)
        daemon.wait_ready(['jobs'])
        wait_for(lambda: 'committed' in labels(records), 30,
                 what=f'the committed job {answer["id"]}; daemon log:\n'
                      f'{daemon.log()}')
        assert spool.count() == 0
        assert run_marker_and_count(ini, records, 'committed') == 1
    finally:
        redis_server.kill()


@pytest.mark.slow
@pytest.mark.parametrize('broker', ['sqlite', 'redis', 'rabbitmq'])
def test_a_crash_between_publish_and_removal_runs_the_job_once(
        tmp_path, daemons, broker_for, broker):
    settings = broker_for(broker, **{'scheduler.broker.send_timeout': '2s'})
    ini = write_ini(tmp_path / 'app.ini', app=WEB_APP, settings=settings)
    records = str(tmp_path / 'records.jsonl')
    daemon = daemons(ini)
    daemon.wait_ready(['jobs'])
    web = serve_one_request(ini, records, 'twice sent',
                            '--crash-after-publish')
    # Died after the publish, before the removal: the entry is still there,
    # claimed by a process that is gone, and the daemon sends it again.
    assert web.returncode == 9, web.stderr
    spool = Spool(spool_path(_settings(ini)))
    wait_for(lambda: spool.count() == 0, 30,
             what=f'the outbox drained; daemon log:\n{daemon.log()}')
    daemon.wait_log('dropped a second copy of outbox entry', timeout=30)
    assert run_marker_and_count(ini, records, 'twice sent') == 1


@pytest.fixture
def outbox_app(tmp_path):
    """``outbox_app(**settings)``: tests.apps.outbox_web in this process
    (WebTest), its scheduler shut down after the test."""
    from webtest import TestApp

    from tests.apps import outbox_web
    made = []

    def make(**settings):
        app = outbox_web.main({}, **base_settings(tmp_path, **settings))
        made.append(app)
        return TestApp(app), app.registry.scheduler
    yield make
    for app in made:
        app.registry.scheduler.shutdown(timeout=5)


@pytest.mark.slow
def test_the_web_process_sends_it_once_the_broker_is_back(
        outbox_app, tmp_path, records):
    redis_server = PersistentRedis(tmp_path / 'redis').start()
    try:
        web, scheduler = outbox_app(**{
            'scheduler.combined': 'false',
            **settings_for(tmp_path, redis_server.url)})
        redis_server.kill()
        web.post_json('/add', {'args': [records, 'kept']})
        spool = Spool(spool_path(scheduler.settings))
        assert spool.count() == 1
        redis_server.start()
        # No daemon: the web process' retry thread sends it.
        wait_for(lambda: spool.count() == 0, 20, what='the outbox drained')
        assert queued(scheduler.settings) == 1
    finally:
        redis_server.kill()


@pytest.mark.slow
def test_past_the_retry_horizon_a_dead_letter_and_an_error(
        outbox_app, caplog, tmp_path, records):
    caplog.set_level(logging.INFO, logger='pyramid_scheduler')
    unreachable = PersistentRedis(tmp_path / 'never-started').url
    web, scheduler = outbox_app(**{
        'scheduler.combined': 'false',
        **settings_for(tmp_path, unreachable, **{
            'scheduler.broker.send_timeout': '0.2s',
            'scheduler.outbox.retry_for': '1s'})})
    assert web.post_json('/add', {'args': [records, 'never']}).json['id']
    spool = Spool(spool_path(scheduler.settings))
    dead = wait_for(spool.dead_letters, 20, what='a dead-lettered entry')
    assert len(dead) == 1 and dead[0][1].endswith('.jobs')
    assert 'not sent within scheduler.outbox.retry_for' in dead[0][2]
    assert spool.count() == 0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR
              and 'gave up sending a message' in r.getMessage()]
    assert len(errors) == 1, caplog.text


@pytest.mark.parametrize('path, status', [
    ('/schedule_then_raise', 500), ('/schedule_then_abort', 200)])
def test_an_aborted_request_leaves_nothing(make_harness, path, status):
    harness = make_harness(**{'scheduler.combined': 'false'})
    params = {'kind': 'async', 'args': [harness.records_path, 'aborted']}
    if status == 500:
        with pytest.raises(RuntimeError):
            harness.web.post_json(path, params)
    else:
        harness.web.post_json(path, params, status=status)
    assert harness.queued() == 0
    assert Spool(spool_path(harness.settings)).count() == 0


class RefusesToVote:
    """A data manager that votes after the outbox, and refuses."""

    def __init__(self, manager):
        self.transaction_manager = manager

    def sortKey(self):
        return '~~~zz refuses'

    def abort(self, txn):
        pass

    tpc_begin = commit = tpc_finish = tpc_abort = abort

    def tpc_vote(self, txn):
        raise RuntimeError('refused the vote')


def test_a_vote_refused_after_the_outbox_wrote_leaves_nothing(
        make_harness, records):
    harness = make_harness(**{'scheduler.combined': 'false'})
    spool = Spool(spool_path(harness.settings))
    manager = transaction.TransactionManager(explicit=True)
    saved, transaction.manager = transaction.manager, manager
    try:
        txn = manager.begin()
        harness.scheduler.add_async_job(jobs.record, args=[records, 'no'])
        txn.join(RefusesToVote(manager))
        with pytest.raises(RuntimeError, match='refused the vote'):
            manager.commit()
    finally:
        transaction.manager = saved
    assert spool.exists() and spool.count() == 0
    assert harness.queued() == 0


def test_a_rolled_back_savepoint_forgets_its_jobs(make_harness, records):
    harness = make_harness(**{'scheduler.combined': 'false'})
    manager = transaction.TransactionManager(explicit=True)
    saved, transaction.manager = transaction.manager, manager
    try:
        manager.begin()
        harness.scheduler.add_async_job(jobs.record, args=[records, 'kept'])
        savepoint = manager.savepoint()
        harness.scheduler.add_async_job(jobs.record, args=[records, 'undone'])
        savepoint.rollback()
        manager.commit()
    finally:
        transaction.manager = saved
    assert [m.payload['job']['args'][1] for m in harness.peek()] == ['kept']


def test_a_committed_request_sends_through_the_outbox(make_harness):
    harness = make_harness(**{'scheduler.combined': 'false'})
    harness.web.post_json('/schedule', {
        'kind': 'async', 'args': [harness.records_path, 'sent']})
    spool = Spool(spool_path(harness.settings))
    assert spool.exists() and spool.count() == 0
    [message] = harness.peek()
    assert message.headers['x-pscheduler-spool-entry']


def test_a_second_copy_is_a_duplicate_a_redelivery_is_not(tmp_path):
    from pyramid_scheduler.runtime.received import ReceivedCopies
    from pyramid_scheduler.settings import parse_settings
    received = ReceivedCopies(parse_settings({}, here=str(tmp_path)))

    def copy(entry, token):
        return types.SimpleNamespace(headers={
            'x-pscheduler-spool-entry': entry,
            'x-pscheduler-spool-copy': token})
    assert not received.is_duplicate(copy('e1', 'first'))
    # Its consumer died before acknowledging it: handled again.
    assert not received.is_duplicate(copy('e1', 'first'))
    assert received.is_duplicate(copy('e1', 'second'))
    assert not received.is_duplicate(copy('e2', 'second'))
    # Not from the outbox: never looked up.
    assert not received.is_duplicate(types.SimpleNamespace(headers={}))


def _settings(ini):
    from pscheduler.config import load_config
    return load_config(str(ini)).settings
