"""Broker transports: which kombu transport a broker gets, and connecting.

One table, :data:`SCHEMES`, says what each broker URL scheme gets: our own
kombu transport or kombu's, the transport options that bound every wait,
whether consumer slots keep their messages apart, and the direct publisher
that skips kombu on the common path. Without a ``scheduler.broker.url`` the
embedded SQLite transport (``transports/sqlite``) serves the database file.

The Redis client is an optional extra (``pyramid_scheduler[redis]``): the
Redis modules are named here as strings and imported only when a Redis URL
or a Redis channel asks for them, so the SQLite default runs with a plain
``pip install pyramid_scheduler``. The restore functions answer 0 for any
other broker without importing them.

Nothing here is created at import time; every function builds what it needs
when called, in the process that calls it, so nothing crosses a fork.
"""
import dataclasses
import importlib
import types

import kombu

from .. import values
from .sqlite import SQLiteTransport, ensure_database

# Seconds a SQLite connection waits for another process' write lock.
SQLITE_BUSY_TIMEOUT = 30

_REDIS = __name__ + '.redis'


def _no_options(settings):
    return {}


def _embedded_options(settings):
    return {
        'busy_timeout': SQLITE_BUSY_TIMEOUT,
        # Only a fallback: consumers are woken by the producers.
        'polling_interval': settings.polling_interval,
        # Leases of a dead consumer come back at once; those of a live
        # (hung) one after this.
        'visibility_timeout': settings.visibility_timeout,
    }


def _redis_options(settings):
    return {
        'socket_connect_timeout': max(settings.send_timeout, 0.5),
        'socket_timeout': 30,
        'socket_keepalive': True,
        # Unacknowledged messages of a hung consumer come back after
        # this; it must exceed the longest async job (see README). A
        # dead one's come back at once: restore_orphaned_messages().
        'visibility_timeout': settings.visibility_timeout,
    }


def _amqp_options(settings):
    return {
        # Publisher confirms: every publish on the connection (the web
        # app's sends, the daemon's pass-ons, dead letters and replies) waits
        # for the broker's ack, which RabbitMQ sends once a persistent
        # message is on disk. Without them a broker killed with messages
        # still in its buffers loses them although publish returned (3,888
        # of 5,000 in a fault run). A round trip per publish: see README.
        'confirm_publish': True,
    }


@dataclasses.dataclass(frozen=True)
class Scheme:
    """What the broker of one URL scheme gets.

    ``transport`` and ``publisher`` are ``'module:name'`` strings, imported
    only when chosen (the Redis ones need the redis extra).
    """
    #: Our kombu transport class; None: the one kombu picks for the scheme.
    transport: str = None
    #: ``settings -> dict`` of transport options.
    options: object = _no_options
    #: Each consumer slot (``scheduler.processes``) keeps its unacknowledged
    #: messages under keys of its own (transports/redis/channel.py).
    slots: bool = False
    #: ``settings -> publisher or None``: one that writes a message without
    #: kombu (producer.py falls back to kombu whenever it declines or fails).
    publisher: str = None


SCHEMES = types.MappingProxyType({
    # kombu's Redis transport, without its window for losing a message
    # taken by a consumer that dies (see transports/redis/channel.py).
    'redis': Scheme(transport=f'{_REDIS}.channel:Transport',
                    options=_redis_options, slots=True,
                    publisher=f'{_REDIS}.publish:publisher_for'),
    # kombu's own: its TLS defaults derive from the scheme. Its transport
    # understands our slots' ``unacked`` keys too.
    'rediss': Scheme(options=_redis_options, slots=True),
    'redis+socket': Scheme(options=_redis_options),
    # kombu's py-amqp transport (RabbitMQ), with publisher confirms.
    'amqp': Scheme(options=_amqp_options),
    'amqps': Scheme(options=_amqp_options),
    'pyamqp': Scheme(options=_amqp_options),
})
#: Any other URL: kombu's transport, kombu's options.
OTHER = Scheme()


def scheme_of(url):
    """The lower-case scheme of ``url`` (of its first URL, for kombu's
    failover form ``url1;url2``)."""
    return str(url).split(':', 1)[0].lower()


def scheme_for(settings):
    """The :class:`Scheme` of the configured broker (not the embedded one)."""
    return SCHEMES.get(scheme_of(settings.broker_url), OTHER)


def transport_options(settings):
    """Options that bound every wait, so no request blocks forever."""
    if settings.embedded:
        return _embedded_options(settings)
    return scheme_for(settings).options(settings)


