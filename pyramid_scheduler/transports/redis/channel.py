"""kombu's Redis transport, without its window for losing a message.

kombu takes a message with ``BRPOP`` (which removes it from the queue's list)
and records it as unacknowledged in a second command, once the reply has
been read and parsed. A consumer killed between the two (SIGKILL, OOM, a
crash while it receives) loses that message: it is in neither place. Under
a steady flow a consumer spends much of its time in that window; the fault
tests (tests/test_durability.py) lost about one job in every few kills.

Here a channel that consumes a single queue fetches with ``BRPOPLPUSH``,
which atomically moves the message into a list of its own,
``_pscheduler.fetched.<queue>``; once the consumer has handed it on (its
job started at once, not after a round trip), one atomic script records it
as unacknowledged (kombu's hash) and takes it out of that list, at the next
fetch or when the message is settled, whichever comes first (qos.py). A
message is always in the queue, in the fetched list or in the
unacknowledged hash.
:func:`restore.restore_fetched` (transports/redis/restore.py) puts back what
a dead consumer left in the fetched lists: only one consumer serves a queue
(the job store lock), so when it starts, or reconnects, whatever is there
was left by a consumer that is gone.

While messages are waiting, a single-queue channel takes them in batches
instead: one Lua script (:data:`FETCH_BATCH`) moves up to the prefetch
window of messages from the queue straight into kombu's unacknowledged hash
and index, atomically, in one round trip; acknowledgements of a consumer
turn leave in one pipeline (:meth:`Channel.basic_ack_many`). Only when the
script finds the queue empty does the channel block in ``BRPOPLPUSH``.

Several processes may serve one queue (``scheduler.processes``), on one or
several daemons and hosts. Each consumer process records what it holds
under keys of its own *instance* (:func:`instance_options`, a new id each
time a runtime starts): ``unacked#<instance>``, ``unacked_index#<instance>``,
``unacked_mutex#<instance>`` and ``_pscheduler.fetched#<instance>.<queue>``,
and says it is alive with a key that expires unless refreshed
(instances.py). Whatever sits under the keys of an instance whose liveness
key is gone belongs to a dead process, and any consumer puts it back
(restore.py); a live process's messages are never touched, whichever daemon
it belongs to. Before instances, slots were numbered (slot 0 with kombu's
keys, slot N with ``unacked#N`` ...: :func:`slot_options`); a queue's job
store owner still restores those keys, left by a daemon of a version before
instances.

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
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from ..envelopes import (
    dead_letter_queue_for, envelope_decoder, envelope_problem)
from .qos import QoS

log = logging.getLogger(__name__)

FETCHED_PREFIX = '_pscheduler.fetched.'
# Most messages one batch fetch takes, whatever the prefetch window.
MAX_FETCH_BATCH = 100

# KEYS: the queue's list, kombu's unacked hash and index, our fetched list.
# ARGV: how many messages at most, the time to index them with.
# Returns [recorded, item, recorded, item, ...]: recorded is 1 when the item
# went into the unacked hash (kombu's record: [message, exchange,
# routing_key]), 0 when Lua could not read it as a kombu message and left it
# in the fetched list, where Python deals with it as after BRPOPLPUSH.
FETCH_BATCH = """
local taken = {}
for _ = 1, tonumber(ARGV[1]) do
    local item = redis.call('RPOP', KEYS[1])
    if not item then break end
    local ok, message = pcall(cjson.decode, item)
    local tag, info
    if ok and type(message) == 'table'
            and type(message.properties) == 'table' then
        tag = message.properties.delivery_tag
        info = message.properties.delivery_info
    end
    if type(tag) == 'string' and type(info) == 'table'
            and type(info.exchange) == 'string'
            and type(info.routing_key) == 'string' then
        redis.call('ZADD', KEYS[3], ARGV[2], tag)
        redis.call('HSET', KEYS[2], tag, '[' .. item .. ','
            .. cjson.encode(info.exchange) .. ','
            .. cjson.encode(info.routing_key) .. ']')
        taken[#taken + 1] = 1
    else
        redis.call('LPUSH', KEYS[4], item)
        taken[#taken + 1] = 0
    end
    taken[#taken + 1] = item
end
return taken
"""


def fetched_key(queue, owner=0):
    """The fetched list of ``queue`` for ``owner``: an instance id, or
    (keys of a version before instances) a slot number."""
    # '#' cannot start a queue name: no owner's key is another queue's; an
    # instance id holds no '.', so the first one after '#' ends it.
    if owner:
        return f'{FETCHED_PREFIX[:-1]}#{owner}.{queue}'
    return FETCHED_PREFIX + queue


def _unacked_options(suffix):
    return {'unacked_key': f'{kombu_redis.Channel.unacked_key}#{suffix}',
            'unacked_index_key':
                f'{kombu_redis.Channel.unacked_index_key}#{suffix}',
            'unacked_mutex_key':
                f'{kombu_redis.Channel.unacked_mutex_key}#{suffix}'}


def slot_options(slot):
    """Transport options of a consumer in numbered ``slot``, as a version
    before instances used them (restore.py still reads those keys)."""
    if not slot:
        return {}
    return {'consumer_slot': slot, **_unacked_options(slot)}


def instance_options(instance):
    """Transport options of the consumer process ``instance``
    (instances.new_instance_id); kombu's own Redis transport (rediss://)
    understands the ``unacked`` ones too."""
    return {'consumer_instance': instance, **_unacked_options(instance)}


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

    # Which consumer process this is (see the module docstring); transport
    # options. A slot number only on a connection made without an instance.
    consumer_slot = 0
    consumer_instance = None
    from_transport_options = (kombu_redis.Channel.from_transport_options
                              + ('consumer_slot', 'consumer_instance'))

    def __init__(self, *args, **kwargs):
        self._fetched = {}      # delivery tag -> (fetched list, raw item)
        # delivery tag -> (fetched list, raw item, delivery info) of
        # messages handed on, not yet recorded as unacknowledged (qos.py).
        self._unrecorded = {}
        self._recorded = set()  # delivery tags a batch fetch recorded
        self._fetching = None   # (command, queue, fetched list) pending
        self._queue_empty = False   # the last batch found nothing: block
        self._load_envelope = envelope_decoder()   # kombu's loads, faster
        super().__init__(*args, **kwargs)
        self.consumer_slot = int(self.consumer_slot or 0)

    def fetched_key(self, queue):
        return fetched_key(queue, self.consumer_instance or self.consumer_slot)

    def basic_ack_many(self, delivery_tags):
        """Acknowledge several messages in one round trip."""
        self.qos.ack_many(delivery_tags)

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
        self.write_records()
        key = self.fetched_key(queue)
        connection = self.client.connection
        if self._queue_empty:
            self._fetching = ('BRPOPLPUSH', queue, key)
            connection.send_command('BRPOPLPUSH', queue, key, timeout or 0)
        else:
            self._fetching = ('EVAL', queue, key)
            connection.send_command(
                'EVAL', FETCH_BATCH, 4, queue, self.unacked_key,
                self.unacked_index_key, key, self._batch_size(), time())
        self._in_poll = connection
        self._brpop_sent_at = monotonic()

    def _batch_size(self):
        room = self.qos.can_consume_max_estimate()
        if room is None:
            return MAX_FETCH_BATCH
        return max(1, min(room, MAX_FETCH_BATCH))

    def _brpop_read(self, **options):
        if self._fetching is None:
            return super()._brpop_read(**options)
        command, queue, key = self._fetching
        try:
            try:
                reply = self.client.parse_response(
                    self.client.connection, command, **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            # An empty queue sends the next fetch to BRPOPLPUSH, which
            # waits; a message it brings means more may follow.
            self._queue_empty = not reply
            if not reply:
                raise Empty()
            if command == 'EVAL':
                self._deliver_batch(queue, key, reply)
            else:
                self._deliver_fetched(queue, key, reply)
            return True
        finally:
            self._in_poll = None
            self._fetching = None
            self._flush_brpop_reauth()

    def _deliver_batch(self, queue, key, reply):
        items = list(zip(reply[::2], reply[1::2]))
        for index, (recorded, item) in enumerate(items):
            try:
                if recorded:
                    self._deliver_recorded(queue, item)
                else:
                    self._deliver_fetched(queue, key, item)
            except Empty:
                continue
            except BaseException:
                self._hand_back(items[index + 1:])
                raise

    def _hand_back(self, items):
        """Put back the rest of a batch that a failed delivery cut short.

        If Redis cannot be reached now, they stay recorded as
        unacknowledged, and come back when the queue's next consumer starts
        (or after the visibility timeout), like kombu's own.
        """
        self._recorded.clear()
        for recorded, item in items:
            if not recorded:
                continue   # still in the fetched list: restore_fetched
            try:
                tag = loads(bytes_to_str(item))['properties']['delivery_tag']
                self.qos.restore_by_tag(tag, leftmost=True)
            except Exception:
                log.warning('could not hand back a fetched message; it '
                            'comes back when the queue is next consumed',
                            exc_info=True)

    def _deliver_recorded(self, queue, item):
        payload, problem = _parse(item, self._load_envelope)
        if problem is not None:
            # Lua read its tag and route, and recorded it; kombu cannot
            # make a message of it all the same.
            tag = _recorded_tag(payload)
            self._dead_letter(queue, item, problem, lambda pipe: pipe.zrem(
                self.unacked_index_key, tag).hdel(self.unacked_key, tag)
                if tag is not None else pipe)
            raise Empty()
        tag = payload['properties']['delivery_tag']
        self._recorded.add(tag)
        self.connection._deliver(payload, queue)
        if tag in self._recorded:
            # Never appended (consumed without acks, or handed back to the
            # queue): it must not stay recorded as unacknowledged.
            self._recorded.discard(tag)
            self.qos._remove_from_indices(tag).execute()

    def _deliver_fetched(self, queue, key, item):
        payload, problem = _parse(item, self._load_envelope)
        if problem is not None:
            self._dead_letter(queue, item, problem,
                              lambda pipe: pipe.lrem(key, 1, item))
            raise Empty()
        tag = payload['properties']['delivery_tag']
        self._fetched[tag] = (key, item)
        self.connection._deliver(payload, queue)
        if self._fetched.pop(tag, None) is not None:
            # Not recorded as unacknowledged: consumed without acks, or
            # handed back to the queue (no consumer for it any more).
            self._unfetch(key, item)

    def write_records(self):
        """Record as unacknowledged the fetched messages handed on since
        the last fetch (qos.py): at the next fetch, not before the
        message's job, which may run in this very thread (the runtime's
        inline.py) while another turns the loop."""
        for tag in list(self._unrecorded):
            self.qos.record(tag)

    def _dead_letter(self, queue, item, problem, take_out):
        """Move an item kombu cannot make a message of, as it is, to the
        queue's dead-letter queue, and out of where it was (``take_out``
        adds that to the transaction): the runtime, which dead-letters
        what it cannot read, never gets it, and it must not stop the
        messages behind it."""
        target = dead_letter_queue_for(queue)
        with self.conn_or_acquire() as client:
            take_out(client.pipeline().lpush(target, item)).execute()
        log.error('rejected a message from %s: not a kombu message (%s); '
                  'moved to %s as it is: %.200r', queue, problem, target, item)

    def _unfetch(self, key, item):
        with self.conn_or_acquire() as client:
            client.lrem(key, 1, item)


class Transport(kombu_redis.Transport):
    Channel = Channel


def _parse(item, load=loads):
    """``(payload, None)``, or ``(None, why it is not a kombu envelope)``:
    what kombu needs to make a message, and to record it as
    unacknowledged (its exchange and routing key). ``load``: kombu's
    ``loads``, or the channel's envelopes.envelope_decoder()."""
    try:
        payload = load(bytes_to_str(item))
    except Exception as exc:
        return None, f'not JSON: {type(exc).__name__}'
    return payload, envelope_problem(payload, needs_route=True)


def _recorded_tag(payload):
    """The delivery tag Lua recorded a message under, if Python reads it
    too (it may not: cjson and Python's json differ at the edges)."""
    try:
        tag = payload['properties']['delivery_tag']
    except (TypeError, KeyError):
        return None
    return tag if isinstance(tag, str) else None
