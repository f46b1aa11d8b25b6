"""kombu's Redis transport, without its window for losing a message.

kombu takes a message with ``BRPOP`` (which removes it from the queue's list)
and records it as unacknowledged in a second command, once the reply has
been read and parsed. A consumer killed between the two (SIGKILL, OOM, a
crash while it receives) loses that message: it is in neither place. Under
a steady flow a consumer spends much of its time in that window; the fault
tests (tests/test_durability.py) lost about one job in every few kills.

Here a channel that consumes a single queue fetches with ``BRPOPLPUSH``,
which atomically moves the message into a list of its own,
``_pscheduler.fetched.<queue>``; one ``MULTI`` then records it as
unacknowledged (kombu's hash) and takes it out of that list. A message is
always in the queue, in the fetched list or in the unacknowledged hash.
:func:`restore_fetched` puts back what a dead consumer left in the fetched
lists: only one consumer serves a queue (the job store lock), so when it
starts, or reconnects, whatever is there was left by a consumer that is
gone.

Channels consuming several queues, and a ``global_keyprefix``, keep kombu's
``BRPOP``: the runtime gives every queue a channel of its own
(:attr:`Channel.one_queue_per_channel`). Messages are published as kombu
does: any kombu producer can feed these consumers.
"""
import logging
from contextlib import contextmanager
from queue import Empty
from time import monotonic, time

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

log = logging.getLogger(__name__)

FETCHED_PREFIX = '_pscheduler.fetched.'


def fetched_key(queue):
    return FETCHED_PREFIX + queue


class QoS(kombu_redis.QoS):

    def append(self, message, delivery_tag):
        fetched = self.channel._fetched.pop(delivery_tag, None)
        if fetched is None:
            return super().append(message, delivery_tag)
        key, item = fetched
        delivery = message.delivery_info
        record = dumps([message._raw, delivery['exchange'],
                        delivery['routing_key']])
        with self.pipe_or_acquire() as pipe:
            # pipeline() is MULTI/EXEC: recorded and out of the fetched
            # list at once, or neither.
            pipe.zadd(self.unacked_index_key,
                      {delivery_tag: time()}) \
                .hset(self.unacked_key, delivery_tag, record) \
                .lrem(key, 1, item) \
                .execute()
        # kombu's own bookkeeping of delivered messages (not the Redis one).
        virtual.QoS.append(self, message, delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS
    _shared_client = None

    @contextmanager
    def conn_or_acquire(self, client=None):
        # kombu builds a new redis-py client (about 120 us) for every
        # command; a redis-py client is thread-safe and draws connections
        # from the channel's pool, so one per channel serves them all.
        if client:
            yield client
            return
        if self._shared_client is None:
            self._shared_client = self._create_client()
        yield self._shared_client
    # Only the base list of a queue: priorities would make several lists,
    # and BRPOPLPUSH takes one. pyramid_scheduler never sets a priority.
    priority_steps = [0]
    one_queue_per_channel = True

    def __init__(self, *args, **kwargs):
        self._fetched = {}      # delivery tag -> (fetched list, raw item)
        self._fetching = None   # (queue, fetched list) of the pending fetch
        super().__init__(*args, **kwargs)

    def _fetch_source(self):
        """The one list to fetch from, or None for kombu's BRPOP."""
        queues = list(self.active_queues)
        if len(queues) != 1 or self.global_keyprefix:
            return None
        keys = {self._q_for_pri(queues[0], pri)
                for pri in self.priority_steps}
        if len(keys) != 1:
            return None
        return queues[0]

    def _brpop_start(self, timeout=None):
        queue = self._fetch_source()
        if queue is None:
            self._fetching = None
            return super()._brpop_start(timeout)
        if timeout is None:
            timeout = self.brpop_timeout
        self._fetching = (queue, fetched_key(queue))
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self.client.connection.send_command(
            'BRPOPLPUSH', queue, fetched_key(queue), timeout or 0)

    def _brpop_read(self, **options):
        if self._fetching is None:
            return super()._brpop_read(**options)
        queue, key = self._fetching
        try:
            try:
                item = self.client.parse_response(
                    self.client.connection, 'BRPOPLPUSH', **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not item:
                raise Empty()
            self._deliver_fetched(queue, key, item)
            return True
        finally:
            self._in_poll = None
            self._fetching = None
            self._flush_brpop_reauth()

    def _deliver_fetched(self, queue, key, item):
        try:
            payload = loads(bytes_to_str(item))
            tag = payload['properties']['delivery_tag']
        except Exception:
            # kombu would drop it too (its BRPOP already had); say so.
            log.error('dropped a message of %s that is not a kombu message: '
                      '%.200r', queue, item)
            self._unfetch(key, item)
            raise Empty() from None
        self._fetched[tag] = (key, item)
        self.connection._deliver(payload, queue)
        if self._fetched.pop(tag, None) is not None:
            # Not recorded as unacknowledged: consumed without acks, or
            # handed back to the queue (no consumer for it any more).
            self._unfetch(key, item)

    def _unfetch(self, key, item):
        with self.conn_or_acquire() as client:
            client.lrem(key, 1, item)


class Transport(kombu_redis.Transport):
    Channel = Channel


def restore_fetched(channel, queue_names):
    """Put back the messages a dead consumer fetched but never recorded.

    Returns their number. Each move is atomic (``RPOPLPUSH``): a consumer
    killed while restoring loses nothing either.
    """
    if not isinstance(channel, Channel):
        return 0
    restored = 0
    with channel.conn_or_acquire() as client:
        for queue in queue_names:
            while client.rpoplpush(fetched_key(queue), queue) is not None:
                restored += 1
    if restored:
        log.warning('restored %d message(s) fetched by a previous consumer '
                    'of %s that died before recording them', restored,
                    ', '.join(sorted(queue_names)))
    return restored
