"""A job store that fails once, as told, for tests/test_scheduler_liveness.py.

``scheduler.jobstore.default.class = tests.failing_stores:FailOnceStore``
with ``scheduler.jobstore.default.flag = PATH`` and
``scheduler.jobstore.default.fault = die|hang``: the first pass over the
store after the test creates PATH removes it and then kills APScheduler's
thread (``die``: a BaseException, which nothing in a pass catches) or hangs
in it (``hang``), as a job store driver stuck on a dead connection does.
"""
import os
import time

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore


class FailOnceStore(SQLAlchemyJobStore):

    def __init__(self, flag, fault, **options):
        super().__init__(**options)
        self.flag = flag
        self.fault = fault

    def get_due_jobs(self, now):
        try:
            os.unlink(self.flag)
        except FileNotFoundError:
            return super().get_due_jobs(now)
        if self.fault == 'hang':
            time.sleep(3600)
        raise SystemExit('the job store killed the scheduler thread')
