"""``scheduler.jobstore.default.class`` with two queues: a store per queue.

A custom job store class gets the arguments it is given. Given the same
ones for two queues, both queues' children read one table: jobs ran in the
other queue's child, a date job ran twice, a scheduler thread died. Now
each queue's arguments come from ``scheduler.jobstore.default.*`` (with
``{queue}`` and ``{id}`` filled in) and ``scheduler.queue.NAME.jobstore.*``,
and arguments that are the same for two queues are refused at start.
"""
import datetime
import logging
import threading
import time
import uuid

import pytest
import sqlalchemy
from pyramid.exceptions import ConfigurationError

from pyramid_scheduler.runtime.apscheduling import HandOvers, SafeStopScheduler
from pyramid_scheduler.settings import parse_settings
from tests.daemon_helpers import (
    PG_URL, producer, run_cli, wait_for, write_ini)
from tests.jobs import read_records

STORE_CLASS = 'tests.queue_stores:QueueTableStore'
QUEUES = ('jobs', 'mail')


def _parse(tmp_path, import_references=True, **conf):
    return parse_settings(
        {f'scheduler.{key}': value for key, value in conf.items()},
        here=str(tmp_path), import_references=import_references)


# --- the arguments of each queue's store -------------------------------------

@pytest.mark.parametrize('import_references', [True, False],
                         ids=['child', 'master'])
def test_same_arguments_for_two_queues_are_refused_naming_the_key(
        tmp_path, import_references):
    with pytest.raises(ConfigurationError) as info:
        _parse(tmp_path, import_references, queues='jobs mail', **{
            'jobstore.default.class': STORE_CLASS,
            'jobstore.default.url': 'postgresql://u:secret@h/db'})
    message = str(info.value)
    assert '"scheduler.jobstore.default.class"' in message
    assert 'queues jobs and mail would share one job store' in message
    assert '{queue}' in message
    assert 'secret' not in message   # argument names only, never values


def test_a_class_without_arguments_is_refused_for_two_queues(tmp_path):
    with pytest.raises(ConfigurationError,
                       match='"scheduler.jobstore.default.class"'):
        _parse(tmp_path, queues='jobs mail',
               **{'jobstore.default.class': STORE_CLASS})


def test_one_queue_keeps_its_arguments_unchanged(tmp_path):
    # Upgrades: a single queue's store stays where it was.
    settings = _parse(tmp_path, **{
        'jobstore.default.class': STORE_CLASS,
        'jobstore.default.url': 'sqlite:///x.sqlite'})
    assert settings.jobstore_arguments('jobs') == {'url': 'sqlite:///x.sqlite'}


def test_placeholders_give_each_queue_its_own_arguments(tmp_path):
    settings = _parse(tmp_path, queues='jobs mail', id='acme', **{
        'jobstore.default.class': STORE_CLASS,
        'jobstore.default.url': 'sqlite:///x.sqlite',
        'jobstore.default.tablename': '{id}_{queue}_jobs'})
    assert settings.jobstore_arguments('jobs') == {
        'url': 'sqlite:///x.sqlite', 'tablename': 'acme_jobs_jobs'}
    assert settings.jobstore_arguments('mail') == {
        'url': 'sqlite:///x.sqlite', 'tablename': 'acme_mail_jobs'}


def test_per_queue_arguments_override_the_default_ones(tmp_path):
    settings = _parse(tmp_path, queues='jobs mail', **{
        'jobstore.default.class': STORE_CLASS,
        'jobstore.default.url': 'sqlite:///x.sqlite',
        'queue.mail.jobstore.url': 'sqlite:///mail.sqlite',
        'queue.mail.jobstore.tablename': 'mail_{queue}'})
    assert settings.jobstore_arguments('jobs') == {'url': 'sqlite:///x.sqlite'}
    assert settings.jobstore_arguments('mail') == {
        'url': 'sqlite:///mail.sqlite', 'tablename': 'mail_mail'}


def test_per_queue_arguments_that_end_up_the_same_are_refused(tmp_path):
    with pytest.raises(ConfigurationError, match='jobs and mail'):
        _parse(tmp_path, queues='jobs mail', **{
            'jobstore.default.class': STORE_CLASS,
            'jobstore.default.tablename': 't',
            'queue.mail.jobstore.tablename': 't'})


