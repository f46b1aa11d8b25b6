"""Writing job status records without slowing the jobs down.

The consumer thread and the workers only note what happened to a job (a
dict update under a lock); a thread of its own writes the notes to the
status table (statusdb) every :data:`FLUSH_INTERVAL`, merged per job: an
async job received, run and finished within one interval costs one row in
one transaction shared with every other job of that interval. A job's
spec is kept in its record for a requeue (failedjobs), so it is copied and
encoded only for a row written before the job succeeded: the jobs that
succeed within an interval, most of them, cost neither (on Redis, one
child, 20,000 no-op jobs: the writer thread had 30% of the child's GIL
time before, 8% since, with statusdb's plain SQLite upsert; py-spy
--gil). The same
thread keeps the set of canceled ids fresh (cancels reach the job store
owner; the other processes of the queue learn them from the table), and
deletes final records older than ``scheduler.results.ttl``.

What a crash loses is the last interval's notes: a job may read
``queued`` or ``running`` after it ended. Decisions that must be exact
(a unique id taken, a cancel, a hard time limit) are written at once with
:meth:`Records.write_now`.
"""
import logging
import threading
import time

from .. import status as st
from ..statusdb import StatusTable, encode

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.1
# How often the canceled ids are read again, and old records deleted (s).
CANCEL_POLL_INTERVAL = 1.0
PRUNE_INTERVAL = 60.0
# Notes kept while the database cannot be written; beyond, the oldest go.
MAX_PENDING = 100000


