"""Retrying a failed run: whether, when, and where the retry is kept.

The policy (:func:`plan_retry`) reads the job's retry options (checked by
retrypolicy.py) and the ``scheduler.retry.*`` defaults. A retry is a date
job stored in the queue's job store, so it survives a killed child and a
restarted daemon: a copy of the job's spec (function, arguments, options)
under its own store id (:func:`retry_store_id`), with ``retry_of`` (the
job's id, under which its status record stays) and ``attempt`` (the number
of the run it will be). The job store owner stores it at once; a runtime of
another slot (``scheduler.processes`` > 1) sends it to the queue's store
queue, which the owner consumes (a worker thread has a Producer of its own:
the consumer's connection is not thread-safe).

One store id per job: a job has at most one pending retry, replaced by the
next; the next tick of a periodic job drops it (:meth:`Retries.before_run`).
"""
import collections
import datetime
import hashlib
import logging
import random
import threading

from .. import naming, status, wire
from ..errors import Retry
from ..producer import Producer

log = logging.getLogger(__name__)

PERIODIC_KINDS = ('interval', 'cron')
# The retries a job that raises Retry gets when it asked for none (its
# ``retries``, or else ``scheduler.retry.retries``, is 0): Celery's default.
RETRY_EXCEPTION_RETRIES = 3
RETRY_SUFFIX = '.retry'
# As deferred.MAX_JOB_ID_LENGTH: the store id must fit APScheduler's column.
MAX_STORE_ID_LENGTH = 191
# 2 ** this is the largest backoff factor (a float beyond overflows).
MAX_DOUBLINGS = 64

# The decision to retry: the number of the next run, and when.
Plan = collections.namedtuple('Plan', 'attempt delay')


# --- the policy -------------------------------------------------------------

def plan_retry(job, exc, settings, rng=random):
    """A :data:`Plan` if the failed run of ``job`` (raising ``exc``) is to
    be tried again, else None."""
    options = job.get('options') or {}
    attempt = job.get('attempt', 1)
    if not isinstance(exc, Retry) and not matches(exc, options.get('retry_on')):
        return None
    if attempt > retries_allowed(options, settings, exc):
        return None
    return Plan(attempt + 1, delay_of(options, settings, attempt, exc, rng))


def retries_allowed(options, settings, exc):
    """How many retries the job has: its ``retries``, else the setting;
    a job with none that raises Retry gets RETRY_EXCEPTION_RETRIES."""
    allowed = options.get('retries', settings.retries)
    if not allowed and isinstance(exc, Retry):
        return RETRY_EXCEPTION_RETRIES
    return allowed


def matches(exc, retry_on):
    """Whether ``exc`` is an instance of a class ``retry_on`` names (none:
    any Exception). By name, along its class's MRO: nothing is imported."""
    if not retry_on:
        return True
    names = {f'{cls.__module__}.{cls.__qualname__}'
             for cls in type(exc).__mro__}
    return any(name in names for name in retry_on)


def delay_of(options, settings, attempt, exc, rng=random):
    """Seconds before the retry of failed run number ``attempt``: the
    Retry's countdown, else ``retry_delay``, else the backoff (none if
    ``retry_backoff`` is False)."""
    if isinstance(exc, Retry) and exc.countdown is not None:
        return float(exc.countdown)
    if 'retry_delay' in options:
        return float(options['retry_delay'])
    backoff = options.get('retry_backoff', True)
    if backoff is False:
        return 0.0
    base = settings.retry_backoff if backoff is True else backoff
    return backoff_delay(attempt, base, settings.retry_backoff_max, rng)


def backoff_delay(attempt, base, cap, rng=random):
    """Exponential backoff with full jitter: a uniform draw between 0 and
    min(cap, base * 2 ** (attempt - 1)). The jitter spreads the retries of
    jobs that failed together (a database down) instead of bunching them."""
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, MAX_DOUBLINGS))
    return rng.uniform(0, ceiling)


def retry_store_id(job_id):
    """The id a job's pending retry is stored under."""
    store_id = job_id + RETRY_SUFFIX
    if len(store_id) > MAX_STORE_ID_LENGTH:
        store_id = hashlib.sha256(job_id.encode()).hexdigest() + RETRY_SUFFIX
    return store_id


def retry_spec(job, plan, now=None):
    """The spec of the date job that retries ``job`` (a JobInfo)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    job_id = job.get('retry_of') or job['id']
    spec = {key: value for key, value in job.items()
            if key not in ('queue', 'unique')}
    spec.update(
        id=retry_store_id(job_id), kind='date',
        trigger={'run_date': now + datetime.timedelta(seconds=plan.delay)},
        retry_of=job_id, attempt=plan.attempt,
        # What the job is: a periodic job's record returns to scheduled.
        of_kind=job.get('of_kind', job['kind']))
    return spec


def is_periodic(job):
    return job.get('of_kind', job['kind']) in PERIODIC_KINDS


# --- the runtime's part -----------------------------------------------------

class Retries:
    """Plans, stores or sends the retries of one runtime's failed runs.

    ``deferred`` (deferred.DeferredJobs) is set by the runtime that owns
    the job stores; a runtime of another slot has none and sends.
    """

    def __init__(self, settings, records):
        self.settings = settings
        self.records = records
        self.deferred = None
        self._producer = None   # made on first use (after the fork)
        self._producer_lock = threading.Lock()

    def plan(self, job, exc):
        return plan_retry(job, exc, self.settings)

    def store(self, job, plan):
        """Keep the retry of ``job`` (its record noted ``retrying`` first,
        written at once: the retry may run, in another process, before
        the next batch); its spec. Raises if it could not be kept."""
        self.records.flush()
        spec = retry_spec(job, plan)
        if self._can_store():
            self.deferred.store(self.deferred.prepare(job.queue, spec))
        else:
            self._send(job.queue, spec)
        return spec

    def _can_store(self):
        """Whether this runtime stores retries itself: it owns the job
        stores, and APScheduler still runs (a stopped one would keep the
        job in memory, lost at exit: a job failing while the runtime
        drains sends its retry to the store queue, for the next owner)."""
        if self.deferred is None:
            return False
        scheduler, _ = self.deferred.threads()
        return scheduler is not None and scheduler.running

    def _send(self, queue, spec):
        with self._producer_lock:
            if self._producer is None:
                self._producer = Producer(self.settings)
        target = naming.store_queue(self.settings, queue)
        self._producer.publish(wire.job_created(queue, spec), target.name,
                               declare=[target])
        log.info('job %s: its retry sent to %s, whose consumer owns the '
                 'job store', spec['retry_of'], target.name)

    def before_run(self, job):
        """False if this run must not happen: a retry of a job canceled
        since. A periodic job's tick drops the job's pending retry."""
        if job.get('retry_of'):
            if self.records.table.state_of(job['retry_of']) == \
                    status.CANCELED:
                log.info('retry of job %s (%s) not run: the job was '
                         'canceled', job['retry_of'], job['func'])
                return False
            return True
        if job['kind'] in PERIODIC_KINDS and self.deferred is not None:
            if self.drop_pending(job.queue, job['id']) is not None:
                log.info('job %s (%s): its pending retry is dropped, its next '
                         'run is due', job['id'], job['func'])
        return True

    def drop_pending(self, queue, job_id):
        """Remove the pending retry of ``job_id`` from the job store (job
        store owner only); its spec, or None if it had none."""
        store_id = retry_store_id(job_id)
        if self.deferred.get_job(store_id, queue) is None:
            return None
        return self.deferred.remove(queue, store_id)

    def close(self):
        if self._producer is not None:
            self._producer.close()
