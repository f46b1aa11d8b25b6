"""Searching a queue's deferred jobs by id or name (runtime.jobsearch), in
a real SQLAlchemy job store on SQLite and on PostgreSQL, and in memory."""
import datetime
import uuid

import pytest
from apscheduler.job import Job
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger

from pyramid_scheduler.runtime import jobsearch
from tests.daemon_helpers import PG_URL

UTC = datetime.timezone.utc
BASE = datetime.datetime(2030, 1, 1, tzinfo=UTC)
# id -> name; stored in this order of next run time.
JOBS = [('report-1', 'monthly report'), ('report-2', 'weekly report'),
         ('mail_1', 'send mail'), ('mailx1', 'send Mail'),
         ('cleanup', 'tidy the reports'), ('100%', 'percent')]


@pytest.fixture(params=['sqlite', 'postgresql', 'memory'])
def store(request, tmp_path):
    if request.param == 'memory':
        store = MemoryJobStore()
    else:
        url = (f'sqlite:///{tmp_path / "jobs.sqlite"}'
               if request.param == 'sqlite' else PG_URL)
        store = SQLAlchemyJobStore(
            url=url, tablename=f'search_{uuid.uuid4().hex[:10]}')
    scheduler = BackgroundScheduler(timezone=UTC)
    store.start(scheduler, 'jobs')
    for n, (job_id, name) in enumerate(JOBS):
        run = BASE + datetime.timedelta(minutes=n)
        store.add_job(Job(scheduler, id=job_id, name=name,
                          func='tests.jobs:echo', args=('report', 'x'),
                          kwargs={}, trigger=DateTrigger(run),
                          executor='default', misfire_grace_time=1,
                          coalesce=True, max_instances=1,
                          next_run_time=run))
    yield store
    if isinstance(store, SQLAlchemyJobStore):
        store.jobs_t.drop(store.engine)
    store.shutdown()


def search(store, text, offset=0, limit=50):
    if isinstance(store, SQLAlchemyJobStore):
        page, total, capped = jobsearch.search_sql_store(store, text, offset,
                                                         limit)
    else:
        page, total, capped = jobsearch.search_memory_store(store, text,
                                                            offset, limit)
    return [job.id for job in page], total, capped


def test_a_piece_of_the_id_or_of_the_name(store):
    assert search(store, 'report-') == (['report-1', 'report-2'], 2, False)
    # by name only: "tidy the reports"; "report" in the args matches nothing
    assert search(store, 'report') == (['report-1', 'report-2', 'cleanup'],
                                       3, False)
    assert search(store, 'weekly') == (['report-2'], 1, False)


def test_case_sensitive_and_wildcards_are_plain_text(store):
    assert search(store, 'Mail') == (['mailx1'], 1, False)
    assert search(store, 'mail_') == (['mail_1'], 1, False)
    assert search(store, '0%') == (['100%'], 1, False)
    assert search(store, 'nothing like it') == ([], 0, False)


def test_paging_through_the_matches(store):
    assert search(store, 'e', offset=1, limit=2)[0] == ['report-2', 'mail_1']
    assert search(store, 'e', offset=5, limit=2)[0] == ['100%']
    assert search(store, 'e', offset=9)[0] == []


def test_the_count_stops_at_its_limit(store, monkeypatch):
    monkeypatch.setattr(jobsearch, 'COUNT_LIMIT', 3)
    ids, total, capped = search(store, 'e', limit=2)
    assert len(ids) == 2 and total == 3 and capped


# --- through a running pscheduler: pscheduler --message jobs search= / job --

def test_job_and_search_arguments_are_checked_before_sending():
    from pscheduler.message import parse_message
    assert parse_message('jobs search=rep limit=5') == (
        'jobs', {'search': 'rep', 'limit': 5})
    assert parse_message('job rep-1') == ('job', {'id': 'rep-1'})
    with pytest.raises(ValueError, match='needs id'):
        parse_message('job')


@pytest.mark.slow
def test_search_and_one_job_from_the_command_line(tmp_path, daemons):
    import json

    from tests import jobs
    from tests.daemon_helpers import (
        producer, run_cli, stored_job_ids, wait_for, write_ini)
    ini = write_ini(tmp_path / 'app.ini')
    daemon = daemons(ini)
    daemon.wait_ready(['jobs'])
    with producer(ini) as scheduler:
        for n in range(3):
            scheduler.add_cron_job(jobs.noop, hour=9, minute=n,
                                   id=f'report-{n}', name=f'report {n}')
        scheduler.add_interval_job(jobs.noop, seconds=30, id='cleanup',
                                   name='tidy the reports')
    wait_for(lambda: len(stored_job_ids(ini, 'jobs')) == 4, 30,
             what='4 stored jobs')
    found = run_cli('--message', 'jobs search=report- limit=2', '--json',
                    ini=ini)
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)['replies'][0]['result']
    assert result['total'] == 3 and not result['capped']
    assert [job['id'] for job in result['jobs']] == ['report-0', 'report-1']
    assert result['jobs'][0]['trigger_words'].startswith(
        'every day at 09:00')
    by_name = run_cli('--message', 'jobs search=tidy', ini=ini)
    assert 'cleanup' in by_name.stdout and 'report-0' not in by_name.stdout
    one = run_cli('--message', 'job cleanup', ini=ini)
    assert one.returncode == 0, one.stderr
    assert 'every 30 seconds' in one.stdout
    assert 'tests.jobs:noop' in one.stdout
    missing = run_cli('--message', 'job nope', ini=ini)
    assert 'no deferred job nope here' in missing.stdout
