"""Broker plumbing: connections, queue names, the embedded SQLite default.

Nothing here is created at import time; every function builds what it needs
when called, in the process that calls it, so nothing crosses a fork.
"""
import logging
import urllib.parse

import kombu

from . import sqlite_transport

log = logging.getLogger(__name__)

# Seconds a SQLite connection waits for another process' write lock.
SQLITE_BUSY_TIMEOUT = 30

# --- embedded transport (pyramid_scheduler/sqlite_transport.py) -------------
# Our own kombu transport on the stdlib sqlite3 module: at-least-once leases,
# unix-socket wake-ups instead of tight polling, WAL; see that module.
EmbeddedTransport = sqlite_transport.SQLiteTransport
# --- end embedded transport ----------------------------------------------


def queue_name(settings, queue):
    return f'{settings.scheduler_id}.{queue}'


def admin_queue_name(settings, queue):
    return f'{settings.scheduler_id}.{queue}.admin'


def store_queue_name(settings, queue):
    """Where deferred jobs and cancels go when several processes serve a
    queue: only the one that owns the queue's job store consumes it."""
    return f'{settings.scheduler_id}.{queue}.store'


def dead_letter_queue_name(settings, queue):
    return f'{settings.scheduler_id}.{queue}.dead'


def kombu_queue(name, durable=True, auto_delete=False):
    # The default exchange routes by queue name: one broker round trip per
    # publish on Redis instead of two through a named exchange.
    return kombu.Queue(name, exchange=kombu.Exchange(''), routing_key=name,
                       durable=durable, auto_delete=auto_delete)


def reply_queue(name):
    """A command's private reply queue: gone once the sender is done."""
    return kombu_queue(name, durable=False, auto_delete=True)


def job_queue(settings, queue):
    return kombu_queue(queue_name(settings, queue))


def admin_queue(settings, queue):
    return kombu_queue(admin_queue_name(settings, queue))


def store_queue(settings, queue):
    return kombu_queue(store_queue_name(settings, queue))


def dead_letter_queue(settings, queue):
    return kombu_queue(dead_letter_queue_name(settings, queue))


from .values import redact_url  # noqa: E402,F401 (moved; re-exported)


def transport_options(settings):
    """Options that bound every wait, so no request blocks forever."""
    if settings.embedded:
        return {
            'busy_timeout': SQLITE_BUSY_TIMEOUT,
            # Only a fallback: consumers are woken by the producers.
            'polling_interval': settings.polling_interval,
            # Leases of a dead consumer come back at once; those of a live
            # (hung) one after this.
            'visibility_timeout': getattr(settings, 'visibility_timeout',
                                          3600),
        }
    scheme = settings.broker_url.split(':', 1)[0]
    if scheme.startswith('redis') or scheme.startswith('rediss'):
        return {
            'socket_connect_timeout': max(settings.send_timeout, 0.5),
            'socket_timeout': 30,
            'socket_keepalive': True,
            # Unacknowledged messages of a hung consumer come back after
            # this; it must exceed the longest async job (see README). A
            # dead one's come back at once: restore_orphaned_messages().
            'visibility_timeout': settings.visibility_timeout,
        }
    return {}


def connect(settings, consumer_slot=0, **kwargs):
    """A new, not yet connected kombu Connection to the configured broker.

    ``consumer_slot``: which of the processes serving a queue consumes on
    it; on Redis each slot records its unacknowledged messages apart, so
    the process that replaces a dead one restores only what that one held
    (see redis_transport).
    """
    options = dict(transport_options(settings))
    options.update(kwargs.pop('transport_options', {}))
    if settings.embedded:
        ensure_embedded_database(settings.database_path)
        return kombu.Connection(settings.broker_url,
                                transport=EmbeddedTransport,
                                transport_options=options, **kwargs)
    connect_timeout = max(settings.send_timeout, 0.5)
    if _scheme(settings.broker_url) in ('redis', 'rediss'):
        # Imported here: redis is an extra, the SQLite default lacks it.
        from . import redis_transport
        # kombu's Redis transport, without its window for losing a message
        # taken by a consumer that dies (see redis_transport). Not for
        # rediss://, whose TLS defaults kombu derives from the scheme.
    if _scheme(settings.broker_url) == 'redis':
        kwargs.setdefault('transport', redis_transport.Transport)
    if _scheme(settings.broker_url) in ('redis', 'rediss'):
        options.update(redis_transport.slot_options(consumer_slot))
    return kombu.Connection(settings.broker_url, transport_options=options,
                            connect_timeout=connect_timeout, **kwargs)


def _scheme(url):
    return str(url).split(':', 1)[0].lower()


def _is_redis(channel):
    # kombu's Redis transport and ours say 'redis'; without the redis extra
    # no channel can be one, and redis_transport must not be imported.
    return getattr(channel.connection, 'driver_type', None) == 'redis'


def polling_interval(settings):
    return settings.polling_interval if settings.embedded else None


def ensure_embedded_database(path):
    """Create the embedded SQLite file and its tables, once, race-free.

    Several processes (web workers, pscheduler children) may start at the
    same moment: an exclusive file lock beside the database (``<path>.lock``)
    serializes that first setup (``CREATE TABLE IF NOT EXISTS`` of the
    transport's tables, WAL mode). Once per process and path.
    """
    sqlite_transport.ensure_database(path, SQLITE_BUSY_TIMEOUT)


def restore_fetched_messages(channel, queue_names):
    """Put back the Redis messages a dead consumer fetched but never
    recorded as unacknowledged (see redis_transport); 0 elsewhere."""
    if not _is_redis(channel):
        return 0
    from . import redis_transport
    return redis_transport.restore_fetched(channel, queue_names)


def restore_removed_slots(channel, first_removed):
    """Put back the Redis messages left by processes of slots that no
    longer exist (see redis_transport); 0 elsewhere."""
    if not _is_redis(channel):
        return 0
    from . import redis_transport
    return redis_transport.restore_removed_slots(channel, first_removed)


def restore_orphaned_messages(channel, queue_names, keep=()):
    """Put back the unacknowledged Redis messages of a dead consumer.

    kombu's Redis transport keeps every delivered, unacknowledged message in
    one hash and restores it only after the visibility timeout (an hour by
    default). A runtime that starts is the only consumer of its queues in
    its slot (the job store lock, or pscheduler's one child per slot), and
    each slot has a hash of its own (redis_transport.slot_options), so any
    message of those queues still in that hash belongs to a consumer that
    died: restoring them at start makes a crashed child's jobs run again
    within a second instead of an hour. Other transports return unacked
    messages by themselves; this is a no-op for them. ``keep``: delivery
    tags the caller still holds (after a reconnect), left alone.
    """
    qos = getattr(channel, 'qos', None)
    if not hasattr(qos, 'restore_by_tag') or not hasattr(channel,
                                                          'unacked_key'):
        return 0
    import json
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
