"""Make tests/data/upgrade-0391b38.sqlite with the code of an older release.

The fixture of tests/test_upgrade.py: the embedded SQLite database (broker
and job store in one file, the default) of a system that ran pyramid_scheduler
at commit 0391b38, stopped with work in it. Today's code must pick it up as
if nothing had changed. Regenerate it only with the OLD code:

    git -C <checkout> worktree add /tmp/old-0391b38 0391b38
    python3.11 -m venv /tmp/old-0391b38/.venv
    /tmp/old-0391b38/.venv/bin/pip install -e '/tmp/old-0391b38[test,redis]'
    cd /tmp/old-0391b38 && PYTHONPATH=/tmp/old-0391b38 .venv/bin/python \\
        <checkout>/tests/data/make_upgrade_fixture.py \\
        <checkout>/tests/data/upgrade-0391b38.sqlite
    git -C <checkout> worktree remove /tmp/old-0391b38

(0391b38's pyramid_scheduler imports ``redis`` even for the SQLite default,
hence ``[redis]``.) Queue ``jobs``, ``scheduler.id`` left at its default.

``--postgres URL OUT.json`` instead (``pip install psycopg2-binary`` in the
old venv too) stores the deferred jobs in a PostgreSQL job store at URL
(a SQLAlchemy URL) and writes its table's rows to OUT.json
(tests/data/upgrade-0391b38-postgres.json: id, next_run_time, job_state in
base64), then drops the table: a PostgreSQL dump is not portable, rows are.
Only the job store is on PostgreSQL there; the queued messages are the
SQLite fixture's business.

What it holds (ids in :data:`STORED` and :data:`QUEUED`):

- in the job store ``pyramid_scheduler_jobs_jobs``, stored by a running
  runtime of the old code (so pickled by it):
  ``upgrade-far-date`` (a date job in 2099), ``upgrade-interval`` (every
  second), ``upgrade-cron`` (every second), ``upgrade-due-date`` (a date job
  whose time is already past when anyone loads the fixture, with a misfire
  grace time of 90 years, so it runs at once on start) and
  ``upgrade-canceled`` (a date job in 2099, canceled by a queued message);
- in the broker table ``pscheduler_message``, sent with no runtime running
  (so not yet consumed): three async jobs, a date job in 2099
  (``upgrade-queued-date``) and the cancel of ``upgrade-canceled``.

Every job calls ``tests.jobs:record('upgrade-records.jsonl', <label>, ...)``:
a relative path, written in the daemon's working directory (the test's
tmp_path). Periodic jobs start 30 s after generation, so none runs here.
"""
import base64
import datetime
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time

from pyramid.config import Configurator

RECORDS = 'upgrade-records.jsonl'
FUNC = 'tests.jobs:record'
FAR = datetime.datetime(2099, 1, 1, tzinfo=datetime.timezone.utc)
NINETY_YEARS = 90 * 365 * 24 * 3600

STORED = ('upgrade-far-date', 'upgrade-interval', 'upgrade-cron',
          'upgrade-due-date', 'upgrade-canceled')
QUEUED = ('upgrade-queued-date',)
ASYNC_LABELS = ('async-1', 'async-2', 'async-3')


def scheduler_for(database, **settings):
    config = Configurator(settings={'scheduler.database': database,
                                    'scheduler.queues': 'jobs', **settings})
    config.include('pyramid_scheduler')
    config.commit()
    return config.registry.scheduler


def stored_ids(database, jobstore_url=None):
    if jobstore_url:
        return {row[0] for row in postgres_rows(jobstore_url)}
    connection = sqlite3.connect(database)
    try:
        return {row[0] for row in connection.execute(
            'SELECT id FROM pyramid_scheduler_jobs_jobs')}
    except sqlite3.OperationalError:
        return set()
    finally:
        connection.close()


POSTGRES_ID = 'upgrade_0391b38'
POSTGRES_TABLES = (f'{POSTGRES_ID}_jobs_jobs', f'{POSTGRES_ID}_jobs_due')


def postgres_rows(url):
    import sqlalchemy
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sqlalchemy.text(
                f'SELECT id, next_run_time, job_state FROM '
                f'{POSTGRES_TABLES[0]} ORDER BY id')).all()
    except sqlalchemy.exc.ProgrammingError:
        return []
    finally:
        engine.dispose()


def drop_postgres_tables(url):
    import sqlalchemy
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            for table in POSTGRES_TABLES:
                connection.execute(sqlalchemy.text(
                    f'DROP TABLE IF EXISTS {table}'))
    finally:
        engine.dispose()


