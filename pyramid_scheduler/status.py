"""What became of a job: :class:`JobStatus`, as ``scheduler.job_status``
returns it, and its states.

A job's record is written by the runtime that handles it (see
runtime.records) in the job store database (statusdb), so the web app
reads it without a server of its own.

- ``queued``: an async job received by a runtime, waiting for a worker;
- ``scheduled``: a deferred job stored, waiting for its run time (a
  periodic job returns here after each run, its last outcome kept);
- ``running``: a run has started;
- ``retrying``: a run failed and another is stored (see retries);
- ``succeeded``, ``failed``, ``canceled``: the end.
"""
import dataclasses
import datetime
import time

QUEUED = 'queued'
SCHEDULED = 'scheduled'
RUNNING = 'running'
RETRYING = 'retrying'
SUCCEEDED = 'succeeded'
FAILED = 'failed'
CANCELED = 'canceled'

STATES = (QUEUED, SCHEDULED, RUNNING, RETRYING, SUCCEEDED, FAILED, CANCELED)
# States no run follows (without requeue).
FINAL_STATES = frozenset((SUCCEEDED, FAILED, CANCELED))
# States of a job that will still run: a unique id is taken while in one.
PENDING_STATES = frozenset((QUEUED, SCHEDULED, RUNNING, RETRYING))


@dataclasses.dataclass(frozen=True)
class JobStatus:
    """One job's record. Times are aware datetimes (UTC), or None."""

    id: str
    queue: str
    func: str
    kind: str
    state: str
    attempts: int
    created: datetime.datetime | None
    started: datetime.datetime | None
    finished: datetime.datetime | None
    result: object = None
    error: str | None = None
    traceback: str | None = None

    @property
    def done(self):
        """True once no run follows (succeeded, failed or canceled)."""
        return self.state in FINAL_STATES


class JobId(str):
    """What ``add_*_job`` returns: the job's id, a str, whose ``added``
    is False when an async job with this ``id`` was still queued or
    running, so this call added nothing."""

    def __new__(cls, value, added=True):
        job_id = super().__new__(cls, value)
        job_id.added = added
        return job_id


def aware(epoch):
    """An epoch number as an aware UTC datetime (None stays None)."""
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)


def wait_until_done(table, job_id, timeout, first_poll=0.02, max_poll=0.5):
    """Poll ``job_id``'s record until it is final; the JobStatus, or
    TimeoutError after ``timeout`` seconds (None: no limit). Polling: the
    record is written by another process, in batches (runtime.records)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    poll = first_poll
    while True:
        found = table.get(job_id)
        if found is not None and found.done:
            return found
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                state = 'no record' if found is None else found.state
                raise TimeoutError(f'job {job_id} did not end within '
                                   f'{timeout}s (now: {state})')
            poll = min(poll, remaining)
        time.sleep(poll)
        poll = min(poll * 2, max_poll)
