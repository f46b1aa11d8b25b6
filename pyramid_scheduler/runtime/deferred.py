"""Deferred jobs: the APScheduler of the queues whose job stores we own.

:class:`DeferredJobs` assembles APScheduler (one persistent job store per
queue, the executor that hands due runs back here, SQLite pragmas and WAL
checkpointers), stores and removes the jobs the dispatcher receives, and
runs their due runs in a pool of their own, so a due run never waits
behind prefetched async jobs. Due runs are written down when no worker is
free (see dueruns) and those a dead runtime never started are started at
the next start. The APScheduler adaptations are in apscheduling.
"""
import datetime
import logging
import os
import types
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy.event
from apscheduler.executors.pool import ThreadPoolExecutor as APSThreadPool
from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

from .. import status, transports
from ..errors import InvalidJob
from ..events import Event, JobInfo
from ..jobs import build_trigger, check_options, scheduler_options
from .apscheduling import (
    HandingOverJobStore, HandOvers, RuntimeExecutor, SafeStopScheduler)
from .dueruns import DeferredWorkers, DueRuns, runs_left
from .walcheckpoint import WalCheckpointer, sqlite_pragmas

log = logging.getLogger(__name__)

INTERNAL_STORE = '_internal'
# The id column of APScheduler's SQLAlchemy job store is 191 characters.
MAX_JOB_ID_LENGTH = 191
# Persisted: pickled into every stored job (see execution).
STORED_JOB_FUNC = 'pyramid_scheduler.execution:stored_job_marker'

# A deferred job checked and built, ready to store (see DeferredJobs.prepare).
PreparedJob = namedtuple('PreparedJob', 'queue spec trigger name options')


