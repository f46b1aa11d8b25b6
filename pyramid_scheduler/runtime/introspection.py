"""Looking into a runtime's job stores, and tidying its broker.

What the admin commands read (how many deferred jobs a queue has, a page
of them) and the periodic housekeeping APScheduler runs in the runtime
that owns the job stores.
"""
import logging

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from sqlalchemy import func, select

from .. import transports
from . import jobsearch
from ..execution import app_threadlocals
from ..transports.sqlite import housekeeping as sqlite_housekeeping

log = logging.getLogger(__name__)


class Introspection:
    """Reads the job stores of ``deferred`` (deferred.DeferredJobs)."""

    def __init__(self, settings, registry, deferred):
        self.settings = settings
        self.registry = registry
        self.deferred = deferred

    def pending_count(self, queue):
        store = self.deferred.jobstore(queue)
        if isinstance(store, SQLAlchemyJobStore):
            with store.engine.connect() as conn:
                return conn.execute(
                    select(func.count()).select_from(store.jobs_t)).scalar()
        return len(store.get_all_jobs())

    def jobs_page(self, queue, offset=0, limit=50):
        """A page of a queue's deferred jobs, by next run time."""
        store = self.deferred.jobstore(queue)
        if not isinstance(store, SQLAlchemyJobStore):
            return store.get_all_jobs()[offset:offset + limit]
        table = store.jobs_t
        query = (select(table.c.id, table.c.job_state)
                 .order_by(table.c.next_run_time.asc().nulls_last(),
                           table.c.id)
                 .offset(offset).limit(limit))
        with store.engine.connect() as conn:
            rows = conn.execute(query).all()
        jobs = []
        for row in rows:
            try:
                jobs.append(store._reconstitute_job(row.job_state))
            except Exception:
                log.exception('job %s in queue %s does not load', row.id,
                              queue)
        return jobs

    def search(self, queue, text, offset=0, limit=50):
        """``(page, total, capped)``: the deferred jobs of ``queue`` whose id
        or name contains ``text`` (see jobsearch)."""
        store = self.deferred.jobstore(queue)
        if isinstance(store, SQLAlchemyJobStore):
            return jobsearch.search_sql_store(store, text, offset, limit)
        return jobsearch.search_memory_store(store, text, offset, limit)

    def lookup(self, queue, job_id):
        """The deferred job ``job_id`` of ``queue``'s store, or None."""
        return self.deferred.jobstore(queue).lookup_job(job_id)

    def housekeeping(self):
        """Tidy the embedded broker (dead leases, stale replies); call
        ``scheduler.housekeeping.append``."""
        if self.settings.embedded:
            deleted = delete_consumed_messages(self.settings)
            log.info('housekeeping: deleted %d stale reply messages', deleted)
        append = self.settings.housekeeping_append
        if append is not None:
            with app_threadlocals(self.registry):
                append()


def delete_consumed_messages(settings):
    """Embedded broker housekeeping; the number of message rows deleted.

    Acknowledged messages are deleted at once (transports.sqlite), so this
    makes the leases of dead consumers visible again and drops reply queues
    (with their unread replies) older than a day.
    """
    return sqlite_housekeeping(settings.database_path,
                               visibility_timeout=settings.visibility_timeout,
                               busy_timeout=transports.SQLITE_BUSY_TIMEOUT)
