"""The kombu channel of the embedded transport: queues are rows of a table.

The channel only translates kombu's calls; the transport (transport.py) has
the SQL run (queues.py), so that every channel of a connection shares one
SQLite connection and one set of leases.
"""
from queue import Empty

from kombu.transport import virtual

# The most rows one consumer leases in one statement (its prefetch window
# permitting): what it delivers in one drain_events.
LEASE_BATCH = 100


class Channel(virtual.Channel):
    """A virtual channel whose queues are rows of the message table."""

    supports_fanout = False

    def __init__(self, connection, **kwargs):
        super().__init__(connection, **kwargs)
        self._no_ack_queues = set()

    # queues
    def _new_queue(self, queue, auto_delete=False, **kwargs):
        self.connection.declare_queue(queue, bool(auto_delete))

    def _has_queue(self, queue, **kwargs):
        return self.connection.has_queue(queue)

    def _size(self, queue):
        return self.connection.size(queue)

    def _purge(self, queue):
        return self.connection.purge(queue)

    def _delete(self, queue, *args, **kwargs):
        self.connection.delete_queue(queue)

    def queue_delete(self, queue, if_unused=False, if_empty=False, **kwargs):
        # Queues bound to the default exchange have no bindings, so kombu's
        # version would never call _delete(): a deleted queue stayed.
        if if_empty and self._size(queue):
            return
        self.state.queue_bindings_delete(queue)
        self._delete(queue)

    # messages
    def _put(self, queue, message, **kwargs):
        self.connection.put(queue, message)

    def _get(self, queue, timeout=None):
        return self.connection.lease(queue)[0]

    def _get_and_deliver(self, queue, callback):
        """Lease a batch (as much as the prefetch window allows) and deliver
        all of it, as kombu's SQS channel does with a bulk receive.

        One statement leases the batch, and the runtime acknowledges what
        its workers finished meanwhile in one statement at its next turn,
        instead of two statements per message.
        """
        payloads = self.connection.lease(queue, self._lease_limit())
        no_ack = queue in self._no_ack_queues
        for index, payload in enumerate(payloads):
            try:
                if no_ack:
                    self.connection.forget(payload, delete=True)
                callback(payload, queue)
            except BaseException:
                # The rest stay first in line for whoever consumes next.
                self.connection.settle(
                    [p['properties']['delivery_tag']
                     for p in payloads[index + 1:]], delete=False)
                raise

    def _lease_limit(self):
        room = self.qos.can_consume_max_estimate()  # None: no prefetch limit
        return LEASE_BATCH if room is None else max(min(room, LEASE_BATCH), 1)

    def basic_get(self, queue, no_ack=False, **kwargs):
        try:
            payload = self._get(queue)
        except Empty:
            return None
        message = self.Message(payload, channel=self)
        if no_ack:
            self.connection.forget(payload, delete=True)
        else:
            self.qos.append(message, message.delivery_tag)
        return message

    def basic_consume(self, queue, no_ack, callback, consumer_tag, **kwargs):
        super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)
        if no_ack:
            self._no_ack_queues.add(queue)
        self.connection.consumer_added(queue)

    def basic_cancel(self, consumer_tag):
        queue = self._tag_to_queue.get(consumer_tag)
        known = consumer_tag in self._consumers
        super().basic_cancel(consumer_tag)
        if known and queue is not None:
            if queue not in self._active_queues:
                self._no_ack_queues.discard(queue)
            self.connection.consumer_removed(queue)

    def basic_ack(self, delivery_tag, multiple=False):
        self.connection.settle([delivery_tag], delete=True)
        super().basic_ack(delivery_tag, multiple)

    def basic_ack_many(self, delivery_tags):
        """Acknowledge several messages in one statement (one transaction).

        What the runtime calls with a consumer turn's acknowledgements.
        """
        self.connection.settle(delivery_tags, delete=True)
        for tag in delivery_tags:
            self.qos.ack(tag)

    def basic_reject(self, delivery_tag, requeue=False):
        self.connection.settle([delivery_tag], delete=not requeue)
        # Never kombu's requeue: it would put a copy; the row is back already.
        self.qos.reject(delivery_tag, requeue=False)

    def _restore(self, message):
        """Unacked at close or recover: make the row visible again in place."""
        self.connection.settle([message.delivery_tag], delete=False)

    def _restore_at_beginning(self, message):
        self._restore(message)