class DeferredJobs:
    """The job stores of ``queues``, their scheduler and their due runs."""

    def __init__(self, settings, queues, worker_count, runner, inflight,
                 housekeeping=None, fences=None):
        self.settings = settings
        # queue -> the may_fire() of its job store's lock (storelock).
        self._fences = fences or {}
        self.queues = queues
        self._worker_count = worker_count
        self._runner = runner
        self._inflight = inflight
        self._housekeeping = housekeeping
        # Which due runs start at once (dueruns); restarted ones count too.
        self._deferred_workers = DeferredWorkers(worker_count)
        self._pool = None
        self._scheduler = None
        self._checkpointers = {}   # SQLite job store path -> WalCheckpointer
        self._due_runs = {}        # queue -> dueruns.DueRuns

    # --- lifecycle ---------------------------------------------------------

    def start(self):
        self._pool = ThreadPoolExecutor(
            max_workers=self._worker_count,
            thread_name_prefix='pscheduler-deferred')
        self._scheduler = build_scheduler(
            self.settings, self.queues, self, self._checkpointers,
            self._housekeeping)
        self._restart_due_runs()
        self._scheduler.start()
        for checkpointer in self._checkpointers.values():
            checkpointer.start()

    def shutdown(self):
        """Submit no more runs; the runs submitted go on (see Runtime.stop)."""
        if self._scheduler is not None and self._scheduler.running:
            # Returns once APScheduler submits no more runs.
            self._scheduler.shutdown(wait=False)
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def finished(self):
        """True once every thread of the due runs' pool has ended."""
        threads = getattr(self._pool, '_threads', ())
        return not any(thread.is_alive() for thread in threads)

    def threads(self):
        """APScheduler, and the WAL checkpointers: for the thread watch."""
        return self._scheduler, list(self._checkpointers.values())

    def close(self):
        """Stop the WAL checkpointers (after the last run)."""
        for checkpointer in self._checkpointers.values():
            checkpointer.stop()

    # --- what the dispatcher stores and removes ----------------------------

    def prepare(self, queue, spec):
        """A :data:`PreparedJob` of a deferred job, or InvalidJob.

        Builds what APScheduler will store without storing it: whatever
        fails here fails because of the message and would fail again at
        every redelivery, so it goes to the dead-letter queue, never back to
        the broker (only storing it may fail for a reason worth a retry).
        """
        try:
            trigger = build_trigger(spec['kind'], spec['trigger'],
                                    self.settings.timezone)
            # Options APScheduler would refuse (TypeError) go to the
            # dead-letter queue, not back to the broker to fail forever.
            check_options(spec['options'], spec['kind'])
            options = scheduler_options(spec['options'])
            name = options.pop('name', None) or spec['func']
            if not isinstance(spec['id'], str) or not 0 < len(
                    spec['id']) <= MAX_JOB_ID_LENGTH:
                raise InvalidJob(f'job id must be a string of 1 to '
                                 f'{MAX_JOB_ID_LENGTH} characters, not '
                                 f'{spec["id"]!r:.80}')
            now = datetime.datetime.now(datetime.timezone.utc)
            Job(self._scheduler, id=spec['id'], func=STORED_JOB_FUNC,
                trigger=trigger, executor='default', args=(queue, spec),
                kwargs={}, name=name,
                next_run_time=trigger.get_next_fire_time(None, now),
                **options)
        except InvalidJob:
            raise
        except Exception as exc:
            raise InvalidJob(f'invalid {spec["kind"]} job: '
                             f'{type(exc).__name__}: {exc}') from exc
        return PreparedJob(queue, spec, trigger, name, options)

    def store(self, job):
        """Store a :data:`PreparedJob`, replacing a job of the same id."""
        self._scheduler.add_job(
            STORED_JOB_FUNC, job.trigger, args=(job.queue, job.spec),
            id=job.spec['id'], name=job.name, jobstore=job.queue,
            replace_existing=True, **job.options)

    def remove(self, queue, job_id):
        """Remove a stored job; its spec, or None if there was none."""
        try:
            job = self._scheduler.get_job(job_id, jobstore=queue)
            self._scheduler.remove_job(job_id, jobstore=queue)
        except JobLookupError:
            log.warning('cancel of job %s in queue %s: no such job (it may '
                        'have run already)', job_id, queue)
            return None
        return None if job is None else job.args[1]

    # --- reading the stores ------------------------------------------------

    def get_job(self, job_id, queue=None):
        """APScheduler's Job ``job_id`` (in ``queue``'s store), or None."""
        return self._scheduler.get_job(job_id, jobstore=queue)

    def get_jobs(self, queue):
        return self._scheduler.get_jobs(jobstore=queue)

    def modify_job(self, job_id, queue, **changes):
        """Change a stored job (say, its ``next_run_time``)."""
        return self._scheduler.modify_job(job_id, jobstore=queue, **changes)

    def jobstore(self, queue):
        return self._scheduler._lookup_jobstore(queue)

    def due_runs(self, queue):
        """The queue's :class:`DueRuns` table (SQLAlchemy stores only)."""
        return self._due_runs.get(queue)

    def checkpointer(self, path):
        """The WalCheckpointer of the SQLite file at ``path``, if any."""
        return self._checkpointers.get(os.path.abspath(path))

    # --- due runs ----------------------------------------------------------

    def _restart_due_runs(self):
        """Start the due runs a dead runtime of our queues never started."""
        for queue in self.queues:
            store = self.jobstore(queue)
            if not isinstance(store, SQLAlchemyJobStore):
                continue
            table = f'{self.settings.scheduler_id}_{queue}_due'.replace(
                '.', '_')
            due_runs = self._due_runs[queue] = DueRuns(store.engine, table)
            left = runs_left(store, due_runs)
            if left:
                log.warning('queue %s: starting %d deferred run(s) that were '
                            'due when the previous runtime died',
                            queue, len(left))
            for row_id, run in left:
                self._deferred_workers.run_added()
                job = types.SimpleNamespace(
                    id=run['job_id'], args=(queue, run['spec']),
                    misfire_grace_time=run['misfire_grace_time'])
                self.submit_run(self.run_stored_job, job, run['run_times'],
                                run['last_run'], (queue, row_id))

    def keep_due_run(self, aps_job, run_times, last_run):
        """Write a due run down unless a worker starts it at once (see
        dueruns); ``(queue, row id)``, or None if not kept. Call once per run
        given to the pool."""
        if self._deferred_workers.run_added():
            return None
        queue, spec = aps_job.args
        due_runs = self._due_runs.get(queue)
        if due_runs is None:
            return None
        try:
            return queue, due_runs.add({
                'job_id': aps_job.id, 'spec': spec, 'run_times': run_times,
                'last_run': last_run,
                'misfire_grace_time': aps_job.misfire_grace_time})
        except Exception:
            log.exception('job %s: could not write its due run down; it runs '
                          'now, but a crash before it starts would lose it',
                          aps_job.id)
            return None

    def may_fire(self, queue):
        """Whether this process owns ``queue``'s job store now."""
        return self._fences.get(queue, lambda: True)()

    def _due_run_started(self, due):
        if due is None:
            return
        queue, row_id = due
        try:
            # Under the job stores lock, as APScheduler writes to the store:
            # two writers that meet in SQLite wait in its busy handler,
            # which sleeps a millisecond or more.
            with self._scheduler._jobstores_lock:
                self._due_runs[queue].started(row_id)
        except Exception:
            log.exception('could not delete due run %s of queue %s: it may '
                          'start again after a restart', row_id, queue)

    def submit_run(self, fn, *args):
        """Run ``fn(*args)`` (a due run) in the deferred pool."""
        # In flight from now, not from when a worker is free: a stopping
        # runtime waits for the due runs still queued (see Runtime.stop).
        self._inflight.add(+1)
        try:
            self._pool.submit(self._run_tracked, fn, *args)
        except BaseException:
            self._inflight.add(-1)
            raise

    def _run_tracked(self, fn, *args):
        try:
            fn(*args)
        finally:
            self._inflight.add(-1)

    def run_stored_job(self, aps_job, run_times, last_run, due=None,
                       out_of_store=None):
        try:
            if out_of_store is not None:
                # Wait until APScheduler has taken the run out of the job
                # store (it does so after handing it over), so that a
                # started run is never still in the store.
                out_of_store.wait()
            if not self.may_fire(aps_job.args[0]):
                log.error('job %s: not started: no longer the owner of its '
                          'job store (its new owner runs it)', aps_job.id)
                return
            self._due_run_started(due)
            self._run_due(aps_job, run_times, last_run)
        finally:
            self._deferred_workers.run_done()

    def _run_due(self, aps_job, run_times, last_run):
        queue, spec = aps_job.args
        _check_store_of(aps_job, queue)
        job = JobInfo(spec, queue=queue)
        now = datetime.datetime.now(datetime.timezone.utc)
        state = None
        for number, run_time in enumerate(run_times, 1):
            then = (status.SUCCEEDED if last_run and number == len(run_times)
                    else status.SCHEDULED)   # its record after this run
            late = (now - run_time).total_seconds()
            grace = aps_job.misfire_grace_time
            if grace is not None and late > grace:
                self._runner.missed(job, run_time, late, then)
                continue
            state = self._runner.execute(job, then=then,
                                         scheduled_run_time=run_time)
        if last_run and state != status.RETRYING:
            self._runner.notify(Event.JOB_REMOVED, job)


