"""Due deferred runs, between the job store and a worker, kept durable.

APScheduler takes a run out of its job store (deletes a date job, moves a
periodic job's next run time) as it hands the run to the executor. When
more runs are due than there are workers, the rest wait in memory, and a
process killed then (SIGKILL, OOM, power cut) lost them: they were in
neither the store nor anywhere else. So the runtime writes each due run
that has to wait for a worker to a table beside the queue's job store
(``<scheduler.id>_<queue>_due``) before APScheduler forgets it, and deletes
it when a worker starts the run; the next runtime of the queue starts
whatever it finds there, late, within the job's misfire grace time (unless
the store still holds that run: a process killed between writing it down
and APScheduler taking it out of the store leaves it in both, and the store
fires it). Workers start a run only once APScheduler has taken it out of
its store, so a run is never both started and still in the store.

A run that a free worker takes at once (:class:`DeferredWorkers` says) is
not written down: it waits for nothing but its removal from the store, and
the worker, waiting for it already, starts it then; it counts as started
when it leaves the store, as a written-down run counts as started when its
row is deleted. Writing it down too would put two more commits (one by the
worker, competing with APScheduler's for SQLite's write lock) between its
run time and its start.

A run is started once: one already running when its process is killed is
not started again (APScheduler's own semantics for deferred jobs; async
jobs, acknowledged when done, run again). Only SQLAlchemy job stores (the
default) have this table; other stores keep APScheduler's behaviour.
"""
import logging
import pickle
import threading
import time

from sqlalchemy import (
    Column, Float, Integer, LargeBinary, MetaData, Table, Unicode, bindparam,
    select)

log = logging.getLogger(__name__)


class DueRuns:
    """The table of one queue's due runs; ``add`` / ``started`` / ``left``."""

    def __init__(self, engine, table_name):
        self.engine = engine
        self.table = Table(
            table_name, MetaData(),
            Column('id', Integer, primary_key=True),
            Column('job_id', Unicode(191), nullable=False),
            Column('run', LargeBinary, nullable=False),
            Column('created', Float, nullable=False))
        self.table.create(engine, checkfirst=True)
        # Built once: building a statement per call cost more than running
        # it, on the way of every due run.
        self._insert = self.table.insert()
        self._delete = self.table.delete().where(
            self.table.c.id == bindparam('row_id'))

    def add(self, run):
        """Keep ``run`` (a dict with its ``job_id``); return its row id."""
        with self.engine.begin() as connection:
            return connection.execute(self._insert, {
                'job_id': run['job_id'], 'created': time.time(),
                'run': pickle.dumps(run, pickle.HIGHEST_PROTOCOL),
            }).inserted_primary_key[0]

    def started(self, row_id):
        with self.engine.begin() as connection:
            connection.execute(self._delete, {'row_id': row_id})

    def left(self):
        """``[(row id, run)]`` left by a runtime that is gone, oldest first."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(self.table.c.id, self.table.c.job_id, self.table.c.run)
                .order_by(self.table.c.id)).all()
        runs = []
        for row in rows:
            try:
                runs.append((row.id, pickle.loads(row.run)))
            except Exception:
                log.exception('due run %s of job %s does not load; dropped',
                              row.id, row.job_id)
                self.started(row.id)
        return runs


class DeferredWorkers:
    """Whether a deferred run given to the pool starts at once.

    The pool (first in, first out) starts a run at once while it holds no
    more runs than it has workers; the others wait for a worker, and must
    be written down. Every run given to the pool is counted by
    :meth:`run_added` and uncounted by :meth:`run_done`.
    """

    def __init__(self, count):
        self._count = count
        self._runs = 0
        self._lock = threading.Lock()

    def run_added(self):
        """Count a run given to the pool; True if a worker starts it now."""
        with self._lock:
            self._runs += 1
            return self._runs <= self._count

    def run_done(self):
        with self._lock:
            self._runs -= 1


def runs_left(store, due_runs):
    """The due runs a dead runtime left and never started, but those the
    store still holds: killed before APScheduler took them out of the
    store, the store fires them, not us."""
    left = []
    for row_id, run in due_runs.left():
        if _still_stored(store, run):
            due_runs.started(row_id)
        else:
            left.append((row_id, run))
    return left


def _still_stored(store, run):
    """Whether a due run is still pending in its SQLAlchemy job store."""
    table = store.jobs_t
    with store.engine.connect() as connection:
        next_run = connection.execute(
            select(table.c.next_run_time).where(
                table.c.id == run['job_id'])).scalar()
    return next_run is not None and \
        next_run <= run['run_times'][-1].timestamp() + 0.001
