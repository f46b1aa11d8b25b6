"""The job runtime: a kombu consumer plus an APScheduler, for some queues.

One :class:`Runtime` serves one queue in each pscheduler child, or every
queue in a combined-mode web process. Several children may serve one queue
(``scheduler.processes``), each in a *slot*: all run its async jobs, and the
one in slot 0 alone owns its job store. It consumes the queue's store queue
(deferred jobs and cancels, in the order they were sent) and admin queue as
well; a runtime of another slot has no APScheduler and passes any deferred
job or command it receives on to the store queue. Its threads:

- the consumer thread owns the broker connection: it receives messages,
  stores deferred jobs, hands async jobs to the worker pool, answers admin
  commands, and acknowledges messages (kombu connections are not thread-safe,
  so workers queue their acknowledgements for it); a lone async job it runs
  itself, while a worker turns its loop (:mod:`.inline`);
- APScheduler's thread wakes deferred jobs from the persistent job stores;
- two bounded pools of worker threads run the jobs: one for async jobs, one
  for deferred runs, so a due run never waits behind prefetched async jobs;
- the watchdog of the jobs' time limits (timelimits.py), and the writer of
  their status records (records.py).

:class:`Runtime` is the composition root and the lifecycle (acquire the
job store locks, start, stop, drain, beat, ready); the parts, each calling
only the ones below it:

- :mod:`.consumer`: the consumer thread, its channel and kombu's hooks;
- :mod:`.dispatch`: decode, route, handle, retry and dead-letter a message;
- :mod:`.outbox`: what the consumer thread sends (dead letters, replies);
- :mod:`.acks`: acknowledging finished async jobs, and when (AckPolicy);
- :mod:`.deferred`: APScheduler, the job stores and the due runs, with
  :mod:`.apscheduling`, :mod:`.dueruns` and :mod:`.walcheckpoint`;
- :mod:`.workers`: the async jobs' threads and the count of jobs in flight;
  :mod:`.inline`: a lone job run by the thread that received it;
- :mod:`.jobrunner`: running one job, its events and counters, under its
  time limits (:mod:`.timelimits`: a watchdog thread), with :mod:`.retries`
  (retrying a failed run) and :mod:`.records` (status);
- :mod:`.introspection`: reading the job stores, housekeeping;
- :mod:`.storelock`: one owner per job store (across hosts with
  :mod:`.advisorylock` or :mod:`.leaselock`); :mod:`.state`: the flags
  the threads share, and the watch of their liveness (:mod:`.liveness`).

A message is acknowledged only once its job is durable (stored) or done
(async), so a runtime killed at any moment leaves its job to be redelivered.
"""
import logging
import threading
import time

from .. import exposure, refusals, transports
from . import liveness
from ..daemonview import daemon_view
from ..admin.commands import AdminCommands
from ..events import Listeners
from ..failedjobs import FailedJobs
from ..producer import Producer
from ..spool import SpoolDrainer
from .acks import AckPolicy
from .consumer import QueueConsumer, kombu_queues
from .inline import InlineJobs
from .crashes import CrashJournal, journal_directory
from .deferred import STORED_JOB_FUNC, DeferredJobs
from .dispatch import DeadLetterLog, Dispatcher
from .figures import StoreFigures
from .introspection import Introspection, delete_consumed_messages
from .jobrunner import JobRunner, Stats
from .metrics import RuntimeMetrics
from .outbox import Outbox
from .presence import Presence
from .received import ReceivedCopies
from .records import Records
from .retries import Retries
from .state import RunState
from .storelock import store_lock, store_owner, store_owners
from .timelimits import TimeLimits
from .workers import InFlight, WorkerPool

__all__ = ['Runtime', 'STORED_JOB_FUNC', 'delete_consumed_messages',
           'store_owners']

log = logging.getLogger(__name__)

# How often a stopping runtime wakes its consumer thread to look again.
STOP_CHECK_INTERVAL = 0.05


def build_job_runner(settings, registry, listeners, stats, crash_journal,
                     owns_stores):
    """The runner of jobs, with what it writes to and answers to: the
    status records, the time limits and the retries."""
    records = Records(settings, prune=owns_stores)
    limits = TimeLimits(settings, records, crash_journal)
    return JobRunner(settings, registry, listeners, stats, records, limits,
                     Retries(settings, records))


def admin_commands(runtime):
    """The admin commands a job store owner answers, on its parts."""
    return AdminCommands(
        runtime.settings, runtime.queues, listeners=runtime.listeners,
        stats=runtime.stats, inflight=runtime.in_flight,
        introspection=runtime.introspection,
        dead_letters=runtime.dead_letter_log, health=runtime.health,
        failed=FailedJobs(runtime.settings, runtime.records.table),
        daemon=lambda: (daemon_view(runtime.state_dir)
                        if runtime.state_dir else None),
        store_owner=lambda queue: store_owner(runtime.settings, queue))