def connect(settings, consumer_slot=0, consumer_instance=None, **kwargs):
    """A new, not yet connected kombu Connection to the configured broker.

    ``consumer_instance`` (:func:`consumer_instance`): the consuming
    process; on Redis each one records its unacknowledged messages apart,
    so that only a dead one's are put back (transports/redis/instances.py).
    ``consumer_slot``: the numbered slot's keys of a version before
    instances, without an instance.
    """
    options = dict(transport_options(settings))
    options.update(kwargs.pop('transport_options', {}))
    if settings.embedded:
        ensure_embedded_database(settings.database_path)
        return kombu.Connection(settings.broker_url,
                                transport=SQLiteTransport,
                                transport_options=options, **kwargs)
    scheme = scheme_for(settings)
    if scheme.transport is not None:
        kwargs.setdefault('transport', _load(scheme.transport))
    if scheme.slots and consumer_instance:
        options.update(
            _redis_module('channel').instance_options(consumer_instance))
    elif scheme.slots:
        options.update(_redis_module('channel').slot_options(consumer_slot))
    return kombu.Connection(settings.broker_url, transport_options=options,
                            connect_timeout=max(settings.send_timeout, 0.5),
                            **kwargs)


def direct_publisher(settings):
    """The publisher that skips kombu for this broker, or None.

    Only a plain ``redis://`` URL has one (transports/redis/publish.py).
    """
    if settings.embedded:
        return None
    scheme = scheme_for(settings)
    if scheme.publisher is None:
        return None
    return _load(scheme.publisher)(settings)


def warn_if_volatile(settings):
    """Once at start: a WARNING if the broker reports that it would lose
    the messages it accepted when killed (a Redis without append-only; see
    redis/persistence.py). True if it warned. Other brokers write what
    they confirm (RabbitMQ: publisher confirms; SQLite: a commit)."""
    if settings.embedded or scheme_of(settings.broker_url) not in (
            'redis', 'rediss'):
        return False
    return _redis_module('persistence').warn_if_volatile(
        settings.broker_url, values.redact_url(settings.broker_url))


def ensure_embedded_database(path):
    """Create the embedded SQLite file and its tables, once, race-free.

    Several processes (web workers, pscheduler children) may start at the
    same moment: an exclusive file lock beside the database (``<path>.lock``)
    serializes that first setup (``CREATE TABLE IF NOT EXISTS`` of the
    transport's tables, WAL mode). Once per process and path.
    """
    ensure_database(path, SQLITE_BUSY_TIMEOUT)


# --- restores after a consumer died (Redis only; see redis/restore.py) ------

def restore_orphaned_messages(channel, queue_names, keep=()):
    """Put back the unacknowledged Redis messages of a dead consumer of
    ``queue_names`` (but the delivery tags in ``keep``); 0 elsewhere: other
    transports return unacknowledged messages by themselves."""
    if not is_redis(channel):
        return 0
    return _redis_module('restore').restore_orphaned_messages(
        channel, queue_names, keep)


def restore_fetched_messages(channel, queue_names):
    """Put back the Redis messages a dead consumer fetched but never
    recorded as unacknowledged; 0 elsewhere."""
    if not is_redis(channel):
        return 0
    return _redis_module('restore').restore_fetched(channel, queue_names)


def restore_removed_slots(channel, first_removed):
    """Put back the Redis messages left by processes of slots that no
    longer exist; 0 elsewhere."""
    if not is_redis(channel):
        return 0
    return _redis_module('restore').restore_removed_slots(channel,
                                                          first_removed)


def consumer_instance(settings):
    """A new id for a consuming process on a broker that records
    unacknowledged messages per process (Redis), else None."""
    if settings.embedded or not scheme_for(settings).slots:
        return None
    return _redis_module('instances').new_instance_id()


def alive_key(instance, channel, queue_names):
    """A not yet started thread keeping ``instance`` known alive in Redis
    (``channel()``: the consumer's current channel; ``queue_names``: the
    queues it fetches from)."""
    return _redis_module('instances').AliveKey(instance, channel,
                                               queue_names)


def restore_dead_instances(channel, own_instance=None):
    """Put back the Redis messages of consumer processes that are gone
    (their liveness key expired); 0 elsewhere."""
    if not is_redis(channel):
        return 0
    return _redis_module('restore').restore_dead_instances(channel,
                                                           own_instance)


def other_hosts_fetching(channel, queue_names):
    """Other hosts whose live consumers fetch from ``queue_names``: known
    on Redis (its registry of consumer instances), an empty set elsewhere."""
    if not is_redis(channel):
        return set()
    with channel.conn_or_acquire() as client:
        return _redis_module('instances').other_hosts_fetching(client,
                                                               queue_names)


def restore_legacy_slots(channel, queue_names):
    """Put back the Redis messages of ``queue_names`` left under the
    numbered slots' keys of a version before instances; 0 elsewhere."""
    if not is_redis(channel):
        return 0
    return _redis_module('restore').restore_legacy_slots(channel,
                                                         queue_names)


def is_redis(channel):
    """True for a channel of kombu's Redis transport or ours.

    Asked of the connection, not by ``isinstance``: without the redis extra
    no channel can be one, and the Redis modules must not be imported.
    """
    connection = getattr(channel, 'connection', None)
    return getattr(connection, 'driver_type', None) == 'redis'


def _redis_module(name):
    return importlib.import_module(f'{_REDIS}.{name}')


def _load(reference):
    module, name = reference.split(':')
    return getattr(importlib.import_module(module), name)
