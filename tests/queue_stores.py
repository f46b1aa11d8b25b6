"""A custom job store class and a job that records its queue, for
tests/test_queue_jobstores.py (``scheduler.jobstore.default.class`` with
two queues)."""
import setproctitle
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

from tests.jobs import record

CHILD_TITLE_PREFIX = 'pscheduler: queue '


class QueueTableStore(SQLAlchemyJobStore):
    """A SQLAlchemyJobStore subclass, as an application would write one:
    the same arguments, and a name of its own for the tests to see."""

    def __init__(self, **options):
        super().__init__(**options)
        self.made_for_tests = True


def record_queue(path, label):
    """Record ``label`` and the queue of the pscheduler child running us
    (from its process title)."""
    title = setproctitle.getproctitle()
    queue = title[len(CHILD_TITLE_PREFIX):] if title.startswith(
        CHILD_TITLE_PREFIX) else None
    record(path, label, queue=queue)
