"""Acknowledging finished async jobs, from the consumer thread, in batches.

A kombu channel belongs to the consumer thread, so the workers hand the
messages of the jobs they finish to :class:`Acknowledgements`, and the
consumer thread settles them at each of its turns:

- a channel with ``basic_ack_many`` (our Redis and SQLite transports) gets
  one call for all of them: one round trip, or one transaction;
- an AMQP channel can acknowledge "every delivery up to tag T" in one frame
  (``multiple=True``), but only over a prefix of deliveries that are all
  settled: a job still running (a long one, delivered before the quick ones
  that finished) must stay unacknowledged, or a crash would lose it. So
  every AMQP delivery is recorded in order; a turn sends one multiple ack
  for the settled prefix and single acks for what finished behind a job
  still running;
- any other channel gets one ack per message.

*When* the consumer thread settles (in batches while messages stream in,
at once when idle or when the prefetch window fills) is :class:`AckPolicy`.
"""
import collections
import logging
import queue
import time

from kombu.transport import pyamqp

log = logging.getLogger(__name__)

# Held deliveries are pruned of the settled ones only past this many (and
# twice what was left unsettled), so that pruning stays cheap per message.
MIN_PRUNE_ABOVE = 1000
PREFETCH_PER_WORKER = 25
# While messages stream in, finished jobs are acknowledged in batches of
# this many, or after this long (see AckPolicy.turn).
ACK_BATCH = 16
ACK_DELAY = 0.005
# The longest a consumer thread whose prefetch window is full waits for a
# job to end before it turns again (beat, stop, other queues' messages).
WINDOW_FULL_WAIT = 0.05


class AckPolicy:
    """When the consumer thread acknowledges what the workers finished.

    The consumer thread tells it of each delivery (:meth:`delivered`) and
    of each turn of its loop (:meth:`turn`); the workers, of each job that
    ended (:meth:`finished`). It also keeps the consumer's current channel,
    to cut the consumer thread's wait short when there is something to do.
    """

    def __init__(self, worker_count):
        self.acks = Acknowledgements()
        # Acknowledgements leave with the consumer thread's next turn, so
        # the broker must let it hold more messages than it has workers, or
        # the workers would wait on acks between jobs.
        self.prefetch_count = worker_count * PREFETCH_PER_WORKER
        self._channel = None
        self._settled_at = 0.0
        self._delivered_since_settle = 0

    def connected(self, channel):
        """The consumer (re)connected on ``channel`` (consumer thread)."""
        self._channel = channel
        self.acks.forget_deliveries()

    def delivered(self, message):
        """A message arrived (consumer thread, before it is handled)."""
        self._delivered_since_settle += 1
        self.acks.delivered(message)

    def expect(self, message):
        """A worker will finish ``message`` (consumer thread)."""
        self.acks.expect(message)

    def dropped(self, message):
        """``message`` will not be settled here (see Acknowledgements)."""
        self.acks.dropped(message)

    def held_tags(self):
        """Delivery tags of the messages held unsettled here."""
        return self.acks.held_tags()

    def finished(self, message):
        """A worker is done with ``message`` (any thread): its ack leaves
        with the consumer thread's next turn, which comes at once."""
        self.acks.finished(message)
        self.wake()

    def wake(self):
        """Cut the consumer thread's wait short (any thread).

        The embedded transport can, so an ack leaves at once; other
        transports' waits are short (see consumer.QueueConsumer).
        """
        connection = getattr(self._channel, 'connection', None)
        interrupt = getattr(connection, 'interrupt', None)
        if interrupt is not None:
            interrupt()

    def turn(self):
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
        acks = self.acks
        held = acks.unsettled()
        if held >= self.prefetch_count and not acks.pending():
            # The window is full: nothing comes before a job ends, and a
            # drain would sleep through that end (only the embedded
            # transport can be woken), for as long as its timeout.
            acks.wait_finished(WINDOW_FULL_WAIT)
        pending = acks.pending()
        now = time.monotonic()
        if (self._delivered_since_settle and pending < ACK_BATCH
                and now - self._settled_at < ACK_DELAY
                and 2 * held < self.prefetch_count):
            return
        self.settle()

    def settle(self):
        """Acknowledge every finished job now (consumer thread)."""
        self._delivered_since_settle = 0
        self._settled_at = time.monotonic()
        self.acks.settle()


