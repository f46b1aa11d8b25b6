"""Shim: broker plumbing moved to ``pyramid_scheduler.naming`` (queue names
and kombu ``Queue`` builders) and ``pyramid_scheduler.transports`` (connect,
transport options, the embedded database, the Redis restores).

This module re-exports those names for one release, for the modules and
tests that still import ``pyramid_scheduler.broker``; ``redact_url`` lives
in ``pyramid_scheduler.values``. Importing it imports no Redis module.
"""
from .naming import (
    admin_queue, admin_queue_name, dead_letter_queue, dead_letter_queue_name,
    job_queue, kombu_queue, queue_name, reply_queue, reply_queue_name,
    store_queue, store_queue_name)
from .transports import (
    SQLITE_BUSY_TIMEOUT, connect, ensure_embedded_database,
    restore_fetched_messages, restore_orphaned_messages,
    restore_removed_slots, transport_options)
from .transports.sqlite import SQLiteTransport as EmbeddedTransport
from .values import redact_url

__all__ = [
    'EmbeddedTransport', 'SQLITE_BUSY_TIMEOUT', 'admin_queue',
    'admin_queue_name', 'connect', 'dead_letter_queue',
    'dead_letter_queue_name', 'ensure_embedded_database', 'job_queue',
    'kombu_queue', 'queue_name', 'redact_url', 'reply_queue',
    'reply_queue_name', 'restore_fetched_messages',
    'restore_orphaned_messages', 'restore_removed_slots', 'store_queue',
    'store_queue_name', 'transport_options',
]
