"""Job messages: an async job to run, a deferred one to store, a cancel.

:class:`JobMessages` is what the dispatcher (dispatch.py) calls for a
decoded ``job_created`` or ``job_canceled`` message of one of its queues.
An async job is checked (allowed, importable, valid time limits, not a
repeat offender of the crash journal nor past its hard time limit before
(timelimits.py), not a second job of a unique id) and handed to the worker
pool; its message is acknowledged once it ran (acks.py). A deferred job
goes into its queue's job store. Each step is noted in the job's status
record (records.py). A message that cannot succeed raises InvalidJob: the
dispatcher dead-letters it.
"""
import logging

from ..errors import InvalidJob
from .. import status
from ..events import Event, JobInfo
from ..jobs import check_options
from ..references import AllowedFunctions
from ..retrypolicy import check_retry_fields

log = logging.getLogger(__name__)


class JobMessages:
    """The handlers of job and cancel messages of one runtime."""

    def __init__(self, settings, queues, *, runner, inflight, acks, pool,
                 deferred, crashes):
        self.settings = settings
        self.queues = queues
        self.runner = runner
        self.records = runner.records
        self.inflight = inflight
        self.acks = acks
        self.pool = pool
        self.deferred = deferred
        self.crashes = crashes
        # The job functions allowed to run, by reference (default-deny).
        self._functions = AllowedFunctions(settings.allowed_modules)

    def _check_queue(self, body):
        if body['queue'] not in self.queues:
            raise InvalidJob(f'message for queue {body["queue"]!r} arrived at '
                             f'a runtime serving {", ".join(self.queues)}')

    def on_job_created(self, body, message):
        self._check_queue(body)
        spec = body['job']
        queue = body['queue']
        # A function that may not run (outside the application's package
        # and scheduler.allowed_modules, or in a guarded module of the
        # standard library: a forged or stale message) is refused before
        # its module is even imported, and one
        # that no longer imports (or names no callable) would fail at every
        # run: both go to the dead-letter queue, where an operator sees
        # them, and never run.
        # Checked once per reference (references.AllowedFunctions).
        func = self._functions.get(spec['func'])
        check_retry_fields(spec)
        job = JobInfo(spec, queue=queue)
        if spec['kind'] == 'async':
            self._check_receipt(job, message)
            if not self._take_id(job):
                message.ack()
                return
            self.inflight.add(+1)
            self.runner.notify(Event.JOB_CREATED, job)
            self.acks.expect(message)
            self.pool.submit(self._run_async, job, message, func)
            return
        prepared = self.deferred.prepare(queue, spec)
        if spec.get('retry_of'):
            # A retry (retries.py): its job's record reads retrying already.
            self.deferred.store(prepared)
            message.ack()
            return
        self.runner.notify(Event.JOB_CREATED, job)
        self.deferred.store(prepared)
        self.records.scheduled(job)
        message.ack()

    def _check_receipt(self, job, message):
        """Refuse a job with bad time limits, one that took its process
        down too often, or whose record says it passed its hard time limit
        (timelimits.py)."""
        # Values the runtime would choke on (a foreign producer): refused
        # (time limits and retries included).
        check_options(job.get('options') or {}, 'async')
        redelivered = bool((message.delivery_info or {}).get('redelivered'))
        limits = self.runner.limits
        try:
            check_crashes(self.crashes, job, redelivered,
                          limits.max_deliveries(job),
                          self.settings.max_deliveries)
        except InvalidJob as exc:
            # In the failed registry, with the reason.
            self.records.failed(job, f'InvalidJob: {exc}', None)
            raise
        limits.check_redelivery(job, redelivered)

    def _take_id(self, job):
        """Note an async job queued; False for a second job of a unique
        id still queued or running, or one canceled before it arrived."""
        if not isinstance(job.get('unique'), str):
            self.records.queued(job)
            return True
        if self.records.claim_unique(job):
            return True
        log.info('job %s (%s) not run: a job with this id is still queued '
                 'or running, or it was canceled', job['id'], job['func'])
        return False

    def _run_async(self, job, message, func):
        # In a worker thread: the message is acknowledged once the job is
        # done, by the consumer thread (see acks).
        try:
            if self.records.is_canceled(job):
                log.info('job %s (%s) was canceled before it started; not '
                         'run', job['id'], job['func'])
                return
            with self.crashes.running(job['id']):
                state = self.runner.execute(job, func)
            if state != status.RETRYING:
                self.runner.notify(Event.JOB_REMOVED, job)
        finally:
            self.inflight.add(-1)
            self.acks.finished(message)

    def on_job_canceled(self, body, message):
        self._check_queue(body)
        queue, job_id = body['queue'], body['job_id']
        if not isinstance(job_id, str) or not job_id:
            raise InvalidJob(f'job id to cancel must be a non-empty string, '
                             f'not {job_id!r:.80}')
        spec = self.deferred.remove(queue, job_id)
        # A job being retried: its pending retry goes too.
        retry = self.runner.retries.drop_pending(queue, job_id)
        spec = spec or retry
        # An async job not started yet (or not arrived) is canceled in its
        # status record, which every runtime of the queue reads.
        self.records.cancel(job_id, queue)
        if spec is not None:
            info = JobInfo(spec, queue=queue, id=job_id)
            listeners = self.runner.listeners
            listeners.notify(Event(Event.JOB_CANCELED, job=info, queue=queue))
            listeners.notify(Event(Event.JOB_REMOVED, job=info, queue=queue))
        message.ack()


def check_crashes(crashes, spec, redelivered, limit, max_deliveries):
    """Refuse a job that took its process down ``limit`` times
    (scheduler.max_deliveries, or fewer for a job with a hard time limit):
    run again, it would only do it again, and starve the queue
    (crashes.py)."""
    count = crashes.crashes(spec['id'], redelivered)
    if count < limit:
        return
    why = (f'scheduler.max_deliveries = {limit}' if limit == max_deliveries
           else f'at most {limit} for a job with a hard_time_limit')
    raise InvalidJob(f'job {spec["id"]} ({spec["func"]}) took its process '
                     f'down {count} times ({why})')