class Acknowledgements:
    """Finished messages waiting for the consumer thread to settle them."""

    def __init__(self):
        self._finished = queue.SimpleQueue()
        # AMQP channel -> its deliveries not yet known settled, in order.
        self._deliveries = {}
        # id(message) -> message, for every delivery not known settled;
        # pruned of the settled ones when it grows past _prune_above.
        self._held = {}
        self._prune_above = MIN_PRUNE_ABOVE
        # Messages given to workers, and of those, settled (both counted by
        # the consumer thread alone, so without a lock).
        self._expected = 0
        self._settled = 0

    def delivered(self, message):
        """Record a delivery (consumer thread, before handling it)."""
        self._held[id(message)] = message
        if len(self._held) > self._prune_above:
            self._prune_held()
        if isinstance(message, pyamqp.Message):
            self._deliveries.setdefault(
                message.channel, collections.deque()).append(message)

    def held_tags(self):
        """Delivery tags of the messages this process holds unsettled: their
        jobs wait or run here (consumer thread)."""
        self._prune_held()
        return {message.delivery_tag for message in self._held.values()}

    def dropped(self, message):
        """``message`` will not be settled here: the connection it came on
        is gone, and the broker gives it back."""
        self._held.pop(id(message), None)

    def _prune_held(self):
        self._held = {key: message for key, message in self._held.items()
                      if not message.acknowledged}
        self._prune_above = max(MIN_PRUNE_ABOVE, 2 * len(self._held))

    def expect(self, message):
        """A worker will finish ``message`` (consumer thread)."""
        self._expected += 1

    def unsettled(self):
        """Messages given to workers and not settled yet: queued, running,
        or finished and waiting for :meth:`settle`."""
        return self._expected - self._settled

    def pending(self):
        """Messages finished and waiting for :meth:`settle`."""
        return self._finished.qsize()

    def wait_finished(self, timeout):
        """Wait up to ``timeout`` seconds for a worker to finish a message;
        True if one has (consumer thread)."""
        try:
            message = self._finished.get(timeout=timeout)
        except queue.Empty:
            return False
        self._finished.put(message)   # settled with the others
        return True

    def finished(self, message):
        """A worker is done with ``message``: acknowledge it (any thread)."""
        self._finished.put(message)

    def forget_deliveries(self):
        """After a reconnect: the broker gave the old channel's unsettled
        deliveries to the queue again; they will never be settled here."""
        self._deliveries.clear()

    def settle(self):
        """Acknowledge what the workers finished (consumer thread)."""
        by_channel = {}
        while True:
            try:
                message = self._finished.get_nowait()
            except queue.Empty:
                break
            by_channel.setdefault(message.channel, []).append(message)
            self._settled += 1
        for channel, messages in by_channel.items():
            if len(messages) > 1 and hasattr(channel, 'basic_ack_many'):
                self._ack_many(channel, messages)
            elif channel in self._deliveries:
                self._ack_settled_prefix(channel, messages)
            else:
                for message in messages:
                    _settle(message.ack)
            for message in messages:
                if not message.acknowledged:
                    # The ack failed (say, on a connection lost since): the
                    # broker gives the message back, it is not held here.
                    self.dropped(message)

    def _ack_many(self, channel, messages):
        if _settle(channel.basic_ack_many,
                   [message.delivery_tag for message in messages]):
            _mark_acknowledged(messages)

    def _ack_settled_prefix(self, channel, messages):
        finished = {id(message) for message in messages}
        deliveries = self._deliveries[channel]
        last = None
        while deliveries and (id(deliveries[0]) in finished
                              or deliveries[0].acknowledged):
            message = deliveries.popleft()
            if id(message) in finished:
                last = message
        if last is not None and _settle(channel.basic_ack, last.delivery_tag,
                                        multiple=True):
            _mark_acknowledged([m for m in messages
                                if m.delivery_tag <= last.delivery_tag])
        for message in messages:
            if not message.acknowledged:
                _settle(message.ack)
        if not deliveries:
            del self._deliveries[channel]


def _mark_acknowledged(messages):
    for message in messages:
        # What Message.ack() records once it has sent basic_ack.
        message._state = 'ACK'


def _settle(settle, *args, **kwargs):
    try:
        settle(*args, **kwargs)
        return True
    except Exception:
        log.warning('could not acknowledge a message; it may be delivered '
                    'again', exc_info=True)
        return False
