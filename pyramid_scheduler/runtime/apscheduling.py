"""APScheduler, adapted: stored jobs run through deferred.DeferredJobs.

The adaptations, each with its reason below: an executor that hands the
job's spec to DeferredJobs (the job store keeps a spec, not a callable); a
SQLAlchemy job store whose statements are built once, and that, with a
record of hand-overs, lets a due run start as soon as APScheduler has taken
it out of the store, not when the whole pass ends; and a scheduler that
stops only between two passes over its job stores, and is not woken for a
job due after its next planned pass, nor killed by an error in a pass.
"""
import datetime
import logging
import pickle
import threading
import time

from apscheduler.executors.base import BaseExecutor
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.util import (
    datetime_to_utc_timestamp, utc_timestamp_to_datetime)
from sqlalchemy import bindparam, null, select
from sqlalchemy.exc import IntegrityError

log = logging.getLogger(__name__)

# Seconds before the first retry of a failed pass over the job stores.
FIRST_RETRY = 0.5
# Seconds between passes while a job store's ownership has lapsed: its due
# runs are still due (see HandingOverJobStore.get_due_jobs).
FENCED_RETRY = 0.2


class NotOwner(Exception):
    """The job store's ownership lapsed in the middle of a pass."""


class HandOvers:
    """Due runs submitted to a worker, not yet taken out of the job store.

    APScheduler submits a run, then takes it out of its job store (deletes a
    date job, moves a periodic job's next run time). A worker must not start
    the run before that: a process killed then would leave it in the store,
    to fire again. Each run waits for its own job's store write, told by
    :class:`HandingOverJobStore`, or, with another store, for the end of the
    pass. Used under APScheduler's job stores lock only (passes, add_job,
    remove_job all hold it), so it needs no lock of its own.
    """

    def __init__(self, may_fire=lambda queue: True):
        self._waiting = {}   # job id -> threading.Event
        self.fenced = False  # a store of this pass was not read: not ours
        # may_fire(queue): whether this process owns the queue's job store
        # now (deferred.DeferredJobs.may_fire); checked before a run is
        # read from the store, handed to a worker, or taken out of the store.
        self.may_fire = may_fire

    def check_owner(self, queue):
        if not self.may_fire(queue):
            raise NotOwner(f'this process no longer owns the job store of '
                           f'queue {queue}: its runs are left in the store, '
                           f'for its new owner')

    def expect(self, job_id):
        """The event a worker waits on before it starts ``job_id``'s run."""
        event = self._waiting[job_id] = threading.Event()
        return event

    def out_of_store(self, job_id):
        event = self._waiting.pop(job_id, None)
        if event is not None:
            event.set()

    def pass_done(self):
        # Whatever this pass did not take out of the store (another store,
        # or a failed write, after which the run starts as before) is done.
        for event in self._waiting.values():
            event.set()
        self._waiting.clear()


