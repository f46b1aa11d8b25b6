"""Upgrading a running system with jobs stored: the user notices nothing.

tests/data/upgrade-0391b38.sqlite is the embedded database (broker and job
store) of a system that ran the code of commit 0391b38 and was stopped with
work in it; tests/data/make_upgrade_fixture.py made it with that code and
says what it holds. Today's pscheduler starts on a copy of it and must:

- list the stored jobs (``pscheduler --message jobs``), pickled by the old
  code;
- run the async jobs queued and not yet consumed;
- take in the queued date job and the queued cancel (which removes a
  stored job);
- run the date job that was due while the system was down (within its
  misfire grace time);
- keep firing the stored interval and cron jobs.

The same holds for a PostgreSQL job store: the rows the old code wrote
there (tests/data/upgrade-0391b38-postgres.json) are loaded into a table of
their own, which today's daemon then serves.
"""
import base64
import json
import shutil
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests import jobs
from tests.daemon_helpers import (
    PG_URL, run_cli, stored_job_ids, wait_for, write_ini)

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).parent / 'data' / 'upgrade-0391b38.sqlite'
POSTGRES_ROWS = Path(__file__).parent / 'data' / \
    'upgrade-0391b38-postgres.json'
RECORDS = 'upgrade-records.jsonl'   # relative: in the daemon's directory

# What the old code left, and what must be left of it once the new code has
# consumed the queued messages: the canceled and the due date job are gone.
STORED_BEFORE = {'upgrade-far-date', 'upgrade-interval', 'upgrade-cron',
                 'upgrade-due-date', 'upgrade-canceled'}
DEFERRED_AFTER = {'upgrade-far-date', 'upgrade-interval', 'upgrade-cron',
                  'upgrade-queued-date'}


def labels(path):
    return Counter(record['values'][0] for record in jobs.read_records(path))


def listed_jobs(ini):
    """The ids ``pscheduler --message jobs`` lists for the queue jobs."""
    result = run_cli('--message', 'jobs', '--json', ini=ini)
    assert result.returncode == 0, result.stderr
    [reply] = json.loads(result.stdout)['replies']
    return {job['id'] for job in reply['result']['jobs']}


def test_a_database_of_0391b38_runs_on_with_todays_code(tmp_path, daemons):
    shutil.copy(FIXTURE, tmp_path / 'pscheduler.sqlite')
    ini = write_ini(tmp_path / 'app.ini')
    assert set(stored_job_ids(ini, 'jobs')) == STORED_BEFORE
    records = tmp_path / RECORDS

    daemon = daemons(ini)
    daemon.wait_ready({'jobs'})

    # The queued async jobs run once each, the overdue date job once.
    wait_for(lambda: {'async-1', 'async-2', 'async-3', 'due-date'}
             <= set(labels(records)), timeout=30,
             what=f'the queued and due jobs to run: {labels(records)}; '
                  f'log:\n{daemon.log()}')
    # The queued cancel and date job are consumed: the store has what the
    # old system would have had.
    wait_for(lambda: set(stored_job_ids(ini, 'jobs')) == DEFERRED_AFTER,
             timeout=30, what='the stored jobs after the queued messages')
    assert listed_jobs(ini) == DEFERRED_AFTER

    # The periodic jobs keep firing (each second), under the new code.
    seen = labels(records)
    wait_for(lambda: labels(records)['interval'] >= seen['interval'] + 2
             and labels(records)['cron'] >= seen['cron'] + 2, timeout=30,
             what=f'the interval and cron jobs to fire: {labels(records)}')

    final = labels(records)
    assert [final[f'async-{n}'] for n in (1, 2, 3)] == [1, 1, 1]
    assert final['due-date'] == 1
    assert 'canceled' not in final and 'far-date' not in final
    assert 'queued-date' not in final
    for record in jobs.read_records(records):
        if record['values'][0].startswith('async-'):
            assert record['extra'] == {'from': '0391b38'}
    assert 'Traceback' not in daemon.log()


@pytest.fixture
def postgres_store():
    """A job store table of a fresh scheduler.id on PostgreSQL, holding the
    rows 0391b38 wrote; dropped after the test."""
    import sqlalchemy
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    scheduler_id = f'upg{uuid.uuid4().hex[:10]}'
    tables = [f'{scheduler_id}_jobs_jobs', f'{scheduler_id}_jobs_due']
    store = SQLAlchemyJobStore(url=PG_URL, tablename=tables[0])
    store.jobs_t.create(store.engine, checkfirst=True)  # APScheduler's schema
    rows = json.loads(POSTGRES_ROWS.read_text(encoding='utf-8'))['rows']
    with store.engine.begin() as connection:
        connection.execute(store.jobs_t.insert(), [
            {'id': row['id'], 'next_run_time': row['next_run_time'],
             'job_state': base64.b64decode(row['job_state'])}
            for row in rows])
    try:
        yield scheduler_id
    finally:
        with store.engine.begin() as connection:
            for table in tables:
                connection.execute(sqlalchemy.text(
                    f'DROP TABLE IF EXISTS {table}'))
        store.engine.dispose()


def test_a_postgresql_job_store_of_0391b38_runs_on(tmp_path, daemons,
                                                   postgres_store):
    ini = write_ini(tmp_path / 'app.ini', settings={
        'scheduler.jobstore.url': PG_URL, 'scheduler.id': postgres_store})
    records = tmp_path / RECORDS
    daemon = daemons(ini)
    daemon.wait_ready({'jobs'})

    wait_for(lambda: labels(records)['due-date'] >= 1, timeout=30,
             what=f'the overdue date job to run; log:\n{daemon.log()}')
    # No cancel was queued here: every stored job but the date job that
    # ran is still there.
    wait_for(lambda: listed_jobs(ini) == STORED_BEFORE - {'upgrade-due-date'},
             timeout=30, what='the stored jobs listed')
    seen = labels(records)
    wait_for(lambda: labels(records)['interval'] >= seen['interval'] + 2
             and labels(records)['cron'] >= seen['cron'] + 2, timeout=30,
             what=f'the interval and cron jobs to fire: {labels(records)}')
    final = labels(records)
    assert final['due-date'] == 1
    assert 'canceled' not in final and 'far-date' not in final
    assert 'Traceback' not in daemon.log()
