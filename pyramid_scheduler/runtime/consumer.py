"""The consumer thread: kombu's ConsumerMixin, the channel, and its hooks.

:class:`QueueConsumer` owns the broker connection and its channel (kombu
connections are not thread-safe): it consumes the runtime's kombu queues,
restores what dead consumers left at each (re)connect, hands every message
to the dispatcher one at a time, lets the ack policy settle finished jobs
at each turn, and ends once a stop is requested and the jobs are done.
The loop goes one turn (hooks, one drain) at a time, under a lock, so that
a worker can turn it while the consumer thread runs a lone job
(inline.py): one thread at a time uses the connection.
"""
import collections
import contextlib
import logging
import socket
import threading
import time

import kombu
from kombu.mixins import ConsumerMixin

from .. import naming, refusals, values

log = logging.getLogger(__name__)

class StopReconnecting(Exception):
    """Raised out of kombu's reconnect loop when the runtime stops."""


def kombu_queues(settings, queues, owns_stores):
    """The kombu queues a runtime consumes: the job queues, and for the
    job store owner each queue's admin and store queue first."""
    if not owns_stores:
        return [naming.job_queue(settings, q) for q in queues]
    consumed = []
    for queue in queues:
        consumed.append(naming.admin_queue(settings, queue))
        consumed.append(naming.store_queue(settings, queue))
        consumed.append(naming.job_queue(settings, queue))
    return consumed


