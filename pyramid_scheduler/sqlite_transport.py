"""Shim: the embedded SQLite transport moved to
``pyramid_scheduler.transports.sqlite``.

Kept so that ``kombu.Connection(url, transport=SQLiteTransport)`` with
``from pyramid_scheduler.sqlite_transport import SQLiteTransport`` (or
``Transport``), as documented before the package existed, keeps working, and
so do the modules that still import this path. New code imports from
``pyramid_scheduler.transports.sqlite`` (or its modules: database, leases,
wakeups, channel, transport).
"""
from .transports.sqlite.channel import LEASE_BATCH, Channel
from .transports.sqlite.database import (
    BUSY_TIMEOUT, HAS_RETURNING, MESSAGE_TABLE, QUEUE_TABLE, SCHEMA,
    Database, ensure_database, path_from_url)
from .transports.sqlite.leases import (
    STALE_QUEUE_AGE, VISIBILITY_TIMEOUT, housekeeping, owner_alive, reclaim)
from .transports.sqlite.queues import MAX_SETTLED
from .transports.sqlite.transport import (
    POLLING_INTERVAL, RECLAIM_INTERVAL, SQLiteTransport, Transport)
from .transports.sqlite.wakeups import (
    WakeBox, queue_key, remove_stale_sockets, wake_directory)

__all__ = [
    'BUSY_TIMEOUT', 'Channel', 'Database', 'HAS_RETURNING', 'LEASE_BATCH',
    'MAX_SETTLED', 'MESSAGE_TABLE', 'POLLING_INTERVAL', 'QUEUE_TABLE',
    'RECLAIM_INTERVAL', 'SCHEMA', 'SQLiteTransport', 'STALE_QUEUE_AGE',
    'Transport', 'VISIBILITY_TIMEOUT', 'WakeBox', 'ensure_database',
    'housekeeping', 'owner_alive', 'path_from_url', 'queue_key', 'reclaim',
    'remove_stale_sockets', 'wake_directory',
]
