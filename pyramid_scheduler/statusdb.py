"""The job status table, in the job store database (``scheduler.jobstore.url``,
the embedded SQLite file by default): one row per job id.

Written by the runtimes (in batches: runtime.records) and read by anyone
with the settings (``scheduler.job_status``, the failed-job registry). Its
values are plain columns, except the result and the job spec (for requeue),
kept as the configured serializer makes them.
"""
import logging
import os
import threading
import time

import sqlalchemy as sa
from kombu import serialization
from sqlalchemy.exc import IntegrityError

from . import status as st
from .storedb import create_table, relax_commit, relax_sqlite
from .statusupsert import (KEPT_COLUMNS, postgresql_upsert,
                           write_sqlite_rows)

log = logging.getLogger(__name__)

# As the APScheduler job store's id column (deferred.MAX_JOB_ID_LENGTH).
ID_LENGTH = 191
# A long traceback is cut: the record is for people, and rows stay small.
MAX_TEXT = 20000
# What a run leaves in a record; a requeue clears it.
RUN_COLUMNS = ('started', 'finished', 'result', 'result_type', 'error',
               'traceback')


def table_name(settings):
    return f'{settings.scheduler_id}_job_status'.replace('.', '_')


def define_table(name):
    return sa.Table(
        name, sa.MetaData(),
        sa.Column('job_id', sa.String(ID_LENGTH), primary_key=True),
        sa.Column('queue', sa.String(ID_LENGTH)),
        sa.Column('func', sa.Text),
        sa.Column('kind', sa.String(16)),
        sa.Column('state', sa.String(16), nullable=False, index=True),
        sa.Column('attempts', sa.Integer),
        sa.Column('created', sa.Float),
        sa.Column('started', sa.Float),
        sa.Column('finished', sa.Float),
        sa.Column('updated', sa.Float, nullable=False, index=True),
        sa.Column('result', sa.LargeBinary),
        sa.Column('result_type', sa.String(100)),
        sa.Column('error', sa.Text),
        sa.Column('traceback', sa.Text),
        sa.Column('spec', sa.LargeBinary),
        sa.Column('spec_type', sa.String(100)),
        # The unique token of the async job that took the id (jobs.py).
        sa.Column('token', sa.String(64)))


def encode(value, serializer):
    """``(content type, bytes)`` of ``value``, or ``(None, None)`` if the
    serializer cannot take it back unchanged enough to be worth keeping."""
    try:
        content_type, _, data = serialization.dumps(value, serializer)
    except Exception:
        return None, None
    if isinstance(data, str):
        data = data.encode('utf-8')
    return content_type, data


def decode(data, content_type):
    if data is None or content_type is None:
        return None
    try:
        return serialization.loads(bytes(data), content_type, 'utf-8',
                                   accept=[content_type])
    except Exception:
        log.warning('could not decode a stored %s value', content_type)
        return None