class PreparedJobStore(SQLAlchemyJobStore):
    """APScheduler's SQLAlchemy job store, its statements on the way of
    every due run built once.

    APScheduler builds each statement at each call, and building one (and
    its cache key) costs SQLAlchemy more than running it on SQLite: once
    for each deferred job received (holding the job stores lock that the
    passes wait for), three times in the pass that hands its run over.
    """

    def __init__(self, **options):
        super().__init__(**options)
        jobs = self.jobs_t
        self._select_due = (select(jobs.c.id, jobs.c.job_state)
                            .where(jobs.c.next_run_time <= bindparam('now'))
                            .order_by(jobs.c.next_run_time))
        self._select_next_run_time = (
            select(jobs.c.next_run_time)
            .where(jobs.c.next_run_time != null())
            .order_by(jobs.c.next_run_time).limit(1))
        self._delete = jobs.delete().where(jobs.c.id == bindparam('job_id'))
        self._insert = jobs.insert()

    def add_job(self, job):
        row = {'id': job.id,
               'next_run_time': datetime_to_utc_timestamp(job.next_run_time),
               'job_state': pickle.dumps(job.__getstate__(),
                                         self.pickle_protocol)}
        with self.engine.begin() as connection:
            try:
                connection.execute(self._insert, row)
            except IntegrityError:
                raise ConflictingIdError(job.id) from None

    def get_due_jobs(self, now):
        parameters = {'now': datetime_to_utc_timestamp(now)}
        jobs, failed_ids = [], []
        with self.engine.begin() as connection:
            for row in connection.execute(self._select_due, parameters):
                try:
                    jobs.append(self._reconstitute_job(row.job_state))
                except BaseException:
                    self._logger.exception(
                        'Unable to restore job "%s" -- removing it', row.id)
                    failed_ids.append(row.id)
            for job_id in failed_ids:
                connection.execute(self._delete, {'job_id': job_id})
        return jobs

    def get_next_run_time(self):
        with self.engine.begin() as connection:
            return utc_timestamp_to_datetime(
                connection.execute(self._select_next_run_time).scalar())

    def remove_job(self, job_id):
        with self.engine.begin() as connection:
            if connection.execute(
                    self._delete, {'job_id': job_id}).rowcount == 0:
                raise JobLookupError(job_id)


class HandingOverJobStore(PreparedJobStore):
    """SQLAlchemy job store that tells the hand-overs when a job's due run
    is out of it, so that run's worker need not wait for the end of the
    pass (a read of the next run time, other due jobs)."""

    def __init__(self, hand_overs, **options):
        super().__init__(**options)
        self._hand_overs = hand_overs

    def get_due_jobs(self, now):
        # Not the owner (any more, or not for the moment): nothing is due
        # here, and the store is not even read.
        if not self._hand_overs.may_fire(self._alias):
            self._hand_overs.fenced = True
            return []
        return super().get_due_jobs(now)

    def update_job(self, job):
        self._hand_overs.check_owner(self._alias)
        super().update_job(job)
        self._hand_overs.out_of_store(job.id)

    def remove_job(self, job_id):
        self._hand_overs.check_owner(self._alias)
        super().remove_job(job_id)
        self._hand_overs.out_of_store(job_id)


class RuntimeExecutor(BaseExecutor):
    """APScheduler executor that runs stored jobs through DeferredJobs.

    The job store holds the job's spec, not a callable; this executor gives
    the spec to ``deferred`` (deferred.DeferredJobs), which runs it in its
    worker pool and fires the events in order.
    """

    def __init__(self, deferred, hand_overs):
        super().__init__()
        self._deferred = deferred
        self._hand_overs = hand_overs

    def _do_submit_job(self, job, run_times):
        # Raising here, APScheduler would still take the run out of the
        # store: the store's update_job/remove_job refuse it then too.
        self._hand_overs.check_owner(getattr(job, '_jobstore_alias', None))
        last_run = job.trigger.get_next_fire_time(
            run_times[-1], datetime.datetime.now(datetime.timezone.utc)) is None
        # Kept durable before APScheduler takes it out of the store, unless
        # a free worker starts it as soon as it is out (see dueruns).
        due = self._deferred.keep_due_run(job, run_times, last_run)
        out_of_store = self._hand_overs.expect(job.id)
        self._deferred.submit_run(self._run, job, run_times, last_run, due,
                                  out_of_store)

    def _run(self, job, run_times, last_run, due, out_of_store):
        try:
            self._deferred.run_stored_job(job, run_times, last_run, due,
                                          out_of_store)
        finally:
            self._run_job_success(job.id, [])


