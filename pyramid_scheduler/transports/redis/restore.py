"""Putting back what a dead Redis consumer left behind.

A Redis message is always in one of three places (channel.py): its queue's
list, a consumer slot's fetched list, or that slot's unacknowledged hash.
A consumer that dies leaves its messages in the last two, where kombu would
look only after the visibility timeout (an hour by default) and never for a
slot that no longer exists. The runtime calls these when it starts, or
reconnects, for the slot it now owns:

- :func:`restore_orphaned_messages`: the slot's unacknowledged hash;
- :func:`restore_fetched`: the slot's fetched lists (taken, never recorded);
- :func:`restore_dead_instances`: both, for every consumer instance whose
  liveness key is gone (instances.py), whichever queue or daemon it
  served; the runtime also calls it every few seconds;
- :func:`restore_legacy_slots`: both, for the numbered slots' keys of a
  version before instances (kombu's ``unacked``, ``unacked#N``), for the
  queues of the job store owner that starts (an upgrade);
- :func:`restore_removed_slots`: numbered slots beyond a queue's configured
  number of processes (kept for callers of a version before instances).

Each move is atomic (``MULTI`` or ``RPOPLPUSH``): a consumer killed while
restoring loses nothing either. Callers reach these through
``pyramid_scheduler.transports``, which answers 0 for other brokers without
importing this module (redis is an extra).
"""
import json
import logging

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from . import instances
from .channel import Channel, fetched_key, instance_options, slot_options

log = logging.getLogger(__name__)


def restore_orphaned_messages(channel, queue_names, keep=()):
    """Put back the unacknowledged Redis messages of a dead consumer.

    kombu's Redis transport keeps every delivered, unacknowledged message in
    one hash and restores it only after the visibility timeout (an hour by
    default). A runtime that starts is the only consumer of its queues in
    its slot (the job store lock, or pscheduler's one child per slot), and
    each slot has a hash of its own (channel.slot_options), so any message
    of those queues still in that hash belongs to a consumer that died:
    restoring them at start makes a crashed child's jobs run again within a
    second instead of an hour. ``keep``: delivery tags the caller still
    holds (after a reconnect), left alone. Returns how many went back.
    """
    qos = getattr(channel, 'qos', None)
    if (not hasattr(qos, 'restore_by_tag')
            or not hasattr(channel, 'unacked_key')):
        return 0
    with channel.conn_or_acquire() as client:
        entries = client.hgetall(channel.unacked_key)
    restored = 0
    for tag, raw in entries.items():
        tag = tag.decode() if isinstance(tag, bytes) else tag
        if tag in keep:
            continue
        try:
            _, _, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        if routing_key in queue_names:
            qos.restore_by_tag(tag, leftmost=True)
            restored += 1
    if restored:
        log.warning('restored %d unacknowledged message(s) of a previous '
                    'consumer of %s', restored, ', '.join(sorted(queue_names)))
    return restored


def restore_removed_slots(channel, first_removed):
    """Put back what consumers in slots that no longer exist left behind.

    ``first_removed`` maps a queue name to its first slot not configured any
    more (its number of processes). A process of such a slot that died or
    overstayed its stop (SIGKILL) left its unacknowledged and fetched
    messages in its slot's keys, where no consumer would ever look. The
    owner of the queue's job store calls this when it starts; pscheduler
    starts it only once the removed slots' processes are gone. Returns how
    many messages went back.
    """
    if not isinstance(channel, kombu_redis.Channel):
        return 0
    restored = 0
    with channel.conn_or_acquire() as client:
        for slot in _slots_with_unacked(client):
            queues = [queue for queue, first in first_removed.items()
                      if slot >= first]
            if queues:
                restored += _restore_slot(channel, client, slot, queues)
    if restored:
        log.warning('restored %d message(s) of %s left by process(es) no '
                    'longer configured (scheduler.processes)', restored,
                    ', '.join(sorted(first_removed)))
    return restored


def _slots_with_unacked(client):
    prefix = kombu_redis.Channel.unacked_key + '#'
    slots = set()
    for key in client.scan_iter(match=prefix + '*'):
        number = bytes_to_str(key)[len(prefix):]
        if number.isdigit() and int(number) > 0:
            slots.add(int(number))
    return sorted(slots)


def _restore_slot(channel, client, slot, queues):
    options = slot_options(slot)
    unacked, index = options['unacked_key'], options['unacked_index_key']
    restored = 0
    for tag, raw in client.hgetall(unacked).items():
        try:
            message, exchange, routing_key = loads(bytes_to_str(raw))
        except (ValueError, TypeError):
            continue
        if routing_key not in queues:
            continue
        with client.pipeline() as pipe:   # MULTI: never in both, or none
            pipe.hdel(unacked, tag).zrem(index, tag)
            channel._do_restore_message(message, exchange, routing_key,
                                        pipe, leftmost=True)
            pipe.execute()
        restored += 1
    for queue in queues:
        restored += _put_back_fetched(client, fetched_key(queue, slot), queue)
    return restored