class StatusTable:
    """The table of one scheduler id; an engine per process (made on first
    use, again after a fork)."""

    def __init__(self, settings):
        self.settings = settings
        self.table = define_table(table_name(settings))
        self._engine = None
        self._pid = None
        self._lock = threading.Lock()

    @property
    def engine(self):
        if self._engine is None or self._pid != os.getpid():
            with self._lock:
                if self._engine is None or self._pid != os.getpid():
                    self._engine = self._make_engine()
                    self._pid = os.getpid()
        return self._engine

    def _make_engine(self):
        url = self.settings.jobstore_url
        options = {}
        if url.startswith('sqlite'):
            # The embedded file is shared with the broker's rows: wait
            # for its write lock rather than fail.
            options['connect_args'] = {'timeout': 30}
        else:
            options['pool_pre_ping'] = True
        engine = sa.create_engine(url, **options)
        relax_sqlite(engine)
        create_table(engine, self.table)
        return engine

    def close(self):
        if self._engine is not None and self._pid == os.getpid():
            self._engine.dispose()
        self._engine = None

    # --- reading ---------------------------------------------------------

    def get(self, job_id):
        """The :class:`~.status.JobStatus` of ``job_id``, or None."""
        with self.engine.connect() as connection:
            row = connection.execute(self.table.select().where(
                self.table.c.job_id == job_id)).mappings().first()
        return None if row is None else to_status(row)

    def state_of(self, job_id):
        with self.engine.connect() as connection:
            return connection.execute(sa.select(self.table.c.state).where(
                self.table.c.job_id == job_id)).scalar()

    def spec_of(self, job_id):
        """``(queue, spec)`` kept for ``job_id`` (for requeue), or None."""
        columns = self.table.c
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(
                columns.queue, columns.spec, columns.spec_type).where(
                columns.job_id == job_id)).first()
        if row is None or row.spec is None:
            return None
        return row.queue, decode(row.spec, row.spec_type)

    def in_state(self, state, queue=None, limit=100):
        """Records in ``state`` (of ``queue``), newest first."""
        query = self.table.select().where(self.table.c.state == state)
        if queue is not None:
            query = query.where(self.table.c.queue == queue)
        # One batch writes many records at one time: then the last ended.
        query = query.order_by(self.table.c.updated.desc(),
                               self.table.c.finished.desc()).limit(limit)
        with self.engine.connect() as connection:
            return [to_status(row) for row in
                    connection.execute(query).mappings()]

    def count_in_state(self, state, queue=None):
        query = sa.select(sa.func.count()).select_from(self.table).where(
            self.table.c.state == state)
        if queue is not None:
            query = query.where(self.table.c.queue == queue)
        with self.engine.connect() as connection:
            return connection.execute(query).scalar()

    def canceled_since(self, since):
        """``{id: when}`` of the jobs canceled at or after ``since``."""
        columns = self.table.c
        with self.engine.connect() as connection:
            return dict(connection.execute(sa.select(
                columns.job_id, columns.updated).where(
                columns.state == st.CANCELED, columns.updated >= since)).all())

    # --- writing ---------------------------------------------------------

    def upsert(self, rows):
        """Write ``rows`` (dicts with ``job_id``, ``state`` and any other
        columns) in one transaction. A row's missing or None columns keep
        what the record had; a canceled record stays canceled (a late
        ``queued`` from a runtime must not bring it back)."""
        if not rows:
            return
        now = time.time()
        full = [_full_row(row, now) for row in rows]
        with self.engine.begin() as connection:
            relax_commit(connection)
            if connection.dialect.name == 'sqlite':
                write_sqlite_rows(connection, self.table, full)
            elif connection.dialect.name == 'postgresql':
                connection.execute(postgresql_upsert(self.table), full)
            else:
                for row in full:
                    self._upsert_one(connection, row)

    def _upsert_one(self, connection, row):
        columns = self.table.c
        values = {name: value for name, value in row.items()
                  if value is not None and name != 'job_id'}
        done = connection.execute(self.table.update().where(
            columns.job_id == row['job_id'],
            columns.state != st.CANCELED).values(**values)).rowcount
        if not done and self.state_of_in(connection, row['job_id']) is None:
            connection.execute(self.table.insert().values(**row))

    def state_of_in(self, connection, job_id):
        return connection.execute(sa.select(self.table.c.state).where(
            self.table.c.job_id == job_id)).scalar()

    def claim(self, row):
        """Take ``row['job_id']`` for a unique async job; True if taken.

        Free: no record, or a final one. A canceled record made after the
        job was added (``row['created']``) canceled this very job: not
        free. A pending record with the same token is this job again (a
        redelivery): taken. Atomic across processes: of two claims of one
        id, one wins.
        """
        row = _full_row(row, time.time())
        for _ in range(3):
            try:
                with self.engine.begin() as connection:
                    taken = self._claim_in(connection, row)
                if taken is not None:
                    return taken
            except IntegrityError:
                pass   # another process inserted it first: look again
        return False

    def _claim_in(self, connection, row):
        columns = self.table.c
        current = connection.execute(sa.select(
            columns.state, columns.token, columns.updated).where(
            columns.job_id == row['job_id'])).first()
        if current is None:
            connection.execute(self.table.insert().values(**row))
            return True
        if current.state in st.PENDING_STATES:
            return current.token == row['token']
        if current.state == st.CANCELED and \
                current.updated >= (row['created'] or 0):
            return False
        updated = connection.execute(self.table.update().where(
            columns.job_id == row['job_id'],
            columns.state == current.state,
            columns.updated == current.updated).values(**row)).rowcount
        return True if updated else None

    def cancel(self, job_id, queue):
        """Cancel a job not started: its record reads ``canceled`` (one is
        made if the job has not reached a runtime yet). The state it had,
        or None (no record); a started or ended job is left as it is."""
        columns = self.table.c
        now = time.time()
        with self.engine.begin() as connection:
            state = self.state_of_in(connection, job_id)
            if state is None:
                connection.execute(self.table.insert().values(
                    job_id=job_id, queue=queue, state=st.CANCELED,
                    updated=now, finished=now, attempts=0))
            elif state in (st.QUEUED, st.SCHEDULED, st.RETRYING):
                connection.execute(self.table.update().where(
                    columns.job_id == job_id).values(
                    state=st.CANCELED, updated=now, finished=now))
        return state

    def requeue(self, job_id, from_states, values):
        """Put a record in one of ``from_states`` back to ``queued`` for a
        new run (``values``: kind, created, token, spec), clearing what the
        last run left; the row as it was, or None if it was not in one of
        those states (someone else requeued it first)."""
        columns = self.table.c
        content_type, spec = encode(values['spec'], self.settings.serializer)
        fresh = dict(values, spec=spec, spec_type=content_type,
                     state=st.QUEUED, attempts=0, updated=time.time(),
                     **{name: None for name in RUN_COLUMNS})
        with self.engine.begin() as connection:
            previous = connection.execute(self.table.select().where(
                columns.job_id == job_id)).mappings().first()
            if previous is None or previous['state'] not in from_states:
                return None
            done = connection.execute(self.table.update().where(
                columns.job_id == job_id,
                columns.updated == previous['updated']).values(
                **fresh)).rowcount
        return dict(previous) if done else None

    def restore(self, previous, token):
        """Undo :meth:`requeue` (its job could not be sent), unless the
        record has changed since."""
        columns = self.table.c
        with self.engine.begin() as connection:
            connection.execute(self.table.update().where(
                columns.job_id == previous['job_id'],
                columns.token == token, columns.state == st.QUEUED).values(
                **{k: v for k, v in previous.items() if k != 'job_id'}))

    def delete_finished_before(self, horizon):
        """Delete final records last updated before ``horizon``; how many."""
        columns = self.table.c
        with self.engine.begin() as connection:
            return connection.execute(self.table.delete().where(
                columns.state.in_(sorted(st.FINAL_STATES)),
                columns.updated < horizon)).rowcount

    def delete_in_state(self, state, queue=None):
        """Delete the records in ``state`` (of ``queue``); how many."""
        query = self.table.delete().where(self.table.c.state == state)
        if queue is not None:
            query = query.where(self.table.c.queue == queue)
        with self.engine.begin() as connection:
            return connection.execute(query).rowcount


def _full_row(row, now):
    full = {name: None for name in KEPT_COLUMNS}
    full.update(row)
    full['updated'] = now
    for name in ('error', 'traceback'):
        if isinstance(full[name], str) and len(full[name]) > MAX_TEXT:
            full[name] = full[name][:MAX_TEXT] + '\n[cut]'
    return full


def to_status(row):
    return st.JobStatus(
        id=row['job_id'], queue=row['queue'], func=row['func'],
        kind=row['kind'], state=row['state'], attempts=row['attempts'] or 0,
        created=st.aware(row['created']), started=st.aware(row['started']),
        finished=st.aware(row['finished']),
        result=decode(row['result'], row['result_type']),
        error=row['error'] or None, traceback=row['traceback'] or None)