class Records:
    """Status notes of one runtime, and the thread that writes them."""

    def __init__(self, settings, prune=False):
        self.settings = settings
        self.table = StatusTable(settings)
        self._prune = prune
        self._lock = threading.Lock()
        # One write at a time: a note written at once (write_now, a
        # retry's record) never lands before an older one the writer thread
        # is writing.
        self._write_lock = threading.Lock()
        self._pending = {}       # job id -> columns to write
        self._canceled = {}      # job id -> when it was canceled
        self._wake = threading.Event()
        self._stopping = False
        self._thread = None
        self._polled_at = 0.0
        self._pruned_at = 0.0
        self.last_flush = None   # time of the last successful write
        # Most jobs return None: encoded once.
        self._encoded_none = encode(None, settings.serializer)

    # --- what the runtime notes (any thread) ------------------------------

    def queued(self, job):
        # The job itself: its spec is copied and encoded only if written.
        self._note(job, st.QUEUED, spec=job, created=job.get('created_at'),
                   attempts=0)

    def scheduled(self, job):
        self._note(job, st.SCHEDULED, spec=job,
                   created=job.get('created_at'))

    def running(self, job, attempt=1):
        self._note(job, st.RUNNING, started=time.time(), attempts=attempt)

    def succeeded(self, job, result, state=st.SUCCEEDED):
        self._note(job, state, finished=time.time(), result=(result,),
                   error='', traceback='')

    def failed(self, job, error, traceback, state=st.FAILED):
        self._note(job, state, finished=time.time(), error=error,
                   traceback=traceback)

    def _note(self, job, state, **columns):
        # Taken by the consumer and every worker, for each job: kept short.
        job_id = job_id_of(job)
        columns['state'] = state
        with self._lock:
            before = self._pending.get(job_id)
            if before is None:
                # A retry's kind is its job's (retries.py).
                columns.update(job_id=job_id, queue=job['queue'],
                               func=job['func'],
                               kind=job.get('of_kind') or job['kind'])
                self._pending[job_id] = columns
            else:
                before.update((k, v) for k, v in columns.items()
                              if v is not None)

    # --- decisions written at once ----------------------------------------

    def claim_unique(self, job):
        """Take the id of a unique async job (one added with an ``id``):
        False if a job of that id is still queued or running (or this one
        was canceled before it arrived); it must not run then."""
        self.flush()   # this job's earlier notes first
        content_type, spec = encode(spec_of(job), self.settings.serializer)
        return self.table.claim({
            'job_id': job['id'], 'queue': job.queue, 'func': job.func,
            'kind': job.kind, 'state': st.QUEUED, 'attempts': 0,
            'created': job.get('created_at'), 'spec': spec,
            'spec_type': content_type, 'token': job['unique']})

    def cancel(self, job_id, queue):
        """Cancel a job that has not started (written at once); the state
        it had, or None if it had no record yet (see StatusTable.cancel)."""
        self.flush()
        state = self.table.cancel(job_id, queue)
        if state is None or state in (st.QUEUED, st.SCHEDULED, st.RETRYING):
            self._canceled[job_id] = time.time()
        return state

    def is_canceled(self, job):
        """True once this process knows a cancel of ``job`` (its own, or
        one read from the table: within CANCEL_POLL_INTERVAL) made after
        the job was added: a job requeued after its cancel (failedjobs)
        runs, the canceled one it replaces still does not."""
        canceled_at = self._canceled.get(job['id'])
        return canceled_at is not None and \
            (job.get('created_at') or 0) <= canceled_at

    # --- the writer thread ---------------------------------------------------

    def start(self):
        """Start the writer (after the fork: Runtime.start)."""
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name='pscheduler-records')
        self._thread.start()

    def liveness(self):
        if self._thread is not None and not self._thread.is_alive() \
                and not self._stopping:
            return 'the status record writer has died'
        return None

    def stop(self, timeout=5.0):
        """Write what is noted, then end the thread."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self.flush()
        except Exception:
            # A stopping runtime must still release its stores: the
            # records are what is lost (as in a crash), not the jobs.
            log.exception('could not write the last job status records')
        self.table.close()

    def _loop(self):
        while not self._stopping:
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            try:
                self.flush()
                self._poll_canceled()
                self._prune_old()
            except Exception:
                log.exception('could not write job status records; will '
                              'try again')
                time.sleep(1)

    def flush(self):
        """Write the notes taken so far (one transaction)."""
        with self._write_lock:
            with self._lock:
                pending, self._pending = self._pending, {}
            if not pending:
                return
            rows = [self._encoded(row) for row in pending.values()]
            try:
                self.table.upsert(rows)
            except Exception:
                self._put_back(pending)
                raise
            self.last_flush = time.time()

    def write_now(self):
        """Write the notes now, in this thread: a decision that must
        outlive the process (a job past its hard time limit)."""
        self.flush()

    def _encoded(self, row):
        row = dict(row)
        serializer = self.settings.serializer
        spec = row.pop('spec', None)
        # The spec is kept for a requeue, which a job that succeeded within
        # the interval will never need: not encoding it is most of what an
        # async job's record costs the hot path.
        if spec is not None and row['state'] != st.SUCCEEDED:
            row['spec_type'], row['spec'] = encode(spec_of(spec), serializer)
        if 'result' in row:
            (result,) = row.pop('result')
            row['result_type'], row['result'] = (
                self._encoded_none if result is None
                else encode(result, serializer))
        return row

    def _put_back(self, pending):
        with self._lock:
            for job_id, row in pending.items():
                newer = self._pending.get(job_id)
                if newer is not None:
                    row.update((k, v) for k, v in newer.items()
                               if v is not None)
                self._pending[job_id] = row
            if len(self._pending) > MAX_PENDING:
                log.error('dropped %d job status records: the job store '
                          'database has refused them for too long',
                          len(self._pending))
                self._pending = {}

    def _poll_canceled(self):
        now = time.time()
        if now - self._polled_at < CANCEL_POLL_INTERVAL:
            return
        since, self._polled_at = self._polled_at - CANCEL_POLL_INTERVAL, now
        for job_id, canceled_at in self.table.canceled_since(since).items():
            if canceled_at > self._canceled.get(job_id, 0):
                self._canceled[job_id] = canceled_at

    def _prune_old(self):
        now = time.time()
        if not self._prune or now - self._pruned_at < PRUNE_INTERVAL:
            return
        self._pruned_at = now
        self.prune(now)

    def prune(self, now=None):
        """Delete final records older than ``scheduler.results.ttl``."""
        now = time.time() if now is None else now
        deleted = self.table.delete_finished_before(
            now - self.settings.results_ttl)
        if deleted:
            log.info('deleted %d job status records older than %ss',
                     deleted, self.settings.results_ttl)
        return deleted


def job_id_of(job):
    """The id a job's record is kept under: a retry's is its job's."""
    return job.get('retry_of') or job['id']


def spec_of(job):
    """The job's spec (a JobInfo is the spec plus its queue)."""
    return {key: value for key, value in job.items() if key != 'queue'}
