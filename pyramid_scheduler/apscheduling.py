"""APScheduler, adapted: stored jobs run through the runtime.

Two adaptations, each with its reason below: an executor that hands the
job's spec to the runtime (the job store keeps a spec, not a callable), and a
scheduler that stops only between two passes over its job stores.
"""
import datetime

from apscheduler.executors.base import BaseExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED
from apscheduler.schedulers.blocking import BlockingScheduler


class RuntimeExecutor(BaseExecutor):
    """APScheduler executor that runs stored jobs through the runtime.

    The job store holds the job's spec, not a callable; this executor gives
    the spec to the runtime, which runs it in its worker pool and fires the
    events in order.
    """

    def __init__(self, runtime):
        super().__init__()
        self._runtime = runtime

    def _do_submit_job(self, job, run_times):
        last_run = job.trigger.get_next_fire_time(
            run_times[-1], datetime.datetime.now(datetime.timezone.utc)) is None
        # Kept durable before APScheduler takes it out of the store.
        due = self._runtime.keep_due_run(job, run_times, last_run)
        self._runtime.submit_stored(self._run, job, run_times, last_run, due)

    def _run(self, job, run_times, last_run, due):
        try:
            self._runtime.run_stored_job(job, run_times, last_run, due)
        finally:
            self._run_job_success(job.id, [])


class SafeStopScheduler(BackgroundScheduler):
    """APScheduler's, stopped only between two passes over the job stores.

    APScheduler marks itself stopped before it takes its job store lock. A
    pass handing a run over at that moment then cannot take the run out of
    the store (once stopped, ``remove_job`` looks at pending jobs only): its
    thread dies, and the next process fires the run a second time.
    """

    def shutdown(self, wait=True):
        with self._executors_lock, self._jobstores_lock:
            BlockingScheduler.shutdown(self, wait)
        self._thread.join()
        del self._thread

    def _process_jobs(self):
        with self._jobstores_lock:
            if self.state == STATE_STOPPED:
                return None
            return super()._process_jobs()