class QueueConsumer(ConsumerMixin):
    """kombu's consumer loop with our hooks; runs in the consumer thread."""

    # How long a drain waits before the loop turns: to send the workers'
    # acknowledgements, beat and see a stop request. Short, unless the
    # transport can be interrupted (the embedded one: it is woken
    # for acks and stop), where an idle loop turning 20 times a second was
    # most of an idle child's CPU; it still beats several times per
    # heartbeat timeout.
    safety_interval = 0.05
    interruptible_safety_interval = 1.0

    def __init__(self, connection, settings, queues, *, owns_stores,
                 dispatcher, acks, outbox, state, jobs_done, presence,
                 inline, figures=None, reconnected=None):
        """``queues``: the runtime's queue names; ``acks``: the
        acks.AckPolicy; ``state``: the state.RunState; ``jobs_done()``:
        whether every job in flight has ended (to stop); ``presence``: the
        presence.Presence that restores what dead consumers left;
        ``figures``: the figures.StoreFigures to count at each turn, or
        None; ``reconnected()``: called when a lost connection is back;
        ``inline``: the inline.InlineJobs the dispatcher submits to."""
        self.figures = figures
        self.reconnected = reconnected or (lambda: None)
        self.presence = presence
        self.connection = connection
        self.settings = settings
        self.queues = queues
        self.owns_stores = owns_stores
        self.dispatcher = dispatcher
        self.acks = acks
        self.outbox = outbox
        self.state = state
        self.jobs_done = jobs_done
        self._consumers = []
        self._down_since = None
        self.channel = None   # the channel of the current connection
        # Messages delivered while one is being handled (consumer thread).
        self._waiting_messages = collections.deque()
        self._handling_message = False
        self.inline = inline
        # The loop, turned by one thread at a time (see turn).
        self._turn_lock = threading.Lock()
        self._turns = None
        self._ended = False
        self._errors = connection.connection_errors + connection.channel_errors

    def kombu_queues(self):
        return kombu_queues(self.settings, self.queues, self.owns_stores)

    def get_consumers(self, Consumer, channel):
        options = dict(on_message=self.on_message,
                       on_decode_error=self.on_decode_error,
                       prefetch_count=self.acks.prefetch_count, accept=None)
        queues = self.kombu_queues()
        if getattr(channel, 'one_queue_per_channel', False):
            # Our Redis channels fetch without a window for loss only from
            # one queue each (redis_transport).
            self._consumers = [Consumer(queues=queues[:1], **options)] + [
                kombu.Consumer(channel.connection.client.channel(),
                               queues=[queue], **options)
                for queue in queues[1:]]
        else:
            self._consumers = [Consumer(queues=queues, **options)]
        return self._consumers

    def on_consume_ready(self, connection, channel, consumers, **kwargs):
        if self._down_since is not None:
            log.warning('broker connection restored after %.1fs',
                        time.monotonic() - self._down_since)
            self._down_since = None
            self.reconnected()
        self.channel = channel
        self.presence.connected(channel)
        self.acks.connected(channel)
        self.outbox.use(channel)
        self.state.ready.set()

    def on_message(self, message):
        """kombu's callback, for every message (consumer thread)."""
        self.acks.delivered(message)
        self._one_at_a_time(self.dispatcher.handle, message)

    def on_decode_error(self, message, exc):
        """kombu could not even make a message of it (say, a bad
        ``compression`` header)."""
        self._one_at_a_time(self.dispatcher.handle_decode_error, message, exc)

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
                self.acks.dropped(waiting_args[0])
            self._waiting_messages.clear()
            raise
        finally:
            self._handling_message = False

    def on_connection_error(self, exc, interval):
        self.state.beat()
        self._refused_at_boot(exc)
        if self.state.stopping:
            # kombu retries forever; a stopping runtime must not wait for
            # its broker to come back.
            self.should_stop = True
            raise StopReconnecting() from exc
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error('broker %s unreachable (%s); retrying with backoff, '
                      'next try in %ss', values.redact_url(
                          self.settings.broker_url), exc, interval)

    def _refused_at_boot(self, exc):
        """Record why the broker could not be reached; stop if it refused
        a runtime that never consumed (wrong password, no such database):
        that is a configuration error, which no retry fixes. Once ready,
        every error is retried: a broker may be reconfigured and back."""
        if self.state.ready.is_set():
            return
        self.state.connection_problem = refusals.one_line(exc)
        refusal = refusals.broker_refusal(exc)
        if refusal is not None:
            log.error('broker %s refused this configuration (%s): not '
                      'retrying', values.redact_url(self.settings.broker_url),
                      refusal)
            self.state.refusal = refusal
            self.should_stop = True
            raise StopReconnecting() from exc

    def on_iteration(self):
        self.state.beat()
        self.acks.turn()
        self.presence.turn()
        if not self.state.stopping:
            if self.figures is not None:
                self.figures.turn()
            return
        if self._consumers:
            self.cancel_consumers()
        if self.jobs_done():
            self.acks.settle()
            self.should_stop = True

    def wake(self):
        """Cut the consumer thread's wait short (any thread)."""
        self.acks.wake()

    @contextlib.contextmanager
    def establish_connection(self):
        # kombu's default backoff grows to 30 s between tries; a queue
        # should resume within seconds of its broker coming back.
        with self.create_connection() as connection:
            connection.ensure_connection(
                self.on_connection_error, self.connect_max_retries,
                interval_start=0.2, interval_step=0.5, interval_max=5)
            yield connection

    def cancel_consumers(self):
        for consumer in self._consumers:
            try:
                consumer.cancel()
            except Exception:
                log.debug('cancelling the consumer failed', exc_info=True)
        self._consumers = []

    def drain_timeout(self):
        if not hasattr(self.connection.get_transport_cls(), 'interrupt'):
            return self.safety_interval
        return min(self.interruptible_safety_interval,
                   self.settings.child_heartbeat_timeout / 4)

    def run(self, _tokens=1, **kwargs):
        """Turn the loop until it ends; a lone job kept runs after its turn."""
        while self.turn():
            self.inline.after_turn(self.turn)

    def turn(self):
        """One turn of the loop (hooks, one drain) in the thread holding it:
        the consumer thread, or a worker standing in while it runs a job
        (inline.py). False once the loop has ended."""
        with self._turn_lock:
            if self._turns is None and self.should_stop:
                self._ended = True   # not reconnecting to stop
            if self._ended:
                return False
            self.inline.turning()
            try:
                if self._turns is None:
                    self._turns = self._drains()
                next(self._turns)
            except StopIteration:
                self._turns = None
                self._ended = self.should_stop
            except StopReconnecting:
                self._ended = True
            except self._errors as exc:
                self._turns = None
                self._ended = self._lost_connection(exc)
            except Exception:
                # Never let the loop die: a bug in one message's handling
                # must not stop the queue.
                self._turns = None
                log.exception('the consumer loop failed; restarting it')
                time.sleep(1)
            return not self._ended

    def _drains(self):
        """kombu's ``ConsumerMixin.consume``, yielding after every drain
        (a timeout too): a stand-in hands the loop back at a turn's end."""
        timeout = self.drain_timeout()
        with self.consumer_context() as (connection, _, _):
            while not self.should_stop:
                self.on_iteration()
                try:
                    connection.drain_events(timeout=timeout)
                except socket.timeout:
                    connection.heartbeat_check()
                except OSError:
                    if not self.should_stop:
                        raise
                yield

    def _lost_connection(self, exc):
        """A broken connection: log it once and wait before the reconnect;
        True if the broker refused this configuration (the loop ends)."""
        self.state.beat()
        try:
            self._refused_at_boot(exc)
        except StopReconnecting:
            return True
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error('lost the broker connection (%s); reconnecting', exc)
        time.sleep(0.5)
        return False
