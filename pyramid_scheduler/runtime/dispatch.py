"""What is done with a message: decode, route, handle, retry, dead-letter.

:class:`Dispatcher` is called in the consumer thread for each message. It
decodes it (codec), picks its handler in the route table by envelope type,
applies the store-owner rule (a runtime that does not own the job store
handles async jobs only, and passes the rest on to the store queue), and
runs the handler: an async job goes to the worker pool, a deferred job into
its job store (deferred.DeferredJobs), a cancel out of it, a command to
the admin commands. A message that cannot succeed goes to the dead-letter
queue; one whose handling failed for a reason time may cure is handed back.
Everything it sends goes through the injected :class:`~.outbox.Outbox`.
"""
import logging
import time

from sqlalchemy.exc import DBAPIError, OperationalError

from .. import codec, naming, wire
from ..errors import InvalidJob, InvalidMessage
from .crashes import NoJournal
from .jobmessages import JobMessages

log = logging.getLogger(__name__)

# Failures in a row after which a message that does not fail for a
# transient reason goes to the dead-letter queue.
MAX_HANDLING_FAILURES = 3
# Dead letters remembered for the ``dead-letters`` admin command.
RECENT_DEAD_LETTERS = 100


class DeadLetterLog:
    """The last dead letters of this runtime, for the admin commands."""

    def __init__(self, size=RECENT_DEAD_LETTERS):
        self._size = size
        self._entries = []

    def add(self, queue, reason):
        # Rebuilt, not appended to: a reader in another thread gets a list
        # nobody changes.
        self._entries = (self._entries + [
            {'at': time.time(), 'queue': queue, 'reason': reason}
        ])[-self._size:]

    def recent(self, queue=None):
        """The dead letters kept, oldest first; of one queue if given (its
        routing key ends with the queue's name)."""
        return [entry for entry in self._entries
                if queue is None or entry['queue'].endswith(queue)]

    def forget(self, queue):
        """The queue's dead-letter queue was purged."""
        self._entries = [entry for entry in self._entries
                         if not entry['queue'].endswith(queue)]


