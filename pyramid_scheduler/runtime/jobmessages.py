"""Job messages: an async job to run, a deferred one to store, a cancel.

:class:`JobMessages` is what the dispatcher (dispatch.py) calls for a
decoded ``job_created`` or ``job_canceled`` message of one of its queues.
An async job is checked (allowed, importable, not a repeat offender of the
crash journal, not a second job of a unique id) and handed to the worker
pool; its message is acknowledged once it ran (acks.py). A deferred job
goes into its queue's job store. Each step is noted in the job's status
record (records.py). A message that cannot succeed raises InvalidJob: the
dispatcher dead-letters it.
"""
import logging

from ..errors import InvalidJob
from ..events import Event, JobInfo
from ..references import check_allowed, resolve_reference

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
        check_allowed(spec['func'], self.settings.allowed_modules)
        func = resolve_reference(spec['func'])
        if not callable(func):
            raise InvalidJob(f'job function {spec["func"]} is not callable')
        job = JobInfo(spec, queue=queue)
        if spec['kind'] == 'async':
            check_crashes(self.crashes, self.settings, spec, message)
            if not self._take_id(job):
                message.ack()
                return
            self.inflight.add(+1)
            self.runner.notify(Event.JOB_CREATED, job)
            self.acks.expect(message)
            self.pool.submit(self._run_async, job, message, func)
            return
        prepared = self.deferred.prepare(queue, spec)
        self.runner.notify(Event.JOB_CREATED, job)
        self.deferred.store(prepared)
        self.records.scheduled(job)
        message.ack()

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
                self.runner.execute(job, func)
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
        # An async job not started yet (or not arrived) is canceled in its
        # status record, which every runtime of the queue reads.
        self.records.cancel(job_id, queue)
        if spec is not None:
            info = JobInfo(spec, queue=queue)
            listeners = self.runner.listeners
            listeners.notify(Event(Event.JOB_CANCELED, job=info, queue=queue))
            listeners.notify(Event(Event.JOB_REMOVED, job=info, queue=queue))
        message.ack()


def check_crashes(crashes, settings, spec, message):
    """Refuse a job that took its process down max_deliveries times: run
    again, it would only do it again, and starve the queue (crashes.py)."""
    redelivered = (message.delivery_info or {}).get('redelivered')
    count = crashes.crashes(spec['id'], bool(redelivered))
    limit = settings.max_deliveries
    if count >= limit:
        raise InvalidJob(
            f'job {spec["id"]} ({spec["func"]}) took its process down '
            f'{count} times (scheduler.max_deliveries = {limit})')
