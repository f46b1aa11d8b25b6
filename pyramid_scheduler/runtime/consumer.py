"""The consumer thread's loop: kombu's ConsumerMixin with our hooks."""
import contextlib
import logging
import time

import kombu
from kombu.mixins import ConsumerMixin

from .. import broker

log = logging.getLogger(__name__)


class StopReconnecting(Exception):
    """Raised out of kombu's reconnect loop when the runtime stops."""


class QueueConsumer(ConsumerMixin):
    """kombu's consumer loop with our hooks; runs in the consumer thread."""

    # How long a drain waits before the loop turns: to send the workers'
    # acknowledgements, beat and see a stop request. Short, unless the
    # transport can be interrupted (the embedded one: the runtime wakes it
    # for acks and stop), where an idle loop turning 20 times a second was
    # most of an idle child's CPU; it still beats several times per
    # heartbeat timeout.
    safety_interval = 0.05
    interruptible_safety_interval = 1.0

    def __init__(self, runtime, connection):
        self.runtime = runtime
        self.connection = connection
        self._consumers = []
        self._down_since = None

    def get_consumers(self, Consumer, channel):
        runtime = self.runtime
        options = dict(on_message=runtime.on_message,
                       on_decode_error=runtime.on_decode_error,
                       prefetch_count=runtime.prefetch_count, accept=None)
        queues = runtime.kombu_queues()
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
        self.runtime.on_consume_ready(connection, channel)

    def on_connection_error(self, exc, interval):
        self.runtime.beat()
        if self.runtime.stop_requested:
            # kombu retries forever; a stopping runtime must not wait for
            # its broker to come back.
            self.should_stop = True
            raise StopReconnecting() from exc
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error('broker %s unreachable (%s); retrying with backoff, '
                      'next try in %ss', broker.redact_url(
                          self.runtime.settings.broker_url), exc, interval)

    def on_iteration(self):
        self.runtime.on_iteration(self)

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
                   self.runtime.settings.child_heartbeat_timeout / 4)

    def run(self, _tokens=1, **kwargs):
        errors = (self.connection.connection_errors
                  + self.connection.channel_errors)
        drain_timeout = self.drain_timeout()
        while not self.should_stop:
            try:
                for _ in self.consume(limit=None,
                                      safety_interval=drain_timeout):
                    pass
            except StopReconnecting:
                return
            except errors as exc:
                self.runtime.beat()
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.error('lost the broker connection (%s); reconnecting',
                              exc)
                time.sleep(0.5)
            except Exception:
                # Never let the consumer thread die: a bug in one message's
                # handling must not stop the queue.
                log.exception('the consumer loop failed; restarting it')
                time.sleep(1)
