"""Shim: broker plumbing moved to ``pyramid_scheduler.naming`` (queue names
and kombu ``Queue`` builders) and ``pyramid_scheduler.transports`` (connect,
transport options, the embedded database, the Redis restores).

This module re-exports those names for one release, for the modules and
tests that still import ``pyramid_scheduler.broker``. ``redact_url`` still
lives here for now. Importing it imports no Redis module.
"""
import urllib.parse

from .naming import (
    admin_queue, admin_queue_name, dead_letter_queue, dead_letter_queue_name,
    job_queue, kombu_queue, queue_name, reply_queue, reply_queue_name,
    store_queue, store_queue_name)
from .transports import (
    SQLITE_BUSY_TIMEOUT, connect, ensure_embedded_database,
    restore_fetched_messages, restore_orphaned_messages,
    restore_removed_slots, transport_options)
from .transports.sqlite import SQLiteTransport as EmbeddedTransport

__all__ = [
    'EmbeddedTransport', 'SQLITE_BUSY_TIMEOUT', 'admin_queue',
    'admin_queue_name', 'connect', 'dead_letter_queue',
    'dead_letter_queue_name', 'ensure_embedded_database', 'job_queue',
    'kombu_queue', 'queue_name', 'redact_url', 'reply_queue',
    'reply_queue_name', 'restore_fetched_messages',
    'restore_orphaned_messages', 'restore_removed_slots', 'store_queue',
    'store_queue_name', 'transport_options',
]


def redact_url(url):
    """The URL with any password replaced, fit for logs and errors.

    kombu's failover form ``url1;url2`` has each of its URLs redacted.
    """
    if ';' in str(url):
        return ';'.join(redact_url(part) for part in str(url).split(';'))
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return '<unparseable url>'
    if password is None:
        return url
    netloc = parts.netloc.replace(f':{password}@', ':***@', 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
