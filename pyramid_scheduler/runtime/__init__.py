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
  so workers queue their acknowledgements for it);
- APScheduler's thread wakes deferred jobs from the persistent job stores;
- two bounded pools of worker threads run the jobs: one for async jobs, one
  for deferred runs, so a due run never waits behind prefetched async jobs.

The consumer loop is :mod:`pyramid_scheduler.runtime.consumer`; the APScheduler
adaptations are :mod:`pyramid_scheduler.runtime.apscheduling`; the async jobs'
threads are :mod:`pyramid_scheduler.runtime.workers`, and how their messages are
acknowledged (in batches) is :mod:`pyramid_scheduler.runtime.acks`.

A message is acknowledged only once its job is durable (stored) or done
(async), so a runtime killed at any moment leaves its job to be redelivered.
"""
import collections
import datetime
import logging
import os
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor

from apscheduler.executors.pool import ThreadPoolExecutor as APSThreadPool
from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
import sqlalchemy.event

from .. import admin, broker, codec, wire
from .acks import Acknowledgements
from .apscheduling import (
    HandingOverJobStore, HandOvers, RuntimeExecutor, SafeStopScheduler)
from .consumer import QueueConsumer
from .dueruns import DeferredWorkers, DueRuns
from ..errors import InvalidJob, InvalidMessage
from ..events import Event, JobInfo, Listeners
from ..jobs import check_options
from ..jobs import build_trigger, check_allowed, resolve_reference
from .storelock import StoreLock, lock_path
from .walcheckpoint import DISABLE_AUTOCHECKPOINT, WalCheckpointer
from .jobrunner import JobRunner, Stats
from .workers import WorkerPool

log = logging.getLogger(__name__)

INTERNAL_STORE = '_internal'
PREFETCH_PER_WORKER = 25
# While messages stream in, finished jobs are acknowledged in batches of
# this many, or after this long (see Runtime._settle_acks).
ACK_BATCH = 16
ACK_DELAY = 0.005
# The longest a consumer thread whose prefetch window is full waits for a
# job to end before it turns again (beat, stop, other queues' messages).
WINDOW_FULL_WAIT = 0.05
# How often a stopping runtime wakes its consumer thread to look again.
STOP_CHECK_INTERVAL = 0.05
# Failures in a row after which a message that does not fail for a
# transient reason goes to the dead-letter queue.
MAX_HANDLING_FAILURES = 3
# The id column of APScheduler's SQLAlchemy job store is 191 characters.
MAX_JOB_ID_LENGTH = 191
STORED_JOB_FUNC = 'pyramid_scheduler.execution:stored_job_marker'


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
        self.stats = Stats()
        self.jobs = JobRunner(settings, registry, self.listeners, self.stats)
        self.worker_count = sum(settings.executor_size(q)
                                for q in self.queues)
        # Acknowledgements leave with the consumer thread's next turn, so
        # the broker must let it hold more messages than it has workers, or
        # the workers would wait on acks between jobs.
        self.prefetch_count = self.worker_count * PREFETCH_PER_WORKER
        self._acks = Acknowledgements()
        self._settled_at = 0.0
        self._delivered_since_settle = 0
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        self._locks = ({q: StoreLock(lock_path(settings, q))
                        for q in self.queues} if self.owns_stores else {})
        self._stop_requested = threading.Event()
        self._drained = threading.Event()
        self._ready = threading.Event()
        self._last_beat = time.monotonic()
        self._pool = None          # async jobs
        self._stored_pool = None   # deferred jobs, so they never queue
                                   # behind prefetched async ones
        self._scheduler = None
        self._checkpointers = {}   # SQLite job store path -> WalCheckpointer
        self._due_runs = {}        # queue -> dueruns.DueRuns
        self._consumer = None
        self._thread = None
        self._channel = None
        self.dead_letters = []
        self._failures = {}   # message body -> handling failures in a row
        # Messages delivered while one is being handled (consumer thread).
        self._waiting_messages = collections.deque()
        self._handling_message = False

    # --- lifecycle ---------------------------------------------------------

    def acquire_stores(self, timeout=0, should_stop=lambda: False):
        """Take the lock of every queue's job store; False if one is held."""
        for queue, lock in self._locks.items():
            got = (lock.acquire(timeout, should_stop) if timeout
                   else lock.try_acquire())
            if not got:
                log.debug('job store of queue %r is in use by another '
                          'scheduler process (lock %s)', queue, lock.path)
                return False
        return True

    def start(self):
        """Start consuming; the caller must hold the job store locks."""
        if not all(lock.held for lock in self._locks.values()):
            raise RuntimeError('acquire_stores() before start()')
        if self.settings.serializer == 'pickle' and not self.settings.secrets:
            log.warning('scheduler.broker.serializer is pickle and '
                        'scheduler.broker.secret is not set: anyone who can '
                        'write to the broker can run code in this process. '
                        'Set a secret, or use the json serializer')
        self._pool = WorkerPool(self.worker_count, 'pscheduler-job')
        if self.owns_stores:
            self._start_scheduler()
        connection = broker.connect(self.settings, consumer_slot=self.slot)
        self._consumer = QueueConsumer(self, connection)
        self._thread = threading.Thread(target=self._consume,
                                        name='pscheduler-consumer',
                                        daemon=True)
        self._thread.start()
        log.info('serving queue(s) %s%s', ', '.join(self.queues),
                 '' if self.owns_stores else
                 f' (async jobs only: process slot {self.slot})')

    def _start_scheduler(self):
        self._stored_pool = ThreadPoolExecutor(
            max_workers=self.worker_count,
            thread_name_prefix='pscheduler-deferred')
        self._scheduler = self._make_scheduler()
        self._restart_due_runs()
        self._scheduler.start()
        for checkpointer in self._checkpointers.values():
            checkpointer.start()

    def _make_scheduler(self):
        settings = self.settings
        # Which due runs a worker starts at once (the others are written
        # down): counts the runs of the pool, restarted ones too.
        self._deferred_workers = DeferredWorkers(self.worker_count)
        hand_overs = HandOvers()
        jobstores = {INTERNAL_STORE: MemoryJobStore()}
        for queue in self.queues:
            jobstores[queue] = self._make_jobstore(queue, hand_overs)
        scheduler = SafeStopScheduler(
            hand_overs,
            jobstores=jobstores,
            executors={'default': RuntimeExecutor(self, hand_overs),
                       'internal': APSThreadPool(1)},
            job_defaults={'misfire_grace_time': settings.misfire_grace_time,
                          'coalesce': settings.coalesce,
                          'max_instances': 1},
            timezone=settings.timezone or _local_timezone(),
        )
        if settings.apscheduler_options:
            scheduler.configure(gconfig=settings.apscheduler_options,
                                prefix='apscheduler.')
        if settings.housekeeping_interval:
            scheduler.add_job(self.housekeeping, 'interval',
                              seconds=settings.housekeeping_interval,
                              jobstore=INTERNAL_STORE, executor='internal',
                              id='housekeeping', name='housekeeping')
        return scheduler

    def _restart_due_runs(self):
        """Start the due runs a dead runtime of our queues never started."""
        for queue in self.queues:
            store = self._scheduler._lookup_jobstore(queue)
            if not isinstance(store, SQLAlchemyJobStore):
                continue
            table = f'{self.settings.scheduler_id}_{queue}_due'.replace(
                '.', '_')
            due_runs = self._due_runs[queue] = DueRuns(store.engine, table)
            left = []
            for row_id, run in due_runs.left():
                if _still_stored(store, run):
                    # Killed before APScheduler took it out of the store:
                    # the store fires it, not us.
                    due_runs.started(row_id)
                else:
                    left.append((row_id, run))
            if left:
                log.warning('queue %s: starting %d deferred run(s) that were '
                            'due when the previous runtime died',
                            queue, len(left))
            for row_id, run in left:
                self._deferred_workers.run_added()
                job = types.SimpleNamespace(
                    id=run['job_id'], args=(queue, run['spec']),
                    misfire_grace_time=run['misfire_grace_time'])
                self.submit_stored(self.run_stored_job, job, run['run_times'],
                                   run['last_run'], (queue, row_id))

    def keep_due_run(self, aps_job, run_times, last_run):
        """Write a due run down unless a worker starts it at once (see
        dueruns); ``(queue, row id)``, or None if not kept. Call once per run
        given to the pool."""
        if self._deferred_workers.run_added():
            return None
        queue, spec = aps_job.args
        due_runs = self._due_runs.get(queue)
        if due_runs is None:
            return None
        try:
            return queue, due_runs.add({
                'job_id': aps_job.id, 'spec': spec, 'run_times': run_times,
                'last_run': last_run,
                'misfire_grace_time': aps_job.misfire_grace_time})
        except Exception:
            log.exception('job %s: could not write its due run down; it runs '
                          'now, but a crash before it starts would lose it',
                          aps_job.id)
            return None

    def _due_run_started(self, due):
        if due is None:
            return
        queue, row_id = due
        try:
            # Under the job stores lock, as APScheduler writes to the store:
            # two writers that meet in SQLite wait in its busy handler,
            # which sleeps a millisecond or more.
            with self._scheduler._jobstores_lock:
                self._due_runs[queue].started(row_id)
        except Exception:
            log.exception('could not delete due run %s of queue %s: it may '
                          'start again after a restart', row_id, queue)

    def _make_jobstore(self, queue, hand_overs):
        settings = self.settings
        if settings.jobstore_class is not None:
            return settings.jobstore_class(**settings.jobstore_options)
        options = {}
        if settings.jobstore_url.startswith('sqlite'):
            options['connect_args'] = {'timeout': broker.SQLITE_BUSY_TIMEOUT}
        else:
            options['pool_pre_ping'] = True
        table = f'{settings.scheduler_id}_{queue}_jobs'.replace('.', '_')
        store = HandingOverJobStore(
            hand_overs, url=settings.jobstore_url, tablename=table,
            engine_options=options)
        if settings.jobstore_url.startswith('sqlite'):
            sqlalchemy.event.listen(store.engine, 'connect', _sqlite_pragmas)
            self._checkpoint_wal_of(store.engine.url.database)
        return store

    def _checkpoint_wal_of(self, path):
        """Checkpoint the log of the SQLite file at ``path`` in a thread
        (see walcheckpoint); one per file, whatever its queues."""
        if not path or path == ':memory:':
            return
        path = os.path.abspath(path)
        if path not in self._checkpointers:
            self._checkpointers[path] = WalCheckpointer(path)

    def _consume(self):
        try:
            self._consumer.run()
        except Exception:
            log.exception('the consumer thread failed')
        finally:
            self._drained.set()

    def request_stop(self):
        """Stop taking messages; running jobs go on (see :meth:`stop`)."""
        self._stop_requested.set()
        self._wake_consumer()

    def stop(self, timeout=None):
        """Drain: stop taking messages, let running jobs finish, release.

        Jobs still running after ``timeout`` seconds are left unacknowledged
        (they will be redelivered); queued async jobs that had not started are
        handed back to the broker. Deferred runs that are due and waiting
        for a worker run before the end: APScheduler has taken them out of
        the job store already, nothing would bring them back.
        """
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self._stop_requested.set()
        if self._scheduler is not None and self._scheduler.running:
            # Returns once APScheduler submits no more runs.
            self._scheduler.shutdown(wait=False)
        if self._pool is not None:
            # Async jobs not started yet stay unacknowledged: the broker
            # hands them to whoever serves the queue next.
            self._pool.shutdown()
        if self._stored_pool is not None:
            self._stored_pool.shutdown(wait=False)
        if self._thread is not None:
            self._wait_drained(max(deadline - time.monotonic(), 0) + 2)
        for checkpointer in self._checkpointers.values():
            checkpointer.stop()
        for lock in self._locks.values():
            lock.release()
        log.info('stopped serving queue(s) %s', ', '.join(self.queues))

    def _wait_drained(self, timeout):
        """Wait for the consumer thread to finish, waking it meanwhile.

        On the embedded transport its idle drains are long (see
        consumer.QueueConsumer), and what it waits for while stopping (jobs
        ending, worker threads exiting) does not always wake it.
        """
        end = time.monotonic() + timeout
        while True:
            self._wake_consumer()
            remaining = end - time.monotonic()
            if (self._drained.wait(min(max(remaining, 0), STOP_CHECK_INTERVAL))
                    or remaining <= 0):
                return

    @property
    def stop_requested(self):
        return self._stop_requested.is_set()

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def beat(self):
        self._last_beat = time.monotonic()

    def seconds_since_beat(self):
        return time.monotonic() - self._last_beat

    def wait_ready(self, timeout):
        return self._ready.wait(timeout)

    # --- consumer thread hooks -----------------------------------------------

    def kombu_queues(self):
        if not self.owns_stores:
            return [broker.job_queue(self.settings, q) for q in self.queues]
        queues = []
        for queue in self.queues:
            queues.append(broker.admin_queue(self.settings, queue))
            queues.append(broker.store_queue(self.settings, queue))
            queues.append(broker.job_queue(self.settings, queue))
        return queues

    def on_consume_ready(self, connection, channel):
        self._channel = channel
        self._acks.forget_deliveries()
        queue_names = {q.name for q in self.kombu_queues()}
        try:
            # At start, what a dead consumer left. After a reconnect, also
            # what a fetch cut short by the connection loss recorded as
            # unacknowledged without delivering it; not the messages this
            # process holds, whose jobs wait or run here.
            broker.restore_orphaned_messages(channel, queue_names,
                                             keep=self._acks.held_tags())
        except Exception:
            log.exception('could not restore unacknowledged messages; '
                          'they come back after the visibility timeout')
        try:
            # At start and after a reconnect: a fetch is never ours before
            # we consume (a Redis outage may have cut one short).
            broker.restore_fetched_messages(channel, queue_names)
        except Exception:
            log.exception('could not restore fetched messages; they come '
                          'back when the queue\'s next consumer starts')
        if self.owns_stores:
            self._restore_removed_slots(channel)
        self._ready.set()

    def _restore_removed_slots(self, channel):
        """What processes of this queue that are no longer configured
        left unacknowledged (Redis; see redis_transport)."""
        settings = self.settings
        try:
            broker.restore_removed_slots(channel, {
                broker.queue_name(settings, queue): settings.processes(queue)
                for queue in self.queues})
        except Exception:
            log.exception('could not restore the messages of removed '
                          'processes; they come back when the queue has '
                          'that many processes again')

    def on_iteration(self, consumer):
        self.beat()
        self._settle_acks()
        if not self._stop_requested.is_set():
            return
        if consumer._consumers:
            consumer.cancel_consumers()
        if not self.inflight or self._pool_finished():
            self._acks.settle()
            consumer.should_stop = True

    def _settle_acks(self):
        """Acknowledge finished jobs, in batches while messages stream in.

        Each settle is at least one frame or round trip; while the last
        drain delivered messages, finished ones wait for a batch of
        ACK_BATCH or for ACK_DELAY. A turn that delivered nothing (a
        timeout, or a wake-up for acks) settles at once, and so does one
        whose unacknowledged messages fill half the prefetch window: the
        broker (or our Redis batch fetch) sends no more until some are
        acknowledged. With the window full, the consumer thread waits for
        a job to end rather than in a drain that nothing would end.
        """
        held = self._acks.unsettled()
        if held >= self.prefetch_count and not self._acks.pending():
            # The window is full: nothing comes before a job ends, and a
            # drain would sleep through that end (only the embedded
            # transport can be woken), for as long as its timeout.
            self._acks.wait_finished(WINDOW_FULL_WAIT)
        pending = self._acks.pending()
        now = time.monotonic()
        if (self._delivered_since_settle and pending < ACK_BATCH
                and now - self._settled_at < ACK_DELAY
                and 2 * held < self.prefetch_count):
            return
        self._delivered_since_settle = 0
        self._settled_at = now
        self._acks.settle()

    def _pool_finished(self):
        stored_threads = getattr(self._stored_pool, '_threads', ())
        return ((self._pool is None or self._pool.finished())
                and not any(thread.is_alive() for thread in stored_threads))

    def on_message(self, message):
        """Called in the consumer thread for every message."""
        self._delivered_since_settle += 1
        self._acks.delivered(message)
        self._one_at_a_time(self._handle_message, message)

    def on_decode_error(self, message, exc):
        """kombu could not even make a message of it (say, a bad
        ``compression`` header): dead-letter it like any undecodable one."""
        self._one_at_a_time(self._handle_decode_error, message, exc)

    def _one_at_a_time(self, handle, *args):
        # Handling a message may publish (a dead letter, a reply), and
        # py-amqp reads the frames waiting on the connection before it
        # publishes, delivering the next messages from inside the publish:
        # those wait for the current one, or a stream of bad messages would
        # nest one call per message until a RecursionError.
        self._waiting_messages.append((handle, args))
        if self._handling_message:
            return
        self._handling_message = True
        try:
            while self._waiting_messages:
                handle, args = self._waiting_messages.popleft()
                handle(*args)
        except BaseException:
            # Only a broken connection gets here (handling catches the
            # rest): the broker gives this message and the waiting ones
            # back after it.
            for _, waiting_args in [(handle, args), *self._waiting_messages]:
                self._acks.dropped(waiting_args[0])
            self._waiting_messages.clear()
            raise
        finally:
            self._handling_message = False

    def _handle_message(self, message):
        if self._stop_requested.is_set():
            # Stopping: the pool and APScheduler may be shut down already (an
            # add_job now would only be kept in memory, and lost). Hand the
            # message back for whoever serves the queue next.
            message.reject(requeue=True)
            return
        self.stats.add('received')
        try:
            body = self.decode(message)
        except InvalidMessage as exc:
            self.dead_letter(message, str(exc))
            return
        except Exception as exc:
            # decode() means to raise only InvalidMessage; whatever else a
            # hostile message provokes must not stop the consumer either.
            self.dead_letter(message, f'message does not decode '
                             f'({type(exc).__name__}: {exc})')
            return
        handler = {
            wire.JOB_CREATED: self._on_job_created,
            wire.JOB_CANCELED: self._on_job_canceled,
            wire.COMMAND: self._on_command,
        }.get(body['type'])
        if handler is None:
            self.dead_letter(message, f'unexpected {body["type"]} message')
            return
        if not self.owns_stores and not _is_async_job(body):
            # Deferred jobs, cancels and commands are the job store
            # owner's, which checks them as it checks any other.
            handler = self._pass_to_store_owner
        try:
            handler(body, message)
        except InvalidJob as exc:
            self.dead_letter(message, str(exc), body)
        except Exception as exc:
            self._on_handling_error(message, body, exc)
        else:
            self._failures.pop(message.body, None)

    def _on_handling_error(self, message, body, exc):
        """Retry a message whose handling failed; dead-letter a hopeless one.

        An unreachable job store (the database is down) is worth waiting
        for, however long: the message is handed back and tried again. Any
        other error is the message's own fault once it has failed a few
        times in a row, and must not hold up the queue behind it.
        """
        if message.acknowledged:
            log.exception('handling a %s message failed after it was '
                          'acknowledged', body['type'])
            return
        failures = self._failures.get(message.body, 0) + 1
        if _is_transient(exc) or failures < MAX_HANDLING_FAILURES:
            if len(self._failures) > 1000:
                self._failures.clear()
            self._failures[message.body] = failures
            log.error('could not handle a %s message (%s: %s); it will be '
                      'retried', body['type'], type(exc).__name__, exc,
                      exc_info=failures == 1)
            message.reject(requeue=True)
            time.sleep(min(0.2 * failures, 2))
            return
        self._failures.pop(message.body, None)
        self.dead_letter(message, f'handling failed {failures} times: '
                         f'{type(exc).__name__}: {exc}', body)

    def _handle_decode_error(self, message, exc):
        self.stats.add('received')
        if not hasattr(message, 'ack'):
            log.error('dropped a message kombu could not read: %s: %s',
                      type(exc).__name__, exc)
            return
        self.dead_letter(message, f'message does not decode '
                         f'({type(exc).__name__}: {exc})')

    def decode(self, message):
        """Verify and decode a message body, or raise InvalidMessage."""
        return codec.decode(self.settings, message)

    def dead_letter(self, message, reason, body=None):
        """Log the reason and move the raw message to the dead-letter queue."""
        queue = (message.delivery_info or {}).get('routing_key', '?')
        log.error('rejected a message from %s: %s; moved to the dead-letter '
                  'queue', queue, reason)
        self.stats.add('dead_lettered')
        self.dead_letters = (self.dead_letters + [
            {'at': time.time(), 'queue': queue, 'reason': reason}])[-100:]
        target = self._dead_letter_queue_for(queue)
        try:
            self._republish(message, target,
                            headers={'x-pscheduler-reason': reason[:1000],
                                     'x-pscheduler-queue': queue})
        except Exception:
            log.exception('could not move a rejected message to %s',
                          target.name)
        message.ack()

    def _republish(self, message, target, headers, compression=None):
        """Send a received message's body on to the queue ``target``."""
        producer = self._channel.connection.client.Producer(self._channel)
        producer.publish(
            message.body, routing_key=target.name, exchange='',
            content_type=message.content_type or 'application/data',
            content_encoding=message.content_encoding or 'binary',
            headers=headers, declare=[target], delivery_mode=2,
            compression=compression)

    def _dead_letter_queue_for(self, routing_key):
        settings = self.settings
        for queue in self.queues:
            if routing_key in (broker.queue_name(settings, queue),
                               broker.admin_queue_name(settings, queue),
                               broker.store_queue_name(settings, queue)):
                return broker.dead_letter_queue(settings, queue)
        return broker.dead_letter_queue(settings, self.queues[0])

    def _pass_to_store_owner(self, body, message):
        """A deferred job, cancel or command reached a runtime that does not
        own the job store (sent before the queue had several processes, or
        by hand): send it on to the store queue, whose owner handles it
        (an unknown queue's, to the first queue's owner, who refuses it)."""
        queue = body.get('queue')
        target = broker.store_queue(
            self.settings, queue if queue in self.queues else self.queues[0])
        # The body as received, signature header included. kombu has
        # decompressed it: its compression header goes, and the publish
        # compresses it again as configured.
        headers = {key: value for key, value in (message.headers or {}).items()
                   if key != 'compression'}
        self._republish(message, target, headers,
                        compression=self.settings.compressor)
        log.debug('passed a %s message on to %s', body['type'], target.name)
        message.ack()

    # --- job messages --------------------------------------------------------

    def _check_queue(self, body):
        if body['queue'] not in self.queues:
            raise InvalidJob(f'message for queue {body["queue"]!r} arrived at '
                             f'a runtime serving {", ".join(self.queues)}')

    def _on_job_created(self, body, message):
        self._check_queue(body)
        spec = body['job']
        queue = body['queue']
        # A function outside scheduler.allowed_modules (a forged or stale
        # message) is refused before its module is even imported, and one
        # that no longer imports (or names no callable) would fail at every
        # run: both go to the dead-letter queue, where an operator sees
        # them, and never run.
        check_allowed(spec['func'], self.settings.allowed_modules)
        func = resolve_reference(spec['func'])
        if not callable(func):
            raise InvalidJob(f'job function {spec["func"]} is not callable')
        job = JobInfo(spec, queue=queue)
        if spec['kind'] == 'async':
            self._track(+1)
            self.jobs.notify(Event.JOB_CREATED, job)
            self._acks.expect(message)
            self.submit(self._run_async, job, message, func)
            return
        trigger, name, options = self._prepare_stored_job(spec, queue)
        self.jobs.notify(Event.JOB_CREATED, job)
        self._scheduler.add_job(
            STORED_JOB_FUNC, trigger, args=(queue, spec), id=spec['id'],
            name=name, jobstore=queue, replace_existing=True, **options)
        message.ack()

    def _prepare_stored_job(self, spec, queue):
        """``(trigger, name, options)`` of a deferred job, or InvalidJob.

        Builds what APScheduler will store without storing it: whatever
        fails here fails because of the message and would fail again at
        every redelivery, so it goes to the dead-letter queue, never back to
        the broker (only storing it may fail for a reason worth a retry).
        """
        try:
            trigger = build_trigger(spec['kind'], spec['trigger'],
                                    self.settings.timezone)
            # Options APScheduler would refuse (TypeError) go to the
            # dead-letter queue, not back to the broker to fail forever.
            check_options(spec['options'], spec['kind'])
            options = dict(spec['options'])
            name = options.pop('name', None) or spec['func']
            if not isinstance(spec['id'], str) or not 0 < len(
                    spec['id']) <= MAX_JOB_ID_LENGTH:
                raise InvalidJob(f'job id must be a string of 1 to '
                                 f'{MAX_JOB_ID_LENGTH} characters, not '
                                 f'{spec["id"]!r:.80}')
            now = datetime.datetime.now(datetime.timezone.utc)
            Job(self._scheduler, id=spec['id'], func=STORED_JOB_FUNC,
                trigger=trigger, executor='default', args=(queue, spec),
                kwargs={}, name=name,
                next_run_time=trigger.get_next_fire_time(None, now),
                **options)
        except InvalidJob:
            raise
        except Exception as exc:
            raise InvalidJob(f'invalid {spec["kind"]} job: '
                             f'{type(exc).__name__}: {exc}') from exc
        return trigger, name, options

    def _on_job_canceled(self, body, message):
        self._check_queue(body)
        queue, job_id = body['queue'], body['job_id']
        if not isinstance(job_id, str) or not job_id:
            raise InvalidJob(f'job id to cancel must be a non-empty string, '
                             f'not {job_id!r:.80}')
        try:
            job = self._scheduler.get_job(job_id, jobstore=queue)
            self._scheduler.remove_job(job_id, jobstore=queue)
        except JobLookupError:
            log.warning('cancel of job %s in queue %s: no such job (it may '
                        'have run already)', job_id, queue)
            job = None
        if job is not None:
            info = JobInfo(job.args[1], queue=queue)
            self.listeners.notify(Event(Event.JOB_CANCELED, job=info,
                                        queue=queue))
            self.listeners.notify(Event(Event.JOB_REMOVED, job=info,
                                        queue=queue))
        message.ack()

    def _on_command(self, body, message):
        try:
            admin.handle_command(self, body)
        finally:
            message.ack()

    def reply(self, body, result=None, error=None, queue=None):
        if not body.get('reply_to'):
            return
        reply = wire.reply(body['request_id'], queue or self.queues[0],
                           os.getpid(), result=result, error=error)
        payload, content_type, encoding, headers = codec.encode(
            self.settings, reply, codec.REPLY_SERIALIZER)
        target = broker.reply_queue(body['reply_to'])
        producer = self._channel.connection.client.Producer(self._channel)
        producer.publish(payload, routing_key=target.name, exchange='',
                         content_type=content_type, content_encoding=encoding,
                         headers=headers, declare=[target])

    # --- running jobs ----------------------------------------------------------

    def _wake_consumer(self):
        # The embedded transport can cut the consumer thread's wait short,
        # so the ack leaves at once; other transports' waits are short.
        connection = getattr(self._channel, 'connection', None)
        interrupt = getattr(connection, 'interrupt', None)
        if interrupt is not None:
            interrupt()

    def submit(self, fn, *args):
        self._pool.submit(fn, *args)

    def submit_stored(self, fn, *args):
        # In flight from now, not from when a worker is free: a stopping
        # runtime waits for the due runs still queued (see stop()).
        self._track(+1)
        try:
            self._stored_pool.submit(self._run_tracked, fn, *args)
        except BaseException:
            self._track(-1)
            raise

    def _run_tracked(self, fn, *args):
        try:
            fn(*args)
        finally:
            self._track(-1)

    def _track(self, delta):
        with self._inflight_lock:
            self._inflight += delta

    @property
    def inflight(self):
        with self._inflight_lock:
            return self._inflight

    def _run_async(self, job, message, func):
        try:
            self.jobs.execute(job, func)
            self.jobs.notify(Event.JOB_REMOVED, job)
        finally:
            self._track(-1)
            self._acks.finished(message)
            self._wake_consumer()

    def run_stored_job(self, aps_job, run_times, last_run, due=None,
                       out_of_store=None):
        try:
            if out_of_store is not None:
                # Wait until APScheduler has taken the run out of the job
                # store (it does so after handing it over), so that a
                # started run is never still in the store.
                out_of_store.wait()
            self._due_run_started(due)
            self._run_due(aps_job, run_times, last_run)
        finally:
            self._deferred_workers.run_done()

    def _run_due(self, aps_job, run_times, last_run):
        queue, spec = aps_job.args
        job = JobInfo(spec, queue=queue)
        now = datetime.datetime.now(datetime.timezone.utc)
        for run_time in run_times:
            late = (now - run_time).total_seconds()
            grace = aps_job.misfire_grace_time
            if grace is not None and late > grace:
                self.jobs.missed(job, run_time, late)
                continue
            self.jobs.execute(job, scheduled_run_time=run_time)
        if last_run:
            self.jobs.notify(Event.JOB_REMOVED, job)

    # --- housekeeping and introspection ----------------------------------------

    def housekeeping(self):
        """Tidy the embedded broker (dead leases, stale replies); call
        ``scheduler.housekeeping.append``."""
        if self.settings.embedded:
            deleted = delete_consumed_messages(self.settings)
            log.info('housekeeping: deleted %d stale reply messages', deleted)
        append = self.settings.housekeeping_append
        if append is not None:
            from ..execution import app_threadlocals
            with app_threadlocals(self.registry):
                append()

    def jobstore(self, queue):
        return self._scheduler._lookup_jobstore(queue)

    def pending_count(self, queue):
        store = self.jobstore(queue)
        if isinstance(store, SQLAlchemyJobStore):
            from sqlalchemy import func, select
            with store.engine.connect() as conn:
                return conn.execute(
                    select(func.count()).select_from(store.jobs_t)).scalar()
        return len(store.get_all_jobs())

    def jobs_page(self, queue, offset=0, limit=50):
        """A page of a queue's deferred jobs, by next run time."""
        store = self.jobstore(queue)
        if isinstance(store, SQLAlchemyJobStore):
            from sqlalchemy import select
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
        return store.get_all_jobs()[offset:offset + limit]


