"""Time limits of jobs: one watchdog thread per runtime.

A job's ``time_limit`` and ``hard_time_limit`` (its options, else
``scheduler.time_limit`` / ``scheduler.hard_time_limit``) are deadlines
that :meth:`TimeLimits.applied` registers around its run (JobRunner.execute,
for async jobs and deferred runs alike) in one heap; the watchdog thread
wakes every :data:`CHECK_INTERVAL` and acts on the deadlines passed:

- soft: :class:`~pyramid_scheduler.errors.JobTimeout` is raised inside the
  job's thread (``PyThreadState_SetAsyncExc``, as many libraries do). It
  lands only when that thread runs Python bytecode: a job stuck in C code
  (``time.sleep``, a socket read, a lock) does not see it until the call
  returns; that is what the hard limit is for. The job fails as it would
  by any exception of its own, and the process goes on serving.
- hard: the job's record is written at once (``failed``, the error names the
  hard limit, the traceback is where the job was stuck), then the process
  ends with the exit code its owner chose (``exit_code``: a pscheduler
  child's master replaces it at once). Its async message, never
  acknowledged, is delivered again: :meth:`TimeLimits.check_redelivery`
  refuses it (dead-lettered), and a job with a hard limit is refused after
  two crashes of its process even if its record was not written
  (:meth:`TimeLimits.max_deliveries`, with the crash journal, which counts
  the jobs of a process that ends so only then: the jobs cut short with
  it are not to blame). In combined
  mode (no ``exit_code``: a web process has no master to replace it) the
  hard limit is only logged.

A job that holds the GIL forever in C code stops this thread too: then
the child's heartbeat stops, and the master kills it after
``scheduler.child.heartbeat_timeout``.
"""
import contextlib
import ctypes
import heapq
import itertools
import logging
import os
import sys
import threading
import time
import traceback

from .. import status
from ..errors import InvalidJob, JobTimeout

log = logging.getLogger(__name__)

CHECK_INTERVAL = 0.2
# What a record's error starts with when its job passed its hard limit.
HARD_LIMIT_ERROR = 'HardTimeLimit'
# How long the hard limit waits for the record to be written.
RECORD_TIMEOUT = 10.0
# A job with a hard limit that took its process down this many times is
# dead-lettered, whatever scheduler.max_deliveries says.
HARD_LIMIT_DELIVERIES = 2
# Ended watches left in the heap before it is rebuilt without them.
MAX_STALE = 1024
# What a job without limits runs in (reentrant, shared: it holds nothing).
NO_LIMITS = contextlib.nullcontext()


class Watch:
    """One run of a job under its limits."""

    def __init__(self, job, then, soft, hard):
        self.job = job
        self.then = then
        self.soft = soft
        self.hard = hard
        self.thread_id = threading.get_ident()
        self.started = time.monotonic()
        self.active = True
        self.interrupted = False   # JobTimeout sent to its thread


