"""Admin commands: ``pscheduler --message COMMAND app.ini``.

The sender puts one ``command`` message on the admin queue of every queue
(each served by one pscheduler child, or by the combined-mode web process)
and, for commands that answer, waits on a private reply queue. The receiving
runtime handles it in :func:`handle_command`.

Commands: ``print-jobs`` (logs each job store, as 0.3.x did), ``ping``,
``status``, ``jobs`` (a page of deferred jobs: args ``offset``, ``limit``),
``dead-letters`` and ``purge-dead-letters``. Any other text is delivered to
the runtime's listeners as a ``MESSAGE`` event and answered with an error.
"""
import io
import logging
import os
import time
import uuid

import psutil

from . import broker, codec, wire
from .errors import AdminTimeout, InvalidMessage
from .events import Event

log = logging.getLogger(__name__)

COMMANDS = ('print-jobs', 'ping', 'status', 'jobs', 'dead-letters',
            'purge-dead-letters')
PAGE_SIZE = 50


# --- the runtime's side ------------------------------------------------------

def handle_command(runtime, body):
    name = body['command']
    log.debug('received message event: %s', name)
    runtime.listeners.notify(Event(Event.MESSAGE, message=name,
                                   args=body.get('args') or {}))
    if body['expires_at'] < time.time():
        log.info('ignoring expired admin command %r', name)
        return
    queue = _target_queue(runtime, body)
    handler = _HANDLERS.get(name)
    if handler is None:
        runtime.reply(body, error=f'unknown command {name!r}; known commands: '
                      f'{", ".join(COMMANDS)}', queue=queue)
        return
    try:
        result = handler(runtime, queue, body.get('args') or {})
    except Exception as exc:
        log.exception('admin command %r failed', name)
        runtime.reply(body, error=f'{type(exc).__name__}: {exc}', queue=queue)
        return
    runtime.reply(body, result=result, queue=queue)


def _target_queue(runtime, body):
    queue = body.get('queue')
    return queue if queue in runtime.queues else runtime.queues[0]


def _print_jobs(runtime, queue, args):
    limit = int(args.get('limit', 1000))
    out = io.StringIO()
    store_jobs = runtime.jobs_page(queue, 0, limit + 1)
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


def _ping(runtime, queue, args):
    return {'queue': queue, 'pid': os.getpid()}


def _status(runtime, queue, args):
    process = psutil.Process()
    counts = runtime.stats.snapshot()
    return {
        'queue': queue,
        'pid': os.getpid(),
        'uptime': round(time.time() - runtime.stats.started, 1),
        'rss': process.memory_info().rss,
        'executed': counts['executed'],
        'failed': counts['failed'],
        'missed': counts['missed'],
        'dead_lettered': counts['dead_lettered'],
        'running': runtime.inflight,
        'pending': runtime.pending_count(queue),
    }


def _jobs(runtime, queue, args):
    offset = max(int(args.get('offset', 0)), 0)
    limit = min(max(int(args.get('limit', PAGE_SIZE)), 1), 1000)
    jobs = runtime.jobs_page(queue, offset, limit)
    return {
        'queue': queue,
        'offset': offset,
        'total': runtime.pending_count(queue),
        'jobs': [{
            'id': job.id,
            'name': job.name,
            'trigger': str(job.trigger),
            'next_run_time': (job.next_run_time.isoformat()
                              if job.next_run_time else None),
        } for job in jobs],
    }


def _dead_letters(runtime, queue, args):
    target = broker.dead_letter_queue(runtime.settings, queue)
    bound = target(runtime._channel)
    return {'queue': queue, 'dead_letter_queue': target.name,
            'count': _queue_size(bound),
            'recent': [d for d in runtime.dead_letters
                       if d['queue'].endswith(queue)]}


def _purge_dead_letters(runtime, queue, args):
    target = broker.dead_letter_queue(runtime.settings, queue)
    bound = target(runtime._channel)
    bound.declare()
    purged = bound.purge()
    runtime.dead_letters = [d for d in runtime.dead_letters
                            if not d['queue'].endswith(queue)]
    return {'queue': queue, 'purged': purged or 0}


def _queue_size(bound_queue):
    # A (re)declaration answers with the message count on every transport;
    # a passive one fails on Redis once the queue's list is empty.
    return bound_queue.queue_declare().message_count


_HANDLERS = {
    'print-jobs': _print_jobs,
    'ping': _ping,
    'status': _status,
    'jobs': _jobs,
    'dead-letters': _dead_letters,
    'purge-dead-letters': _purge_dead_letters,
}


# --- the sender's side ---------------------------------------------------------

def send_command(settings, name, queues=None, args=None, timeout=None,
                 wait=True):
    """Send ``name`` to each queue's runtime; return their replies.

    With ``wait`` the call collects one reply per queue until ``timeout``
    and returns ``(replies, missing_queues)``; without, it returns at once.
    """
    from .producer import Producer
    queues = tuple(queues or settings.queues)
    for queue in queues:
        settings.check_queue(queue)
    timeout = settings.admin_timeout if timeout is None else timeout
    request_id = uuid.uuid4().hex
    reply_name = f'{settings.scheduler_id}.reply.{request_id}'
    reply_queue = broker.reply_queue(reply_name)
    producer = Producer(settings, pool_limit=1)
    connection = broker.connect(settings)
    try:
        if wait:
            reply_queue(connection.default_channel).declare()
        for queue in queues:
            body = wire.command(name, request_id,
                                reply_to=reply_name if wait else None,
                                args=args, ttl=max(timeout, 1) * 2)
            body['queue'] = queue
            target = broker.admin_queue(settings, queue)
            producer.publish(body, target.name, declare=[target])
        if not wait:
            return [], ()
        replies = _collect(settings, connection, reply_queue, request_id,
                           len(queues), timeout)
        answered = {r['queue'] for r in replies}
        return replies, tuple(q for q in queues if q not in answered)
    finally:
        try:
            if wait:
                reply_queue(connection.default_channel).delete()
        except Exception:
            pass
        connection.release()
        producer.close()


def _collect(settings, connection, reply_queue, request_id, expected, timeout):
    replies = []
    deadline = time.monotonic() + timeout

    def on_message(message):
        try:
            body = codec.decode_reply(settings, message)
        except InvalidMessage as exc:
            log.warning('ignoring a bad reply: %s', exc)
        else:
            if body['request_id'] == request_id:
                replies.append(body)
        message.ack()

    with connection.Consumer([reply_queue], on_message=on_message,
                             accept=None):
        while len(replies) < expected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                connection.drain_events(timeout=min(remaining, 0.2))
            except TimeoutError:
                continue
            except OSError:
                continue
    return replies


def require_all(replies, missing, name):
    if missing:
        raise AdminTimeout(
            f'no answer to {name!r} from the queue(s) {", ".join(missing)}: '
            'is pscheduler running for them (or combined mode serving)?')
    return replies