def test_a_class_per_queue_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigurationError,
                       match=r'"scheduler\.queue\.mail\.jobstore\.class"'):
        _parse(tmp_path, queues='jobs mail', **{
            'jobstore.default.class': STORE_CLASS,
            'jobstore.default.tablename': '{queue}',
            'queue.mail.jobstore.class': STORE_CLASS})


def test_per_queue_arguments_without_a_class_are_refused(tmp_path):
    with pytest.raises(ConfigurationError,
                       match=r'"scheduler\.queue\.mail\.jobstore\.url"'):
        _parse(tmp_path, queues='jobs mail',
               **{'queue.mail.jobstore.url': 'sqlite:///mail.sqlite'})


def test_default_arguments_without_a_class_are_ignored_with_a_warning(
        tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger='pyramid_scheduler'):
        settings = _parse(tmp_path, queues='jobs mail',
                          **{'jobstore.default.url': 'sqlite:///x.sqlite'})
    assert settings.jobstore_class is None
    assert 'setting "scheduler.jobstore.default.url" is ignored' in \
        caplog.text


@pytest.mark.parametrize('import_references', [True, False],
                         ids=['child', 'master'])
def test_memory_stores_need_no_arguments(tmp_path, import_references):
    # Each process has its own: two queues never share one.
    settings = _parse(
        tmp_path, import_references, queues='jobs mail',
        **{'jobstore.default.class':
           'apscheduler.jobstores.memory:MemoryJobStore'})
    assert settings.jobstore_arguments('mail') == {}


def test_the_built_in_store_needs_no_arguments(tmp_path):
    settings = _parse(tmp_path, queues='jobs mail')
    assert settings.jobstore_class is None


# --- the scheduler thread survives an error in a pass -------------------------

def test_an_error_in_a_pass_is_logged_and_the_next_pass_comes(caplog):
    from apscheduler.jobstores.memory import MemoryJobStore

    class FailingOnceStore(MemoryJobStore):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def get_next_run_time(self):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError('store write lost')
            return super().get_next_run_time()

    ran = threading.Event()
    store = FailingOnceStore()
    scheduler = SafeStopScheduler(HandOvers(), jobstores={'default': store},
                                  jobstore_retry_interval=0.1)
    with caplog.at_level(logging.ERROR,
                         logger='pyramid_scheduler.runtime.apscheduling'):
        scheduler.start()
        try:
            scheduler.add_job(ran.set, 'date', run_date=datetime.datetime.now(
                datetime.timezone.utc) + datetime.timedelta(seconds=0.3))
            assert ran.wait(10), 'the scheduler thread died'
        finally:
            scheduler.shutdown()
    assert 'a pass over the job stores failed' in caplog.text
    assert 'store write lost' in caplog.text


# --- a real pscheduler: each queue's jobs in its own child, once ---------------

def _store_url(store, tmp_path):
    if store == 'postgresql':
        return PG_URL
    return f'sqlite:///{tmp_path}/custom-stores.sqlite'


def _drop_tables(url, scheduler_id):
    engine = sqlalchemy.create_engine(url)
    try:
        meta = sqlalchemy.MetaData()
        meta.reflect(engine)
        with engine.begin() as connection:
            for table in meta.sorted_tables:
                if table.name.startswith(scheduler_id):
                    table.drop(connection)
    finally:
        engine.dispose()