def _put_back_fetched(client, key, queue):
    """Move every message of the fetched list ``key`` back to ``queue``,
    one atomic ``RPOPLPUSH`` each; returns how many."""
    moved = 0
    while client.rpoplpush(key, queue) is not None:
        moved += 1
    return moved


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
            restored += _put_back_fetched(client, channel.fetched_key(queue),
                                          queue)
    if restored:
        log.warning('restored %d message(s) fetched by a previous consumer '
                    'of %s that died before recording them', restored,
                    ', '.join(sorted(queue_names)))
    return restored


# --- instances (see instances.py) ------------------------------------------

def restore_dead_instances(channel, own_instance=None):
    """Put back what consumer instances whose liveness key is gone left in
    their unacknowledged hashes and fetched lists; returns how many.

    Every key is checked against its owner's liveness key just before it is
    read, and each message moves atomically (a transaction watching the
    hash, or ``RPOPLPUSH``): two processes restoring the same dead instance
    at once put each message back once.
    """
    if not isinstance(channel, kombu_redis.Channel):
        return 0
    restored = 0
    with channel.conn_or_acquire() as client:
        for owner, queues in sorted(instances.registered(client).items()):
            if owner == own_instance or instances.is_alive(client, owner):
                continue
            restored += _restore_instance(channel, client, owner, queues)
            instances.forget(client, owner)
    if restored:
        log.warning('restored %d message(s) left by consumer process(es) '
                    'that are gone', restored)
    return restored


def _restore_instance(channel, client, owner, queues):
    options = instance_options(owner)
    unacked, index = options['unacked_key'], options['unacked_index_key']
    restored = 0
    for tag in client.hkeys(unacked):
        restored += _restore_entry(channel, client, unacked, index, tag)
    if not client.hlen(unacked):
        client.delete(index)
    for queue in queues:
        restored += _put_back_fetched(client, fetched_key(queue, owner),
                                      queue)
    return restored


def _restore_entry(channel, client, unacked, index, tag, queues=None):
    """Move one entry of a hash not used any more back to its queue, in a
    transaction watching the hash; 1 if this call moved it. ``queues``:
    only if it was routed to one of them."""
    moved = []

    def move(pipe):
        moved.clear()
        raw = pipe.hget(unacked, tag)
        if raw is None:
            return   # another process put it back first
        try:
            message, exchange, routing_key = loads(bytes_to_str(raw))
        except (ValueError, TypeError):
            if queues is not None:
                return
            log.error('dropped an unacknowledged entry of %s that is not a '
                      'kombu message: %.200r', unacked, raw)
            pipe.multi()
            pipe.hdel(unacked, tag).zrem(index, tag)
            return
        if queues is not None and routing_key not in queues:
            return
        pipe.multi()
        pipe.hdel(unacked, tag).zrem(index, tag)
        channel._do_restore_message(message, exchange, routing_key, pipe,
                                    leftmost=True)
        moved.append(tag)

    client.transaction(move, unacked)
    return len(moved)


def restore_legacy_slots(channel, queue_names):
    """Put back the messages of ``queue_names`` that consumers of a version
    before instances left under numbered slots' keys: kombu's ``unacked``
    (slot 0), ``unacked#N``, and their fetched lists. The job store owner
    of the queues calls it when it connects: a daemon upgraded while its
    processes held messages finds them run. Returns how many."""
    if not isinstance(channel, kombu_redis.Channel):
        return 0
    restored = 0
    with channel.conn_or_acquire() as client:
        for slot in [0] + _slots_with_unacked(client):
            options = slot_options(slot) or {
                'unacked_key': kombu_redis.Channel.unacked_key,
                'unacked_index_key': kombu_redis.Channel.unacked_index_key}
            unacked = options['unacked_key']
            if unacked == getattr(channel, 'unacked_key', None):
                continue   # a connection without instance: its own hash
            for tag, raw in client.hgetall(unacked).items():
                if _routed_to(raw, queue_names):   # kombu's hash is shared
                    restored += _restore_entry(
                        channel, client, unacked,
                        options['unacked_index_key'], tag,
                        queues=queue_names)
            for queue in queue_names:
                key = fetched_key(queue, slot)
                if key != _own_fetched_key(channel, queue):
                    restored += _put_back_fetched(client, key, queue)
    if restored:
        log.warning('restored %d message(s) of %s left by a version before '
                    'consumer instances', restored,
                    ', '.join(sorted(queue_names)))
    return restored


def _own_fetched_key(channel, queue):
    if isinstance(channel, Channel):
        return channel.fetched_key(queue)
    return None


def _routed_to(raw, queue_names):
    try:
        return loads(bytes_to_str(raw))[2] in queue_names
    except (ValueError, TypeError, IndexError, KeyError):
        return False
