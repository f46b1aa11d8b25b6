"""What a runtime measures, as Prometheus metrics (prometheus_client).

In a pscheduler child, prometheus_client runs in its multiprocess mode: the
master points ``PROMETHEUS_MULTIPROC_DIR`` at a directory of its own before
the first fork (pscheduler.statedir), and every value a child sets is
written to a file named after its pid. The master's metrics server and the
``status`` command of any child read those files (pyramid_scheduler.
daemonview), so a child that died still counts: "since the daemon started"
is the sum over the files. Anywhere else (combined mode, tests) the values
live in memory and nobody reads them.

The metric objects belong to one runtime and are registered nowhere
(``registry=None``): the multiprocess collector reads the files, not a
registry. Labels are resolved once (``prometheus_client`` takes a lock for
each lookup): the hot path is one file write per counter.
"""
import math

from prometheus_client import Counter, Gauge, Histogram

# A job's outcome, as pscheduler_jobs_total counts it (Stats's names).
OUTCOMES = {'executed': 'succeeded', 'failed': 'failed',
            'retried': 'retried', 'missed': 'missed',
            'dead_lettered': 'dead_lettered'}
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                    10, 30, 60, 300, 1800, math.inf)
LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300,
                    math.inf)


class RuntimeMetrics:
    """The metrics of the runtime serving ``queues`` in process ``slot``."""

    def __init__(self, queues, slot=0):
        self.queues = tuple(queues)
        self.slot = str(slot)
        self._jobs = Counter(
            'pscheduler_jobs', 'Jobs that ended, by queue, process slot and '
            'outcome (succeeded, failed, retried, missed, dead_lettered)',
            ['queue', 'slot', 'outcome'], registry=None)
        self._duration = Histogram(
            'pscheduler_job_duration_seconds', 'How long jobs ran',
            ['queue'], buckets=DURATION_BUCKETS, registry=None)
        self._lateness = Histogram(
            'pscheduler_job_lateness_seconds', 'How long after its '
            'scheduled time a deferred run started', ['queue'],
            buckets=LATENESS_BUCKETS, registry=None)
        self._reconnects = Counter(
            'pscheduler_broker_reconnects', 'Broker connections restored '
            'after a loss', ['queue', 'slot'], registry=None)
        self._in_flight = live_gauge(
            'pscheduler_jobs_in_flight', 'Jobs running or waiting for a '
            'worker thread', 'livesum')
        self._scheduler_alive = live_gauge(
            'pscheduler_scheduler_alive', '1 while the APScheduler thread '
            'of the job store owner is alive, else 0', 'livemax')
        self._store_owner = live_gauge(
            'pscheduler_jobstore_owner', '1 for the process that owns the '
            "queue's job store (fires its deferred jobs)", 'livemax')
        self._figures = {name: Gauge(
            f'pscheduler_{name}', text, ['queue'],
            multiprocess_mode='mostrecent', registry=None)
            for name, text in STORE_FIGURES.items()}
        self._outcome_children = {}
        self._duration_children = {}

    # --- the hot path: every job --------------------------------------------

    def count(self, name, queue, n=1):
        """One more job with outcome ``name`` (a Stats counter name)."""
        outcome = OUTCOMES.get(name)
        if outcome is None:
            return
        key = (queue, outcome)
        child = self._outcome_children.get(key)
        if child is None:
            child = self._outcome_children[key] = self._jobs.labels(
                queue, self.slot, outcome)
        child.inc(n)

    def ran(self, queue, seconds, late=None):
        """A run took ``seconds``; a deferred one started ``late``."""
        child = self._duration_children.get(queue)
        if child is None:
            child = self._duration_children[queue] = self._duration.labels(
                queue)
        child.observe(seconds)
        if late is not None:
            self._lateness.labels(queue).observe(max(late, 0.0))

    # --- sampled: the child's loop, the consumer thread ----------------------

    def reconnected(self, queue):
        self._reconnects.labels(queue, self.slot).inc()

    def sample(self, queue, in_flight, scheduler_alive, owns_store):
        """This process's state now (a pscheduler child, once a second)."""
        self._in_flight.labels(queue, self.slot).set(in_flight)
        if owns_store:
            self._scheduler_alive.labels(queue, self.slot).set(
                1 if scheduler_alive else 0)
        self._store_owner.labels(queue, self.slot).set(1 if owns_store else 0)

    def store_figures(self, queue, **figures):
        """The job store owner's periodic counts (STORE_FIGURES's keys)."""
        for name, value in figures.items():
            if value is not None:
                self._figures[name].labels(queue).set(value)


# Counted by the job store owner every few seconds, while metrics are
# served (runtime.figures): a scrape reads files, never a store.
STORE_FIGURES = {
    'scheduled_jobs': 'Deferred jobs stored in the queue\'s job store',
    'queue_depth': 'Messages waiting in the queue on the broker',
    'dead_letters': 'Messages in the queue\'s dead-letter queue',
    'failed_jobs': 'Jobs in the failed-job registry (scheduler.failed_jobs)',
}


def live_gauge(name, text, mode):
    """A gauge per process, gone from the files when its process dies (the
    master calls prometheus_client's mark_process_dead)."""
    return Gauge(name, text, ['queue', 'slot'], multiprocess_mode=mode,
                 registry=None)
