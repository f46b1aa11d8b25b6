"""Running one job: execution.run_job, then its event and counters.

Async jobs (from a worker of the pool) and deferred runs (from the deferred
pool) both end here, so a listener sees executed / failed / retry / missed
the same way for both, and the ``status`` admin command counts them in one
place. A failed run asks retries.py whether to try again.
"""
import logging
import threading
import time
import traceback

from .. import status
from ..events import Event, JobInfo
from ..execution import run_job

log = logging.getLogger(__name__)

# Periodic kinds of job: a retry of one returns its record to scheduled.
PERIODIC_KINDS = ('interval', 'cron')


class Stats:
    """This process's counters for the ``status`` admin command, and the
    same as Prometheus metrics (``metrics``: a runtime.metrics.
    RuntimeMetrics, or None); updated from any thread."""

    def __init__(self, metrics=None):
        self._lock = threading.Lock()
        self.started = time.time()
        self.counts = {'received': 0, 'executed': 0, 'failed': 0,
                       'retried': 0, 'missed': 0, 'dead_lettered': 0}
        self.metrics = metrics

    def add(self, name, n=1, queue=None):
        """``n`` more ``name``; ``queue``: the job's (default: the
        runtime's first)."""
        with self._lock:
            self.counts[name] += n
        if self.metrics is not None:
            self.metrics.count(name, queue or self.metrics.queues[0], n)

    def ran(self, job, seconds, scheduled_run_time=None):
        """A run of ``job`` ended after ``seconds``."""
        if self.metrics is not None:
            late = (time.time() - seconds - scheduled_run_time.timestamp()
                    if scheduled_run_time is not None else None)
            self.metrics.ran(job['queue'], seconds, late)

    def snapshot(self):
        with self._lock:
            return dict(self.counts)


class JobRunner:
    """Runs jobs with the app's registry, notes their status records and
    fires their events. ``retries`` (retries.Retries) decides what follows
    a failed run; None: nothing (it fails)."""

    def __init__(self, settings, registry, listeners, stats, records,
                 limits, retries=None):
        self.settings = settings
        self.registry = registry
        self.listeners = listeners
        self.stats = stats
        self.records = records
        self.limits = limits      # timelimits.TimeLimits
        self.retries = retries

    def close(self):
        """After the last run: stop the time limits' watchdog, write the
        last status records, close the retries' producer."""
        self.limits.stop()
        self.records.stop()
        if self.retries is not None:
            self.retries.close()

    def execute(self, job, func=None, then=status.SUCCEEDED, **extra):
        """Run ``job`` (a JobInfo) once; its failure is logged, not raised.

        ``then`` is the state its record takes if the run succeeds:
        ``scheduled`` for a periodic job with runs to come. Returns the
        state its record took (``retrying``: a retry is stored), or None if
        it did not run (a retry of a job canceled since).
        """
        if self.retries is not None and not self.retries.before_run(job):
            return None
        if job.get('of_kind') in PERIODIC_KINDS:
            then = status.SCHEDULED   # a retry of a periodic job
        started = time.time()
        self.records.running(job, job.get('attempt', 1))
        try:
            # Inside the try: a JobTimeout that lands as the block ends
            # is this run's failure too.
            with self.limits.applied(job, then):
                retval = run_job(job, registry=self.registry,
                                 delegator=self.settings.delegator,
                                 allowed_modules=self.settings.allowed_modules,
                                 func=func)
        except Exception as exc:
            self.stats.ran(job, time.time() - started,
                           extra.get('scheduled_run_time'))
            return self._failed(job, exc, then, extra)
        seconds = time.time() - started
        self.stats.ran(job, seconds, extra.get('scheduled_run_time'))
        self.records.succeeded(job, retval, then)
        self.stats.add('executed', queue=job['queue'])
        log.debug('job %s (%s) done in %.3fs', job['id'], job['func'],
                  seconds)
        self.notify(Event.JOB_EXECUTED, job, retval=retval, **extra)
        return then

    def _failed(self, job, exc, then, extra):
        formatted = traceback.format_exc()
        if self._retried(job, exc, formatted, extra):
            self.stats.add('retried', queue=job['queue'])
            return status.RETRYING
        self.stats.add('failed', queue=job['queue'])
        log.error('job %s (%s) failed (attempt %d)', id_of(job), job['func'],
                  job.get('attempt', 1), exc_info=exc)
        state = status.FAILED if then == status.SUCCEEDED else then
        self.records.failed(job, describe(exc), formatted, state)
        self.notify(Event.JOB_FAILED, job, exception=exc,
                    traceback=formatted, **extra)
        return state

    def _retried(self, job, exc, formatted, extra):
        """Store a retry of the failed run if the policy says so."""
        plan = self.retries.plan(job, exc) if self.retries else None
        if plan is None:
            return False
        self.records.failed(job, describe(exc), formatted, status.RETRYING)
        try:
            self.retries.store(job, plan)
        except Exception:
            log.exception('job %s (%s): could not keep its retry; it fails',
                          id_of(job), job['func'])
            return False
        log.warning('job %s (%s) failed (attempt %d), retried in %.3fs: %s',
                    id_of(job), job['func'], plan.attempt - 1, plan.delay,
                    describe(exc))
        self.notify(Event.JOB_RETRY, job, exception=exc, traceback=formatted,
                    attempt=plan.attempt - 1, countdown=plan.delay, **extra)
        return True

    def missed(self, job, run_time, late, then=status.SUCCEEDED):
        self.stats.add('missed', queue=job['queue'])
        if job.get('of_kind') in PERIODIC_KINDS:
            then = status.SCHEDULED   # a retry of a periodic job
        self.records.failed(
            job, f'missed its run time {run_time.isoformat()} by {late:.1f}s, '
            'more than its misfire grace time', None,
            status.FAILED if then == status.SUCCEEDED else then)
        log.warning('job %s (%s) missed its run time %s by %.1fs, more than '
                    'its misfire grace time; not run', job['id'], job['func'],
                    run_time.isoformat(), late)
        self.notify(Event.JOB_MISSED, job, scheduled_run_time=run_time)

    def notify(self, type_, job, **params):
        # Most apps listen to nothing: then not even the event is built.
        if self.listeners.wants(type_):
            self.listeners.notify(Event(type_, job=as_seen(job),
                                        queue=job['queue'], **params))


def id_of(job):
    """The job's id (a retry's is its job's)."""
    return job.get('retry_of') or job['id']


def as_seen(job):
    """The job as listeners see it: a retry under its job's id (with
    ``retry_of`` and ``attempt``)."""
    if job.get('retry_of'):
        return JobInfo(job, id=job['retry_of'])
    return job


def describe(exc):
    """``'ValueError: bad input'``: the error a status record shows."""
    return f'{type(exc).__name__}: {exc}'