def _check_store_of(aps_job, queue):
    """Say so when a job comes out of another queue's job store.

    settings.check_stores_apart refuses arguments that are the same for two
    queues, but two different texts may still name one table (two spellings
    of a URL): then each queue's process runs the other's jobs, some twice.
    The job still runs (not running it would lose it).
    """
    store = getattr(aps_job, '_jobstore_alias', None) or queue
    if store != queue:
        log.error('the job store of queue %s holds job %s of queue %s: two '
                  'queues share one job store and run each other\'s jobs; '
                  'give each its own (see "Job stores" in the README)',
                  store, aps_job.id, queue)


def build_scheduler(settings, queues, deferred, checkpointers,
                    housekeeping=None):
    """APScheduler with a persistent job store per queue, whose due runs
    go to ``deferred`` (through apscheduling.RuntimeExecutor); the WAL
    checkpointers of SQLite stores are added to ``checkpointers``."""
    hand_overs = HandOvers(deferred.may_fire)
    jobstores = {INTERNAL_STORE: MemoryJobStore()}
    for queue in queues:
        jobstores[queue] = _make_jobstore(settings, queue, hand_overs,
                                          checkpointers)
    scheduler = SafeStopScheduler(
        hand_overs,
        jobstores=jobstores,
        executors={'default': RuntimeExecutor(deferred, hand_overs),
                   'internal': APSThreadPool(1)},
        job_defaults={'misfire_grace_time': settings.misfire_grace_time,
                      'coalesce': settings.coalesce,
                      'max_instances': 1},
        timezone=settings.timezone or _local_timezone(),
    )
    if settings.apscheduler_options:
        scheduler.configure(gconfig=settings.apscheduler_options,
                            prefix='apscheduler.')
    if settings.housekeeping_interval and housekeeping is not None:
        scheduler.add_job(housekeeping, 'interval',
                          seconds=settings.housekeeping_interval,
                          jobstore=INTERNAL_STORE, executor='internal',
                          id='housekeeping', name='housekeeping')
    return scheduler


def _make_jobstore(settings, queue, hand_overs, checkpointers):
    if settings.jobstore_class is not None:
        # The queue's own arguments: settings.check_stores_apart refused
        # those under which two queues would share one store.
        return settings.jobstore_class(**settings.jobstore_arguments(queue))
    options = {}
    if settings.jobstore_url.startswith('sqlite'):
        options['connect_args'] = {'timeout': transports.SQLITE_BUSY_TIMEOUT}
    else:
        options['pool_pre_ping'] = True
    table = f'{settings.scheduler_id}_{queue}_jobs'.replace('.', '_')
    store = HandingOverJobStore(
        hand_overs, url=settings.jobstore_url, tablename=table,
        engine_options=options)
    if settings.jobstore_url.startswith('sqlite'):
        sqlalchemy.event.listen(store.engine, 'connect', sqlite_pragmas)
        _checkpoint_wal_of(store.engine.url.database, checkpointers)
    return store


def _checkpoint_wal_of(path, checkpointers):
    """Checkpoint the log of the SQLite file at ``path`` in a thread
    (see walcheckpoint); one per file, whatever its queues."""
    if not path or path == ':memory:':
        return
    path = os.path.abspath(path)
    if path not in checkpointers:
        checkpointers[path] = WalCheckpointer(path)


def _local_timezone():
    from tzlocal import get_localzone
    return get_localzone()