def _is_async_job(body):
    return body['type'] == wire.JOB_CREATED and body['job']['kind'] == 'async'


def _still_stored(store, run):
    """Whether a due run is still pending in its SQLAlchemy job store."""
    from sqlalchemy import select
    table = store.jobs_t
    with store.engine.connect() as connection:
        next_run = connection.execute(
            select(table.c.next_run_time).where(
                table.c.id == run['job_id'])).scalar()
    return next_run is not None and \
        next_run <= run['run_times'][-1].timestamp() + 0.001


def _sqlite_pragmas(dbapi_connection, connection_record):
    # WAL: the job store's writes (every due run) need not wait for readers,
    # nor readers for them. synchronous=NORMAL is safe in WAL against a
    # crashed process (not a power cut) and saves an fsync per commit, which
    # is most of a deferred job's lateness on SQLite. Checkpoints happen in
    # a thread of their own, not in the commit of a due run (walcheckpoint).
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute('PRAGMA journal_mode=WAL')
        cursor.execute('PRAGMA synchronous=NORMAL')
        cursor.execute(DISABLE_AUTOCHECKPOINT)
    finally:
        cursor.close()


def _is_transient(exc):
    """An error of the job store's connection, that time may cure."""
    from sqlalchemy.exc import DBAPIError, OperationalError
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (ConnectionError, TimeoutError))


def delete_consumed_messages(settings):
    """Embedded broker housekeeping; the number of message rows deleted.

    Acknowledged messages are deleted at once (sqlite_transport), so this
    makes the leases of dead consumers visible again and drops reply queues
    (with their unread replies) older than a day.
    """
    from ..sqlite_transport import housekeeping
    return housekeeping(settings.database_path,
                        visibility_timeout=getattr(settings,
                                                   'visibility_timeout', 3600),
                        busy_timeout=broker.SQLITE_BUSY_TIMEOUT)


def _local_timezone():
    from tzlocal import get_localzone
    return get_localzone()
