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
"""
import collections
import logging
import queue

from kombu.transport import pyamqp

log = logging.getLogger(__name__)

# Held deliveries are pruned of the settled ones only past this many (and
# twice what was left unsettled), so that pruning stays cheap per message.
MIN_PRUNE_ABOVE = 1000


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
