"""The runtime's end of the admin commands (see the package docstring).

:class:`AdminCommands` is given what the commands may read and do of a
runtime, and nothing else: its settings and queues, listeners, counters,
the job stores (through runtime.introspection), the dead-letter log and
the failed-job registry of its queues (failedjobs). It
answers through the outbox the dispatcher gives it with each command
(runtime.outbox). It runs in the consumer thread.
"""
import io
import logging
import os
import time

import psutil

from .. import naming
from ..events import Event
from ..failedjobs import summary
from ..triggerwords import describe

log = logging.getLogger(__name__)

COMMANDS = ('print-jobs', 'ping', 'status', 'jobs', 'dead-letters',
            'purge-dead-letters', 'failed', 'requeue', 'purge-failed', 'job',
            'requeue-dead-letters')
PAGE_SIZE = 50
# Dead letters ``requeue-dead-letters`` puts back without a limit.
DEAD_LETTER_BATCH = 1000
# The most of a job's args and kwargs reprs ``job`` answers with.
REPR_LIMIT = 500
# Failed jobs listed by ``failed`` without a limit.
FAILED_PAGE = 100
# What ``ping`` says of each process of the daemon (``status``: all).
PING_FIELDS = ('role', 'pid', 'queue', 'slot', 'state')


class AdminCommands:
    """Handles ``command`` messages for a runtime that owns its job stores."""

    def __init__(self, settings, queues, *, listeners, stats, inflight,
                 introspection, dead_letters, failed, health=None,
                 daemon=None, store_owner=None):
        self.settings = settings
        self.queues = queues
        self.listeners = listeners
        self.stats = stats
        self.inflight = inflight
        self.introspection = introspection
        self.dead_letters = dead_letters
        self.failed = failed      # failedjobs.FailedJobs
        # () -> {'threads': {name: state}, 'last_scheduler_pass': time}
        self.health = health
        # () -> the whole daemon (pyramid_scheduler.daemonview), or None
        # when this runtime has no pscheduler master.
        self.daemon = daemon or (lambda: None)
        # queue -> {'host', 'pid'} of its job store's owner, read from the
        # store (runtime.storelock): on several hosts, maybe another's.
        self.store_owner = store_owner or (lambda queue: None)
        self._handlers = {
            'print-jobs': self._print_jobs,
            'ping': self._ping,
            'status': self._status,
            'jobs': self._jobs,
            'job': self._job,
            'dead-letters': self._dead_letters,
            'purge-dead-letters': self._purge_dead_letters,
            'requeue-dead-letters': self._requeue_dead_letters,
            'failed': self._failed,
            'requeue': self._requeue,
            'purge-failed': self._purge_failed,
        }

    def handle(self, body, outbox):
        """Run the command ``body``; answer through ``outbox``."""
        name = body['command']
        log.debug('received message event: %s', name)
        self.listeners.notify(Event(Event.MESSAGE, message=name,
                                    args=body.get('args') or {}))
        if body['expires_at'] < time.time():
            log.info('ignoring expired admin command %r', name)
            return
        queue = self._target_queue(body)
        handler = self._handlers.get(name)
        if handler is None:
            outbox.reply(body, queue, error=f'unknown command {name!r}; '
                         f'known commands: {", ".join(COMMANDS)}')
            return
        try:
            result = handler(queue, body.get('args') or {}, outbox)
        except Exception as exc:
            log.exception('admin command %r failed', name)
            outbox.reply(body, queue, error=f'{type(exc).__name__}: {exc}')
            return
        outbox.reply(body, queue, result=result)

    def _target_queue(self, body):
        queue = body.get('queue')
        return queue if queue in self.queues else self.queues[0]

    def _print_jobs(self, queue, args, outbox):
        limit = int(args.get('limit', 1000))
        out = io.StringIO()
        store_jobs = self.introspection.jobs_page(queue, 0, limit + 1)
        out.write(f'Jobstore {queue}:\n')
        if not store_jobs:
            out.write('    No scheduled jobs\n')
        for job in store_jobs[:limit]:
            out.write(f'    {job}\n')
        if len(store_jobs) > limit:
            out.write('    ... more jobs: use "pscheduler --message jobs" '
                      'to page through them\n')
        log.info('%s', out.getvalue().rstrip('\n'))
        return {'printed': min(len(store_jobs), limit)}

    def _ping(self, queue, args, outbox):
        daemon = self.daemon()
        if daemon is None:
            return {'queue': queue, 'pid': os.getpid()}
        return {'queue': queue, 'pid': os.getpid(), 'daemon': {
            key: daemon[key] for key in ('host', 'master_pid', 'started')}
            | {'processes': [{key: process.get(key) for key in PING_FIELDS}
                             for process in daemon['processes']]}}

    def _status(self, queue, args, outbox):
        process = psutil.Process()
        counts = self.stats.snapshot()
        return {
            'queue': queue,
            'pid': os.getpid(),
            'uptime': round(time.time() - self.stats.started, 1),
            'rss': process.memory_info().rss,
            'executed': counts['executed'],
            'failed': counts['failed'],
            'retried': counts['retried'],
            'missed': counts['missed'],
            'dead_lettered': counts['dead_lettered'],
            'running': self.inflight.count,
            'pending': self.introspection.pending_count(queue),
            **(self.health() if self.health is not None else {}),
            'daemon': self.daemon(),
            'store_owner': self._owner(queue),
        }

    def _owner(self, queue):
        try:
            return self.store_owner(queue)
        except Exception as exc:   # the store's answer, not the status's
            log.warning('queue %s: cannot read who owns its job store: %s',
                        queue, exc)
            return None

    def figures(self, queue, outbox):
        """The counts the metrics show of ``queue`` (runtime.figures)."""
        return {
            'scheduled_jobs': self.introspection.pending_count(queue),
            'queue_depth': _queue_size(outbox.bind(
                naming.job_queue(self.settings, queue))),
            'dead_letters': _queue_size(outbox.bind(
                naming.dead_letter_queue(self.settings, queue))),
            'failed_jobs': self.failed.count(queue),
        }

    def _jobs(self, queue, args, outbox):
        offset = max(int(args.get('offset', 0)), 0)
        limit = min(max(int(args.get('limit', PAGE_SIZE)), 1), 1000)
        search = str(args.get('search') or '')
        answer = {'queue': queue, 'offset': offset}
        if search:
            jobs, total, capped = self.introspection.search(
                queue, search, offset, limit)
            answer.update(search=search, total=total, capped=capped)
        else:
            jobs = self.introspection.jobs_page(queue, offset, limit)
            answer['total'] = self.introspection.pending_count(queue)
        answer['jobs'] = [{
            'id': job.id,
            'name': job.name,
            'trigger': str(job.trigger),
            'trigger_words': describe(job.trigger),
            'next_run_time': (job.next_run_time.isoformat()
                              if job.next_run_time else None),
        } for job in jobs]
        return answer

    def _job(self, queue, args, outbox):
        """One deferred job of this queue's store (``found`` False when it
        has none of that id: every queue's owner is asked)."""
        job_id = str(args.get('id') or '')
        if not job_id:
            raise ValueError('job needs the id of a deferred job: '
                             '"job ID" or "job id=ID"')
        job = self.introspection.lookup(queue, job_id)
        if job is None:
            return {'queue': queue, 'id': job_id, 'found': False}
        spec = job.args[1] if len(job.args) > 1 and isinstance(
            job.args[1], dict) else {}
        return {
            'queue': queue, 'id': job.id, 'found': True, 'name': job.name,
            'kind': spec.get('kind'), 'func': spec.get('func'),
            'args': repr(spec.get('args', ()))[:REPR_LIMIT],
            'kwargs': repr(spec.get('kwargs', {}))[:REPR_LIMIT],
            'trigger': str(job.trigger),
            'trigger_words': describe(job.trigger),
            'next_run_time': (job.next_run_time.isoformat()
                              if job.next_run_time else None),
        }

    def _dead_letters(self, queue, args, outbox):
        target = naming.dead_letter_queue(self.settings, queue)
        bound = outbox.bind(target)
        return {'queue': queue, 'dead_letter_queue': target.name,
                'count': _queue_size(bound),
                'recent': self.dead_letters.recent(queue)}

    def _purge_dead_letters(self, queue, args, outbox):
        bound = outbox.bind(naming.dead_letter_queue(self.settings, queue))
        bound.declare()
        purged = bound.purge()
        self.dead_letters.forget(queue)
        return {'queue': queue, 'purged': purged or 0}

    def _requeue_dead_letters(self, queue, args, outbox):
        """Put up to ``limit`` dead letters back on the queue they came
        from, each as it was (its headers but the two dead-letter ones)."""
        limit = int(args.get('limit', DEAD_LETTER_BATCH))
        bound = outbox.bind(naming.dead_letter_queue(self.settings, queue))
        bound.declare()
        requeued = 0
        while requeued < limit:
            message = bound.get(no_ack=False, accept=None)
            if message is None:
                break
            headers = {key: value for key, value in
                       (message.headers or {}).items()
                       if key != naming.REASON_HEADER}
            origin = headers.pop(naming.FROM_QUEUE_HEADER, None)
            outbox.republish(message, self._origin(queue, origin), headers,
                             compression=self.settings.compressor)
            message.ack()
            requeued += 1
        self.dead_letters.forget(queue)
        return {'queue': queue, 'requeued': requeued,
                'left': _queue_size(bound)}

    def _origin(self, queue, name):
        """The kombu queue a dead letter came from (default: the job
        queue): its job, store or admin queue."""
        for make in (naming.store_queue, naming.admin_queue):
            if make(self.settings, queue).name == name:
                return make(self.settings, queue)
        return naming.job_queue(self.settings, queue)

    # --- the failed-job registry: each queue's owner answers for it ------

    def _failed(self, queue, args, outbox):
        limit = int(args.get('limit', FAILED_PAGE))
        return {'queue': queue, 'count': self.failed.count(queue),
                'jobs': [summary(record) for record in
                         self.failed.list(queue, limit)]}

    def _requeue(self, queue, args, outbox):
        job_id = args.get('id')
        if isinstance(job_id, int) and not isinstance(job_id, bool):
            job_id = str(job_id)
        if not isinstance(job_id, str) or not job_id:
            raise ValueError('requeue needs the id of a failed job: '
                             '"requeue ID" or "requeue id=ID"')

        def publish(job_queue, body):
            outbox.send(body, naming.job_queue(self.settings, job_queue))
        requeued = self.failed.requeue(job_id, publish, only_queue=queue)
        # Every queue's owner is asked; the one of the job's queue acts.
        return {'queue': queue, 'id': job_id,
                'requeued': requeued is not None}

    def _purge_failed(self, queue, args, outbox):
        return {'queue': queue, 'purged': self.failed.purge(queue)}


def _queue_size(bound_queue):
    # A (re)declaration answers with the message count on every transport;
    # a passive one fails on Redis once the queue's list is empty.
    return bound_queue.queue_declare().message_count
