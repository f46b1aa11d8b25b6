"""The channel's QoS: kombu's Redis one, with fetched messages recorded as
unacknowledged after they are handed on (channel.py says why it is safe).
"""
from time import time

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

# KEYS: kombu's unacked index and hash, the fetched list; ARGV: the time,
# the delivery tag, the record, the raw item. One command, atomic like the
# MULTI kombu uses, and cheaper to build and read than a redis-py pipeline,
# which the thread turning the consumer loop would build while holding the
# GIL.
RECORD_FETCHED = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('LREM', KEYS[3], 1, ARGV[4])
"""


class QoS(kombu_redis.QoS):

    def append(self, message, delivery_tag):
        if delivery_tag in self.channel._recorded:
            # A batch fetch recorded it in Redis already.
            self.channel._recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
            return
        fetched = self.channel._fetched.pop(delivery_tag, None)
        if fetched is None:
            return super().append(message, delivery_tag)
        # Written at the next fetch (Channel.write_records) or when the
        # message is settled: the fetched list keeps it safe until then,
        # and its job does not wait for that round trip.
        self.channel._unrecorded[delivery_tag] = fetched + (
            message.delivery_info,)
        # kombu's own bookkeeping of delivered messages (not the Redis one).
        virtual.QoS.append(self, message, delivery_tag)

    def record(self, delivery_tag):
        """Record a fetched message as unacknowledged, if it waits to be."""
        pending = self.channel._unrecorded.pop(delivery_tag, None)
        if pending is None:
            return
        key, item, delivery = pending
        # kombu's record, [message, exchange, routing_key], around the item
        # as it came (FETCH_BATCH builds it so too): not encoded again.
        record = b''.join((b'[', item, b',', _json(delivery['exchange']),
                           b',', _json(delivery['routing_key']), b']'))
        with self.channel.conn_or_acquire() as client:
            client.execute_command(
                'EVAL', RECORD_FETCHED, 3, self.unacked_index_key,
                self.unacked_key, key, time(), delivery_tag, record, item)

    # A message acknowledged (or rejected without requeue) before its
    # record was written only leaves the fetched list: recording it just to
    # delete it would be a second round trip, on the path of every lone
    # quick job (inline.py). A requeue works on the unacknowledged hash, so
    # the record is written first.

    def ack(self, delivery_tag):
        self.ack_many([delivery_tag])

    def reject(self, delivery_tag, requeue=False):
        if not requeue:
            self.ack_many([delivery_tag])
            return
        super().reject(delivery_tag, requeue)   # restore_by_tag records

    def restore_by_tag(self, tag, client=None, leftmost=False):
        self.record(tag)
        super().restore_by_tag(tag, client, leftmost)

    def ack_many(self, delivery_tags):
        unrecorded = self.channel._unrecorded
        fetched = [unrecorded.pop(tag) for tag in delivery_tags
                   if tag in unrecorded]
        with self.pipe_or_acquire() as pipe:
            # MULTI/EXEC: out of the fetched list and the hash at once.
            for key, item, _ in fetched:
                pipe.lrem(key, 1, item)
            pipe.zrem(self.unacked_index_key, *delivery_tags) \
                .hdel(self.unacked_key, *delivery_tags) \
                .execute()
        for tag in delivery_tags:
            virtual.QoS.ack(self, tag)


def _json(text):
    return dumps(text).encode()