def _table_ids(url, table):
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return sorted(row[0] for row in connection.execute(
                sqlalchemy.text(f'SELECT id FROM "{table}"')))
    except sqlalchemy.exc.DBAPIError:
        return []   # not created yet
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize('store', ['sqlite', 'postgresql'])
def test_each_queue_runs_its_own_jobs_once(tmp_path, daemons, store):
    scheduler_id = f'qs{uuid.uuid4().hex[:10]}'
    url = _store_url(store, tmp_path)
    out = str(tmp_path / 'runs.jsonl')
    ini = write_ini(tmp_path / 'app.ini', queues=QUEUES, settings={
        'scheduler.id': scheduler_id,
        # record_queue lives beside the store class, outside tests.jobs.
        'scheduler.allowed_modules': 'tests.jobs tests.queue_stores',
        'scheduler.jobstore.default.class': STORE_CLASS,
        'scheduler.jobstore.default.url': url,
        'scheduler.jobstore.default.tablename': '{id}_{queue}_custom'})
    try:
        daemon = daemons(ini)
        daemon.wait_ready(QUEUES)
        with producer(ini) as scheduler:
            later = time.time() + 3600
            fire_at = time.time() + 3
            kept = {queue: scheduler.add_date_job(
                'tests.queue_stores:record_queue', later,
                args=[out, f'later-{queue}'], queue=queue)
                for queue in QUEUES}
            for queue in QUEUES:
                scheduler.add_date_job(
                    'tests.queue_stores:record_queue', fire_at,
                    args=[out, f'date-{queue}'], queue=queue)
            interval = {queue: scheduler.add_interval_job(
                'tests.queue_stores:record_queue', seconds=2,
                args=[out, f'interval-{queue}'], queue=queue)
                for queue in QUEUES}
            # Each queue's table holds its own jobs, none of the other's.
            for queue in QUEUES:
                table = f'{scheduler_id}_{queue}_custom'
                wait_for(lambda: kept[queue] in _table_ids(url, table),
                         what=f'job {kept[queue]} in {table}')
                other = [j for q, j in kept.items() if q != queue]
                assert not set(other) & set(_table_ids(url, table))

            def runs(label):
                return [r for r in read_records(out)
                        if r['values'] == [label]]

            wait_for(lambda: all(runs(f'date-{q}') for q in QUEUES) and all(
                len(runs(f'interval-{q}')) >= 2 for q in QUEUES),
                timeout=30, what=f'the runs; log:\n{daemon.log()}')
            for queue in QUEUES:
                scheduler.cancel_job(interval[queue], queue=queue)
            time.sleep(1.5)   # a second firing of the date jobs shows up
        records = read_records(out)
        for queue in QUEUES:
            ran_in = {r['extra']['queue'] for r in records
                      if r['values'][0].endswith(f'-{queue}')}
            assert ran_in == {queue}, records
            assert len(runs(f'date-{queue}')) == 1, records
            times = sorted(r['at'] for r in runs(f'interval-{queue}'))
            # Once per run time: a run fired twice shows as two records
            # within a fraction of the 2 s interval (a late run, up to
            # 1.5 s late, does not).
            gaps = [b - a for a, b in zip(times, times[1:])]
            assert min(gaps) > 0.5, (queue, times)
        assert not [r for r in records if r['values'][0].startswith('later')]
        log_text = daemon.log()
        assert 'a pass over the job stores failed' not in log_text
        assert 'two queues share one job store' not in log_text
        assert 'Traceback' not in log_text, log_text
        assert 'Exception in thread' not in log_text, log_text
    finally:
        if store == 'postgresql':
            _drop_tables(url, scheduler_id)


@pytest.mark.slow
def test_pscheduler_refuses_two_queues_on_one_store_with_exit_3(tmp_path):
    ini = write_ini(tmp_path / 'app.ini', queues=QUEUES, settings={
        'scheduler.jobstore.default.class': STORE_CLASS,
        'scheduler.jobstore.default.url':
            f'sqlite:///{tmp_path}/custom-stores.sqlite'})
    result = run_cli(ini=ini, timeout=60)
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert '"scheduler.jobstore.default.class"' in result.stderr
    assert 'queues jobs and mail would share one job store' in result.stderr
    assert 'pscheduler ready' not in result.stderr + result.stdout


# --- a job out of another queue's store is run, and said loudly ---------------

class _Runner:
    def __init__(self):
        self.executed = []

    def execute(self, job, then=None, scheduled_run_time=None):
        self.executed.append((job.queue, scheduled_run_time))

    def notify(self, type_, job, **params):
        pass


def test_a_job_of_another_queue_in_a_store_is_logged_as_an_error(
        tmp_path, caplog):
    # Two spellings of one table pass the check of the settings: the job
    # still runs, and the log says the stores are shared.
    from types import SimpleNamespace
    from pyramid_scheduler.runtime.deferred import DeferredJobs
    runner = _Runner()
    deferred = DeferredJobs(_parse(tmp_path, queues='jobs mail'), ('jobs',),
                            1, runner, inflight=None)
    now = datetime.datetime.now(datetime.timezone.utc)
    job = SimpleNamespace(id='j1', args=('mail', {'func': 'x', 'id': 'j1'}),
                          misfire_grace_time=None, _jobstore_alias='jobs')
    with caplog.at_level(logging.ERROR, logger='pyramid_scheduler'):
        deferred._run_due(job, [now], last_run=False)
    assert runner.executed == [('mail', now)]
    assert 'the job store of queue jobs holds job j1 of queue mail' in \
        caplog.text
    caplog.clear()
    job._jobstore_alias = 'mail'
    deferred._run_due(job, [now], last_run=False)
    assert 'holds job' not in caplog.text
