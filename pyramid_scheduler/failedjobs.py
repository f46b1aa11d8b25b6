"""The failed-job registry: the jobs whose status record reads ``failed``,
listed, run again (requeue) or forgotten (purge).

There is no store of its own: a job's status record (statusdb) keeps what
a requeue needs, its spec, encoded with the configured serializer. Both
ends use :class:`FailedJobs`: the facade (``scheduler.failed_jobs``,
``requeue``, ``purge_failed``) and the admin commands ``failed``,
``requeue`` and ``purge-failed`` that a queue's job store owner answers
(admin.commands), each with its own way to send the job
(``publish(queue, body)``).

A requeue sends the job again as an async job with the same id, to the
same queue: a failed date job runs once more, at once, with the same
function and arguments. The record goes back to ``queued`` (attempts 0,
times, result and error cleared) before anything is sent, atomically: of
two requeues of one job, one wins, the other is refused. The message
carries a new unique token that the record holds, so the runtime that
receives it takes it as this very job (records.claim_unique), and a
second job added with the id meanwhile is not run twice.
"""
from . import status as st
from . import wire
from .errors import InvalidJob, JobNotFound
from .jobs import build_spec

# The states a job may be requeued from.
REQUEUABLE = (st.FAILED, st.CANCELED)
# Kinds that run once: a periodic job is added again instead.
ONE_RUN_KINDS = ('async', 'date')
# Options an async job refuses (jobs.check_honoured): a date job's own.
DEFERRED_ONLY_OPTIONS = ('max_instances', 'coalesce', 'misfire_grace_time')


class FailedJobs:
    """The registry over one status table (statusdb.StatusTable)."""

    def __init__(self, settings, table):
        self.settings = settings
        self.table = table

    def list(self, queue=None, limit=100):
        """Failed jobs' JobStatus (of ``queue``, or every queue), the
        latest failure first, at most ``limit``."""
        return self.table.in_state(st.FAILED, self._queue(queue),
                                   check_limit(limit))

    def count(self, queue=None):
        return self.table.count_in_state(st.FAILED, self._queue(queue))

    def purge(self, queue=None):
        """Delete the failed jobs' records; how many."""
        return self.table.delete_in_state(st.FAILED, self._queue(queue))

    def _queue(self, queue):
        return None if queue is None else self.settings.check_queue(queue)

    def requeue(self, job_id, publish, only_queue=None):
        """Send the failed (or canceled) job ``job_id`` again; its queue.

        None, and nothing done, when the job is not of ``only_queue`` (an
        admin command reaches every queue's runtime: the job's answers).
        JobNotFound for an id without a record, InvalidJob for a job that
        cannot run again (see :func:`requeued_spec`).
        """
        record = self.table.get(job_id)
        if record is None:
            raise JobNotFound(
                f'no job {job_id!r} in the status records: the id is wrong, '
                'or its record is older than scheduler.results.ttl '
                f'({self.settings.results_ttl:g}s) and was deleted')
        if only_queue is not None and record.queue != only_queue:
            return None
        check_requeuable(record)
        stored = self.table.spec_of(job_id)
        queue, spec = requeued_spec(self.settings, record, stored)
        previous = self.table.requeue(job_id, REQUEUABLE, {
            'kind': 'async', 'created': spec['created_at'],
            'token': spec['unique'], 'spec': spec})
        if previous is None:
            raise InvalidJob(f'job {job_id} was requeued (or changed) by '
                             'someone else meanwhile; see its status')
        try:
            publish(queue, wire.job_created(queue, spec))
        except Exception:
            # Not sent: the record reads as before, and a requeue may be
            # tried again.
            self.table.restore(previous, spec['unique'])
            raise
        return queue


def check_limit(limit):
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f'limit must be a whole number, 1 or more, not '
                         f'{limit!r}')
    return limit


def check_requeuable(record):
    if record.state not in REQUEUABLE:
        raise InvalidJob(
            f'job {record.id} is {record.state}: only a failed or canceled '
            'job can be requeued' + (
                ' (wait for it to end: scheduler.wait)'
                if record.state in st.PENDING_STATES else ''))
    if record.kind not in ONE_RUN_KINDS:
        raise InvalidJob(
            f'job {record.id} is a {record.kind} job: requeue runs a failed '
            'async or date job once more; add a periodic job again with '
            f'add_{record.kind}_job')


def requeued_spec(settings, record, stored):
    """``(queue, spec)`` of the async job that runs ``record``'s job again:
    the stored function, arguments and options, validated as
    ``add_async_job`` would (the function still allowed and importable,
    the queue still configured)."""
    if stored is None or stored[1] is None:
        raise InvalidJob(
            f'job {record.id} has no stored arguments (it was canceled '
            'before a runtime received it, or they could not be decoded): '
            'add it again')
    queue, spec = stored
    options = {name: value for name, value in spec.get('options', {}).items()
               if name not in DEFERRED_ONLY_OPTIONS}
    options['id'] = record.id
    return build_spec(settings, 'async', spec['func'], spec.get('args'),
                      spec.get('kwargs'), queue, None, options)


def summary(record):
    """A failed job as plain data (an admin command's answer)."""
    return {
        'id': record.id, 'queue': record.queue, 'func': record.func,
        'kind': record.kind, 'attempts': record.attempts,
        'error': record.error,
        'created': _iso(record.created), 'started': _iso(record.started),
        'finished': _iso(record.finished),
    }


def _iso(moment):
    return None if moment is None else moment.isoformat()