class Dispatcher:
    """Handles each message the consumer receives; see the module docstring.

    ``commands`` handles admin commands (``commands.handle(body)``),
    ``pool`` runs async jobs (workers.WorkerPool), ``deferred`` is None in a
    runtime that does not own the job stores.
    """

    def __init__(self, settings, queues, *, state, acks, pool, inflight,
                 runner, deferred, outbox, dead_letters, commands,
                 received=None, crashes=None):
        self._parts = dict(state=state, acks=acks, pool=pool,
                           inflight=inflight, runner=runner,
                           deferred=deferred, dead_letters=dead_letters,
                           commands=commands, received=received,
                           crashes=crashes)
        # The crash journal (crashes.py): the delivery limit.
        self.crashes = crashes if crashes is not None else NoJournal()
        self.settings = settings
        self.queues = queues
        self.state = state
        self.acks = acks
        self.pool = pool
        self.inflight = inflight
        self.runner = runner
        self.stats = runner.stats
        self.records = runner.records
        self.deferred = deferred
        self.outbox = outbox
        self.dead_letters = dead_letters
        self.commands = commands
        # Drops second copies of an outbox entry (received.ReceivedCopies).
        self.received = received
        self._failures = {}   # message body -> handling failures in a row
        # Jobs and cancels (jobmessages.py); commands (the admin's).
        self.job_messages = JobMessages(
            settings, queues, runner=runner, inflight=inflight, acks=acks,
            pool=pool, deferred=deferred, crashes=self.crashes)
        self._routes = {
            wire.JOB_CREATED: self.job_messages.on_job_created,
            wire.JOB_CANCELED: self.job_messages.on_job_canceled,
            wire.COMMAND: self._on_command,
        }

    def with_outbox(self, outbox):
        """A dispatcher of the same runtime that sends (dead letters,
        messages passed on, replies) through ``outbox``: to drive the
        handling of messages with no broker (say, a fake channel)."""
        return Dispatcher(self.settings, self.queues, outbox=outbox,
                          **self._parts)

    @property
    def owns_stores(self):
        return self.deferred is not None

    def handle(self, message):
        """Handle one message (consumer thread); never raises for a bad one."""
        if self.state.stopping:
            # Stopping: the pool and APScheduler may be shut down already (an
            # add_job now would only be kept in memory, and lost). Hand the
            # message back for whoever serves the queue next.
            message.reject(requeue=True)
            return
        self.stats.add('received')
        try:
            body = codec.decode(self.settings, message)
        except InvalidMessage as exc:
            self.dead_letter(message, str(exc))
            return
        except Exception as exc:
            # decode() means to raise only InvalidMessage; whatever else a
            # hostile message provokes must not stop the consumer either.
            self.dead_letter(message, f'message does not decode '
                             f'({type(exc).__name__}: {exc})')
            return
        handler = self._route(body)
        if handler is None:
            self.dead_letter(message, f'unexpected {body["type"]} message')
            return
        try:
            if self.received is not None and \
                    self.received.is_duplicate(message):
                message.ack()
                return
            handler(body, message)
        except InvalidJob as exc:
            self.dead_letter(message, str(exc), body)
        except Exception as exc:
            self._on_handling_error(message, body, exc)
        else:
            self._failures.pop(message.body, None)

    def handle_decode_error(self, message, exc):
        """kombu could not even make a message of it (say, a bad
        ``compression`` header): dead-letter it like any undecodable one."""
        self.stats.add('received')
        if not hasattr(message, 'ack'):
            log.error('dropped a message kombu could not read: %s: %s',
                      type(exc).__name__, exc)
            return
        self.dead_letter(message, f'message does not decode '
                         f'({type(exc).__name__}: {exc})')

    def _route(self, body):
        handler = self._routes.get(body['type'])
        if handler is not None and not self.owns_stores \
                and not _is_async_job(body):
            # Deferred jobs, cancels and commands are the job store
            # owner's, which checks them as it checks any other.
            return self._pass_to_store_owner
        return handler

    # --- failures ----------------------------------------------------------

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

    def dead_letter(self, message, reason, body=None):
        """Log the reason and move the raw message to the dead-letter queue."""
        queue = (message.delivery_info or {}).get('routing_key', '?')
        log.error('rejected a message from %s: %s; moved to the dead-letter '
                  'queue', queue, reason)
        self.stats.add('dead_lettered')
        self.dead_letters.add(queue, reason)
        target = self._dead_letter_queue_for(queue)
        # Its own headers kept (its signature, its outbox entry): a dead
        # letter requeued (``requeue-dead-letters``) is the message it was.
        headers = dict(message.headers or {})
        headers.update({naming.REASON_HEADER: reason[:1000],
                        naming.FROM_QUEUE_HEADER: queue})
        try:
            self.outbox.republish(message, target, headers=headers)
        except Exception:
            log.exception('could not move a rejected message to %s',
                          target.name)
        message.ack()

    def _dead_letter_queue_for(self, routing_key):
        settings = self.settings
        for queue in self.queues:
            if routing_key in (naming.queue_name(settings, queue),
                               naming.admin_queue_name(settings, queue),
                               naming.store_queue_name(settings, queue)):
                return naming.dead_letter_queue(settings, queue)
        return naming.dead_letter_queue(settings, self.queues[0])

    # --- handlers ----------------------------------------------------------

    def _pass_to_store_owner(self, body, message):
        """A deferred job, cancel or command reached a runtime that does not
        own the job store (sent before the queue had several processes, or
        by hand): send it on to the store queue, whose owner handles it
        (an unknown queue's, to the first queue's owner, who refuses it)."""
        queue = body.get('queue')
        target = naming.store_queue(
            self.settings, queue if queue in self.queues else self.queues[0])
        # The body as received, signature header included; the publish
        # compresses it again as configured.
        self.outbox.republish(message, target, message.headers or {},
                              compression=self.settings.compressor)
        log.debug('passed a %s message on to %s', body['type'], target.name)
        message.ack()

    def _on_command(self, body, message):
        check_reply_to(self.settings, body)
        try:
            self.commands.handle(body, self.outbox)
        finally:
            message.ack()


def check_reply_to(settings, body):
    """A command answers only to a reply queue of this scheduler
    (``<id>.reply.<request id>``, naming.py), never to another queue, a job
    queue say, which the reply would feed junk."""
    reply_to = body.get('reply_to')
    prefix = naming.reply_queue_name(settings, '')
    if reply_to and not (isinstance(reply_to, str)
                         and reply_to.startswith(prefix)
                         and len(reply_to) > len(prefix)):
        raise InvalidJob(f'command {body.get("command")!r:.80} wants its '
                         f'reply sent to {reply_to!r:.200}, not a reply '
                         f'queue ({prefix}<request id>)')


def _is_async_job(body):
    return body['type'] == wire.JOB_CREATED and body['job']['kind'] == 'async'


def _is_transient(exc):
    """An error of the job store's connection, that time may cure."""
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (ConnectionError, TimeoutError))

