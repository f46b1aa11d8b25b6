"""Running one job: execution.run_job, then its event and counters.

Async jobs (from a worker of the pool) and deferred runs (from the deferred
pool) both end here, so a listener sees executed / failed / missed the same
way for both, and the ``status`` admin command counts them in one place.
"""
import logging
import threading
import time
import traceback

from .. import status
from ..events import Event
from ..execution import run_job

log = logging.getLogger(__name__)


class Stats:
    """Counters for the ``status`` admin command; updated from any thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self.started = time.time()
        self.counts = {'received': 0, 'executed': 0, 'failed': 0,
                       'missed': 0, 'dead_lettered': 0}

    def add(self, name, n=1):
        with self._lock:
            self.counts[name] += n

    def snapshot(self):
        with self._lock:
            return dict(self.counts)


class JobRunner:
    """Runs jobs with the app's registry, notes their status records and
    fires their events."""

    def __init__(self, settings, registry, listeners, stats, records,
                 limits):
        self.settings = settings
        self.registry = registry
        self.listeners = listeners
        self.stats = stats
        self.records = records
        self.limits = limits      # timelimits.TimeLimits

    def execute(self, job, func=None, then=status.SUCCEEDED, **extra):
        """Run ``job`` (a JobInfo) once; its failure is logged, not raised.

        ``then`` is the state its record takes if the run succeeds:
        ``scheduled`` for a periodic job with runs to come.
        """
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
            self.stats.add('failed')
            log.error('job %s (%s) failed', job['id'], job['func'],
                      exc_info=True)
            formatted = traceback.format_exc()
            self.records.failed(job, describe(exc), formatted,
                                status.FAILED if then == status.SUCCEEDED
                                else then)
            self.notify(Event.JOB_FAILED, job, exception=exc,
                        traceback=formatted, **extra)
            return
        self.records.succeeded(job, retval, then)
        self.stats.add('executed')
        log.debug('job %s (%s) done in %.3fs', job['id'], job['func'],
                  time.time() - started)
        self.notify(Event.JOB_EXECUTED, job, retval=retval, **extra)

    def missed(self, job, run_time, late, then=status.SUCCEEDED):
        self.stats.add('missed')
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
            self.listeners.notify(Event(type_, job=job, queue=job['queue'],
                                        **params))


def describe(exc):
    """``'ValueError: bad input'``: the error a status record shows."""
    return f'{type(exc).__name__}: {exc}'