def store_deferred_jobs(database, jobstore_url=None):
    """Add the deferred jobs through a running runtime, wait until they are
    in the job store, and stop it before any is due."""
    extra = ({'scheduler.jobstore.url': jobstore_url,
              'scheduler.id': POSTGRES_ID} if jobstore_url else {})
    scheduler = scheduler_for(database, **extra)
    scheduler.start()
    assert scheduler.runtime.wait_ready(30), 'the old runtime did not start'
    soon = time.time() + 30
    start = datetime.datetime.fromtimestamp(soon, datetime.timezone.utc)
    scheduler.add_date_job(FUNC, FAR, args=[RECORDS, 'far-date'],
                           id='upgrade-far-date')
    scheduler.add_interval_job(FUNC, start_date=start, seconds=1,
                               args=[RECORDS, 'interval'],
                               id='upgrade-interval')
    scheduler.add_cron_job(FUNC, start_date=start, second='*',
                           args=[RECORDS, 'cron'], id='upgrade-cron')
    scheduler.add_date_job(FUNC, soon, args=[RECORDS, 'due-date'],
                           id='upgrade-due-date',
                           misfire_grace_time=NINETY_YEARS)
    scheduler.add_date_job(FUNC, FAR, args=[RECORDS, 'canceled'],
                           id='upgrade-canceled')
    deadline = time.monotonic() + 20
    while stored_ids(database, jobstore_url) != set(STORED):
        assert time.monotonic() < deadline, stored_ids(database,
                                                       jobstore_url)
        time.sleep(0.05)
    scheduler.shutdown(timeout=10)
    assert time.time() < soon, 'too slow: the due-date job may have run'


def queue_messages(database):
    """Send what a web process would while no runtime consumes."""
    scheduler = scheduler_for(database)
    for label in ASYNC_LABELS:
        scheduler.add_async_job(FUNC, args=[RECORDS, label],
                                kwargs={'from': '0391b38'})
    scheduler.add_date_job(FUNC, FAR, args=[RECORDS, 'queued-date'],
                           id='upgrade-queued-date')
    scheduler.cancel_job('upgrade-canceled')
    scheduler.shutdown()


def compact(database):
    """Everything in the one file (no -wal beside it), small."""
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        connection.execute('PRAGMA wal_checkpoint(TRUNCATE)')
        connection.execute('VACUUM')
        connection.execute('PRAGMA wal_checkpoint(TRUNCATE)')
        messages = connection.execute(
            'SELECT COUNT(*) FROM pscheduler_message').fetchone()[0]
    finally:
        connection.close()
    assert messages == len(ASYNC_LABELS) + len(QUEUED) + 1, messages


def dump_postgres(url, target):
    """Store the deferred jobs on PostgreSQL; write the rows to ``target``."""
    directory = tempfile.mkdtemp(prefix='psu-')
    os.chdir(directory)
    drop_postgres_tables(url)
    try:
        store_deferred_jobs(os.path.join(directory, 'pscheduler.sqlite'),
                            jobstore_url=url)
        rows = [{'id': row.id, 'next_run_time': row.next_run_time,
                 'job_state': base64.b64encode(row.job_state).decode()}
                for row in postgres_rows(url)]
        assert not os.path.exists(RECORDS), 'a job ran during generation'
    finally:
        drop_postgres_tables(url)
        os.chdir('/')
        shutil.rmtree(directory)
    with open(target, 'w', encoding='utf-8') as out:
        json.dump({'made_by': 'tests/data/make_upgrade_fixture.py at 0391b38',
                   'table': 'APScheduler SQLAlchemyJobStore rows',
                   'rows': rows}, out, indent=1)
        out.write('\n')
    print(f'{target}: {len(rows)} rows: {[row["id"] for row in rows]}')


def main(target):
    directory = tempfile.mkdtemp(prefix='psu-')
    os.chdir(directory)  # where a job that ran by mistake would write
    database = os.path.join(directory, 'pscheduler.sqlite')
    store_deferred_jobs(database)
    queue_messages(database)
    compact(database)
    assert not os.path.exists(RECORDS), 'a job ran during generation'
    with open(database, 'rb') as source, open(target, 'wb') as out:
        out.write(source.read())
    os.chdir('/')
    shutil.rmtree(directory)
    print(f'{target}: {os.path.getsize(target)} bytes; stored '
          f'{sorted(stored_ids(target))}')


if __name__ == '__main__':
    if sys.argv[1] == '--postgres':
        dump_postgres(sys.argv[2], os.path.abspath(sys.argv[3]))
    else:
        main(os.path.abspath(sys.argv[1]))