class SafeStopScheduler(BackgroundScheduler):
    """APScheduler's, stopped only between two passes over the job stores,
    and woken by a new job only when it is due before the next pass.

    APScheduler marks itself stopped before it takes its job store lock. A
    pass handing a run over at that moment then cannot take the run out of
    the store (once stopped, ``remove_job`` looks at pending jobs only): its
    thread dies, and the next process fires the run a second time.

    APScheduler wakes its thread for a pass over the job stores at every
    ``add_job``. A pass reads every store, holding the job stores lock that
    the next ``add_job`` and the workers of due runs wait for; with a
    deferred job received every few milliseconds, those passes found
    nothing due and made the due runs late.

    An error out of a pass (a job store write that failed, a job another
    process removed, a SQLite store locked past its busy timeout) ends
    APScheduler's thread: the process would go on storing deferred jobs
    and never run them. Here it is logged and the next pass comes after a
    backoff: :data:`FIRST_RETRY` seconds, doubled at each failure in a row
    up to ``jobstore_retry_interval`` (APScheduler's wait when a store
    cannot be read), so a short outage delays the due runs by about that
    much and a long one is not hammered.

    It records when its passes start and end, for the runtime's thread
    watch (:meth:`liveness`) and ``status``.
    """

    def __init__(self, hand_overs, **options):
        self._hand_overs = hand_overs
        self._failed_passes = 0      # failed passes in a row
        self.pass_started = None     # time.monotonic() of a pass running
        self.last_pass_at = None     # time.time() of the last pass's end
        # time.time() of the pass the thread waits for; None: not known.
        self._next_pass_at = None
        # The job add_job is adding, in the thread adding it.
        self._adding = threading.local()
        super().__init__(**options)

    def shutdown(self, wait=True):
        with self._executors_lock, self._jobstores_lock:
            BlockingScheduler.shutdown(self, wait)
        self._thread.join()
        del self._thread

    def _process_jobs(self):
        with self._jobstores_lock:
            if self.state == STATE_STOPPED:
                return None
            self.pass_started = time.monotonic()
            try:
                wait_seconds = super()._process_jobs()
                self._failed_passes = 0
            except Exception:
                wait_seconds = self._retry_after_failure()
            finally:
                self.pass_started = None
                self.last_pass_at = time.time()
                self._next_pass_at = None
                self._hand_overs.pass_done()
            if self._hand_overs.fenced:
                # Its due runs were not read, so the store still says they
                # are due: not a pass at once, again and again, but a look
                # now and then, until the ownership is back or lost.
                self._hand_overs.fenced = False
                wait_seconds = FENCED_RETRY
            if wait_seconds is not None:
                self._next_pass_at = time.time() + wait_seconds
            return wait_seconds

    def _retry_after_failure(self):
        self._failed_passes += 1
        wait_seconds = min(FIRST_RETRY * 2 ** (self._failed_passes - 1),
                           self.jobstore_retry_interval)
        log.exception('a pass over the job stores failed (%d in a row); '
                      'the next one is in %gs', self._failed_passes,
                      wait_seconds)
        return wait_seconds

    def liveness(self, stuck_after):
        """None while the scheduler's thread is fine, else what is wrong:
        dead, or in one pass for more than ``stuck_after`` seconds."""
        if self.state == STATE_STOPPED:
            return None
        thread = getattr(self, '_thread', None)
        if thread is None or not thread.is_alive():
            return 'APScheduler\'s thread has died'
        started = self.pass_started
        if started is not None and time.monotonic() - started > stuck_after:
            return (f'one pass over the job stores has taken '
                    f'{time.monotonic() - started:.0f}s')
        return None

    def _real_add_job(self, job, jobstore_alias, replace_existing):
        # add_job and start() call this holding the job stores lock, so no
        # pass runs meanwhile and _next_pass_at is the one it planned.
        self._adding.job = job
        try:
            super()._real_add_job(job, jobstore_alias, replace_existing)
        finally:
            self._adding.job = None

    def wakeup(self):
        job = getattr(self._adding, 'job', None)
        if job is not None and self._due_after_next_pass(job):
            return   # that pass reads the store, and finds it
        super().wakeup()

    def _due_after_next_pass(self, job):
        run_time = getattr(job, 'next_run_time', None)
        return (run_time is not None and self._next_pass_at is not None
                and run_time.timestamp() >= self._next_pass_at)