def store_figures(runtime):
    """The owner's periodic counts, while metrics are served."""
    if runtime.deferred is None or runtime.settings.metrics_bind is None:
        return None
    commands = runtime.dispatcher.commands
    return StoreFigures(runtime.queues, lambda queue: commands.figures(
        queue, runtime.outbox), runtime.metrics)


def start_deferred(deferred, settings):
    """Start APScheduler on the job stores; a store that refuses the
    configuration (no such database, wrong password) raises
    ConfigurationError naming the key: retrying cannot help."""
    try:
        deferred.start()
    except Exception as exc:
        refused = refusals.store_configuration_error(exc, settings)
        if refused is None:
            raise
        raise refused from exc


class Runtime:
    """Consume ``queues`` and run their jobs; see the module docstring."""

    def __init__(self, settings, queues=None, registry=None, listeners=None,
                 slot=0):
        self.settings = settings
        self.slot = slot
        self.owns_stores = slot == 0
        self.queues = tuple(queues or settings.queues)
        for queue in self.queues:
            settings.check_queue(queue)
        self.registry = registry
        self.listeners = listeners if listeners is not None else Listeners()
        self.metrics = RuntimeMetrics(self.queues, slot)
        self.stats = Stats(self.metrics)
        # The pscheduler master's state directory, set by its child (the
        # whole daemon's status: daemonview); None elsewhere.
        self.state_dir = None
        self.state = RunState()
        self.worker_count = sum(map(settings.executor_size, self.queues))
        self._locks = ({q: store_lock(settings, q)
                        for q in self.queues} if self.owns_stores else {})
        self._build_parts()
        self.consumer = None
        self.presence = None   # on the broker, once started (presence.py)
        self._thread = None
        self._spool_drainer = None

    def _build_parts(self):
        """The parts; none starts a thread or opens a socket (see start)."""
        settings, queues = self.settings, self.queues
        self.acks = AckPolicy(self.worker_count)
        self.in_flight = InFlight()
        self.pool = WorkerPool(self.worker_count, 'pscheduler-job')
        self.inline = InlineJobs(self.pool)   # the dispatcher's pool
        self.crash_journal = CrashJournal(journal_directory(settings))
        self.jobs = build_job_runner(settings, self.registry, self.listeners,
                                     self.stats, self.crash_journal,
                                     self.owns_stores)
        self.records, self.limits, self.retries = (
            self.jobs.records, self.jobs.limits, self.jobs.retries)
        self.outbox = Outbox(settings)
        self.dead_letter_log = DeadLetterLog()
        self.deferred = self.introspection = commands = None
        if self.owns_stores:
            self.introspection = Introspection(settings, self.registry, None)
            self.deferred = DeferredJobs(
                settings, queues, self.worker_count, self.jobs, self.in_flight,
                housekeeping=self.introspection.housekeeping,
                fences={q: lock.may_fire for q, lock in self._locks.items()})
            self.introspection.deferred = self.retries.deferred = self.deferred
            commands = admin_commands(self)
        self.dispatcher = Dispatcher(
            settings, queues, state=self.state, acks=self.acks,
            pool=self.inline, inflight=self.in_flight, runner=self.jobs,
            deferred=self.deferred, outbox=self.outbox,
            dead_letters=self.dead_letter_log, commands=commands,
            received=ReceivedCopies(settings), crashes=self.crash_journal)

    # --- job store locks ---------------------------------------------------

    def acquire_stores(self, timeout=0, should_stop=lambda: False):
        """Take the lock of every queue's job store; False if one is held."""
        return all(lock.acquire(timeout, should_stop) if timeout
                   else lock.try_acquire() for lock in self._locks.values())

    def store_owners(self):
        """``{queue: {'host', 'pid'} or None}``, read from the stores."""
        return store_owners(self.settings, self.queues)

    def release_stores(self):
        """Release the job store locks taken by :meth:`acquire_stores` (a
        runtime that will not start after all; stop() releases them too)."""
        for lock in self._locks.values():
            lock.release()

    # --- lifecycle ---------------------------------------------------------

    def start(self):
        """Start consuming; the caller must hold the job store locks."""
        if not all(lock.held for lock in self._locks.values()):
            raise RuntimeError('acquire_stores() before start()')
        exposure.warn_if_pickle_unsigned(self.settings)
        self.crash_journal.open()
        for part in (self.records, self.limits, self.pool):
            part.start()
        if self.deferred is not None:
            start_deferred(self.deferred, self.settings)
        # After the fork: what this process holds on the broker is its own.
        self.presence = Presence(
            self.settings, [q.name for q in self.kombu_queues()],
            self.owns_stores, self.acks.held_tags)
        connection = transports.connect(
            self.settings, consumer_instance=self.presence.instance)
        self.consumer = QueueConsumer(
            connection, self.settings, self.queues,
            owns_stores=self.owns_stores, dispatcher=self.dispatcher,
            acks=self.acks, outbox=self.outbox, state=self.state,
            jobs_done=self._jobs_done, presence=self.presence,
            inline=self.inline, figures=store_figures(self),
            reconnected=lambda: [self.metrics.reconnected(queue)
                                 for queue in self.queues])
        self.presence.start()
        liveness.watch_threads(self.state, self.settings.child_heartbeat_timeout,
                               consumer=lambda: self.running, pool=self.pool,
                               deferred=self.deferred,
                               alive=self.presence.alive, limits=self.limits)
        self._thread = threading.Thread(target=self._consume,
                                        name='pscheduler-consumer',
                                        daemon=True)
        self._thread.start()
        if self.owns_stores:
            # Sends what committed transactions left in this host's outbox.
            self._spool_drainer = SpoolDrainer(
                self.settings, lambda: Producer(self.settings),
                until_empty=False)
            self._spool_drainer.ensure_running()
        log.info('serving queue(s) %s%s', ', '.join(self.queues),
                 '' if self.owns_stores else
                 f' (async jobs only: process slot {self.slot})')

    def sample_metrics(self):
        """This process's gauges now (its jobs in flight, its scheduler
        thread), for ``status`` and the metrics: the child's loop."""
        alive = self.state.threads.report().get('scheduler') == 'alive'
        for queue in self.queues:
            self.metrics.sample(queue, self.in_flight.count, alive,
                                self.owns_stores)

    def problem(self):
        """The first thread the runtime depends on that is dead or stuck,
        or a job store ownership lost, with why; None while all are fine."""
        return next((lock.lost for lock in self._locks.values()
                     if lock.lost), None) or self.state.threads.problem()

    def health(self):
        """Each thread's state and the time of the last scheduler pass
        (for ``status``)."""
        return liveness.health(self.state, self.deferred)

    def _consume(self):
        try:
            self.consumer.run()
        except Exception:
            log.exception('the consumer thread failed')
        finally:
            self.state.drained.set()

    def _jobs_done(self):
        """No job in flight, or none can end any more: every thread that
        ran them has ended (a stopping consumer may end then)."""
        return not self.in_flight.count or (
            self.pool.finished()
            and (self.deferred is None or self.deferred.finished()))

    def request_stop(self):
        """Stop taking messages; running jobs go on (see :meth:`stop`)."""
        self.state.stop_requested.set()
        self.acks.wake()

    def stop(self, timeout=None):
        """Drain: stop taking messages, let running jobs finish, release.

        Jobs still running after ``timeout`` seconds are left unacknowledged
        (they will be redelivered); queued async jobs that had not started are
        handed back to the broker. Deferred runs that are due and waiting
        for a worker run before the end: APScheduler has taken them out of
        the job store already, nothing would bring them back.
        """
        if timeout is None:
            timeout = self.settings.shutdown_timeout
        deadline = time.monotonic() + timeout
        self.state.stop_requested.set()
        if self.deferred is not None:
            # Returns once APScheduler submits no more runs; the runs it
            # submitted go on.
            self.deferred.shutdown()
        # Async jobs not started yet stay unacknowledged: the broker
        # hands them to whoever serves the queue next.
        self.pool.shutdown()
        if self._spool_drainer is not None:
            self._spool_drainer.stop()
        if self._thread is not None:
            self._wait_drained(max(deadline - time.monotonic(), 0) + 2)
        if self.deferred is not None:
            self.deferred.close()
        if self.presence is not None:
            self.presence.stop()
        self.jobs.close()
        self.crash_journal.close()
        self.release_stores()
        log.info('stopped serving queue(s) %s', ', '.join(self.queues))

    def _wait_drained(self, timeout):
        """Wait for the consumer thread to finish, waking it meanwhile.

        On the embedded transport its idle drains are long (see
        consumer.QueueConsumer), and what it waits for while stopping (jobs
        ending, worker threads exiting) does not always wake it.
        """
        end = time.monotonic() + timeout
        while True:
            self.acks.wake()
            remaining = end - time.monotonic()
            if (self.state.drained.wait(
                    min(max(remaining, 0), STOP_CHECK_INTERVAL))
                    or remaining <= 0):
                return

    def join(self, timeout=None):
        """Wait for the consumer thread to end; True if it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def wait_ready(self, timeout):
        """True once the broker has answered (the consumer consumes)."""
        return self.state.ready.wait(timeout)

    # --- what the owner, the admin commands and tests read -----------------

    @property
    def inflight(self):
        """Jobs running or queued to run here."""
        return self.in_flight.count

    @property
    def dead_letters(self):
        """The last dead letters, oldest first (a copy)."""
        return self.dead_letter_log.recent()

    def kombu_queues(self):
        return kombu_queues(self.settings, self.queues, self.owns_stores)

    def jobstore(self, queue):
        return self.deferred.jobstore(queue)

    def pending_count(self, queue):
        return self.introspection.pending_count(queue)

    def jobs_page(self, queue, offset=0, limit=50):
        """A page of a queue's deferred jobs, by next run time."""
        return self.introspection.jobs_page(queue, offset, limit)

    def housekeeping(self):
        self.introspection.housekeeping()