class TimeLimits:
    """The deadlines of the running jobs, and the thread that enforces them."""

    def __init__(self, settings, records, crashes):
        self.settings = settings
        self.records = records
        self.crashes = crashes     # crashes.CrashJournal
        # Set by the owner before start: called with the reason, it ends
        # the process (a pscheduler child); None: combined mode.
        self.on_hard_limit = None
        self._lock = threading.Lock()
        self._heap = []        # (deadline, seq, watch, 'soft' or 'hard')
        self._seq = itertools.count()
        self._active = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread = None

    # --- what a run asks (its worker thread) ----------------------------

    def limits_of(self, job):
        """``(time_limit, hard_time_limit)`` of ``job``; None: no limit."""
        options = job.get('options') or {}
        return (options.get('time_limit', self.settings.time_limit),
                options.get('hard_time_limit', self.settings.hard_time_limit))

    def applied(self, job, then=status.SUCCEEDED):
        """A context manager that runs its block under ``job``'s limits;
        without any, one that costs next to nothing (the hot path)."""
        soft, hard = self.limits_of(job)
        if soft is None and hard is None:
            return NO_LIMITS
        if soft is not None and hard is not None and soft >= hard:
            soft = None   # a producer's odd mix: the hard one comes first
        return self._limited(Watch(job, then, soft, hard))

    @contextlib.contextmanager
    def _limited(self, watch):
        self._add(watch)
        try:
            yield
        except JobTimeout as exc:
            if watch.interrupted and not exc.args:
                exc.args = (f'job ran longer than its time_limit of '
                            f'{watch.soft:g}s',)
            raise
        finally:
            try:
                self._end(watch)
            except JobTimeout:
                # It landed here, after the job returned: it is sent once,
                # so this second _end cannot be cut short.
                self._end(watch)
                raise

    def _add(self, watch):
        with self._lock:
            for kind, limit in (('soft', watch.soft), ('hard', watch.hard)):
                if limit is not None:
                    heapq.heappush(self._heap, (watch.started + limit,
                                                next(self._seq), watch, kind))
            self._active += 1

    def _end(self, watch):
        with self._lock:
            if not watch.active:
                return
            watch.active = False
            self._active -= 1
            if watch.interrupted:
                # Sent but not raised yet (the job returned first): never
                # raise it in the code that runs after the job.
                _raise_in_thread(watch.thread_id, None)
            if len(self._heap) > 2 * (self._active + MAX_STALE):
                self._heap = [entry for entry in self._heap
                              if entry[2].active]
                heapq.heapify(self._heap)

    # --- the watchdog thread ------------------------------------------------

    def start(self):
        """Start the watchdog (after the fork: Runtime.start)."""
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name='pscheduler-time-limits')
        self._thread.start()

    @property
    def running(self):
        return self._thread is not None and (
            self._thread.is_alive() or self._stopping)

    def stop(self):
        self._stopping = True
        self._wake.set()

    def _loop(self):
        while not self._stopping:
            self._wake.wait(CHECK_INTERVAL)
            for watch, kind in self._due(time.monotonic()):
                try:
                    if kind == 'soft':
                        self._interrupt(watch)
                    else:
                        self._past_hard_limit(watch)
                except Exception:
                    log.exception('enforcing the time limit of job %s '
                                  'failed', watch.job['id'])

    def _due(self, now):
        due = []
        with self._lock:
            while self._heap and self._heap[0][0] <= now:
                _, _, watch, kind = heapq.heappop(self._heap)
                if watch.active:
                    due.append((watch, kind))
        return due

    def _interrupt(self, watch):
        with self._lock:
            if not watch.active:
                return
            watch.interrupted = True
            _raise_in_thread(watch.thread_id, JobTimeout)
        log.warning('job %s (%s) ran longer than its time_limit of %gs: '
                    'JobTimeout raised in its thread', watch.job['id'],
                    watch.job['func'], watch.soft)

    def _past_hard_limit(self, watch):
        job = watch.job
        reason = (f'job {job["id"]} ({job["func"]}) ran longer than its '
                  f'hard_time_limit of {watch.hard:g}s')
        if self.on_hard_limit is None:
            log.error('%s; a process running jobs in combined mode (a web '
                      'process) is not replaced: the job goes on', reason)
            return
        log.error('%s; its record reads failed, and this process ends so '
                  'that a new one takes its place', reason)
        if self._record_failure(watch, _stack_of(watch.thread_id)):
            # As a graceful stop does: the jobs cut short with it are not
            # to blame, and this one is refused by its record. Unwritten,
            # the journal counts it (max_deliveries), and them with it.
            self.crashes.close()
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        self.on_hard_limit(reason)

    def _record_failure(self, watch, stack):
        """Write the failure at once, from another thread (bounded: a
        database that hangs must not keep the process alive); True once
        written."""
        error = (f'{HARD_LIMIT_ERROR}: the job ran longer than its '
                 f'hard_time_limit of {watch.hard:g}s; its process was '
                 'replaced')
        state = status.FAILED if watch.then == status.SUCCEEDED \
            else watch.then
        self.records.failed(watch.job, error, stack, state)
        written = threading.Event()
        writer = threading.Thread(target=self._write_now, args=(written,),
                                  daemon=True,
                                  name='pscheduler-time-limit-record')
        writer.start()
        return written.wait(RECORD_TIMEOUT)

    def _write_now(self, written):
        try:
            self.records.write_now()
        except Exception:
            log.exception('could not write the record of a job past its '
                          'hard time limit')
        else:
            written.set()

    # --- what the receipt of a job asks ---------------------------------

    def max_deliveries(self, spec):
        """Crashes of its process after which ``spec`` is dead-lettered."""
        limit = self.settings.max_deliveries
        if self.limits_of(spec)[1] is not None:
            return min(limit, HARD_LIMIT_DELIVERIES)
        return limit

    def check_redelivery(self, spec, redelivered):
        """Refuse a redelivered async job whose record says it passed its
        hard limit: run again, it would only take its process down again."""
        if not redelivered or self.limits_of(spec)[1] is None:
            return
        found = self.records.table.get(spec['id'])
        if found is not None and found.state == status.FAILED and \
                (found.error or '').startswith(HARD_LIMIT_ERROR):
            raise InvalidJob(
                f'job {spec["id"]} ({spec["func"]}) ran longer than its '
                'hard_time_limit and its process was replaced; not run '
                'again (its record reads failed)')


def _raise_in_thread(thread_id, exception):
    """Raise ``exception`` (a class) in the thread ``thread_id`` when it
    next runs Python bytecode; None takes back one not raised yet."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id),
        ctypes.py_object(exception) if exception is not None else None)


def _stack_of(thread_id):
    """Where the thread is now, as a traceback reads (for the record)."""
    frame = sys._current_frames().get(thread_id)
    if frame is None:
        return None
    return ('Stack of the job when it passed its hard time limit '
            f'(process {os.getpid()}):\n'
            + ''.join(traceback.format_stack(frame)))
