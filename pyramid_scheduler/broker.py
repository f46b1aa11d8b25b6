"""Broker plumbing: connections, queue names, the embedded SQLite default.

Nothing here is created at import time; every function builds what it needs
when called, in the process that calls it, so nothing crosses a fork.
"""
import contextlib
import fcntl
import logging
import os
import sqlite3
import urllib.parse

import kombu
from kombu.transport import sqlalchemy as kombu_sqlalchemy

log = logging.getLogger(__name__)

# Seconds a SQLite connection waits for another process' write lock.
SQLITE_BUSY_TIMEOUT = 30


class EmbeddedTransport(kombu_sqlalchemy.Transport):
    """kombu's SQLAlchemy transport, tuned for the embedded SQLite file.

    Its polling interval comes from ``scheduler.broker.polling_interval``
    (kombu's default of one second makes a job wait half a second on average).
    """

    class Channel(kombu_sqlalchemy.Channel):
        # kombu caches engines in a class attribute keyed by URL; keep ours
        # per process so that no SQLite connection crosses a fork.
        _engines_pid = None

        def _open(self):
            if EmbeddedTransport.Channel._engines_pid != os.getpid():
                EmbeddedTransport.Channel._engines = {}
                EmbeddedTransport.Channel._engines_pid = os.getpid()
            return super()._open()


def queue_name(settings, queue):
    return f'{settings.scheduler_id}.{queue}'


def admin_queue_name(settings, queue):
    return f'{settings.scheduler_id}.{queue}.admin'


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


def dead_letter_queue(settings, queue):
    return kombu_queue(dead_letter_queue_name(settings, queue))


def redact_url(url):
    """The URL with any password replaced, fit for logs and errors."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return '<unparseable url>'
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f':{parts.password}@', ':***@', 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def transport_options(settings):
    """Options that bound every wait, so no request blocks forever."""
    if settings.embedded:
        return {'connect_args': {'timeout': SQLITE_BUSY_TIMEOUT}}
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


def connect(settings, **kwargs):
    """A new, not yet connected kombu Connection to the configured broker."""
    options = dict(transport_options(settings))
    options.update(kwargs.pop('transport_options', {}))
    if settings.embedded:
        ensure_embedded_database(settings.database_path)
        return kombu.Connection(settings.broker_url,
                                transport=EmbeddedTransport,
                                transport_options=options, **kwargs)
    connect_timeout = max(settings.send_timeout, 0.5)
    return kombu.Connection(settings.broker_url, transport_options=options,
                            connect_timeout=connect_timeout, **kwargs)


def polling_interval(settings):
    return settings.polling_interval if settings.embedded else None


@contextlib.contextmanager
def file_lock(path):
    with open(path, 'a+') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_prepared_databases = {}


def ensure_embedded_database(path):
    """Create the embedded SQLite file and its tables, once, race-free.

    Several processes (web workers, pscheduler children) may start at the
    same moment; SQLAlchemy's ``create_all`` is check-then-create, so two of
    them would both try ``CREATE TABLE``. An exclusive file lock beside the
    database serializes that first setup. WAL lets readers and the writer
    proceed together.
    """
    if _prepared_databases.get(path) == os.getpid():
        return
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    with file_lock(path + '.lock'):
        connection = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT)
        try:
            connection.execute('PRAGMA journal_mode=WAL')
        finally:
            connection.close()
        probe = kombu.Connection('sqla+sqlite:///' + path,
                                 transport=EmbeddedTransport,
                                 transport_options={'connect_args': {
                                     'timeout': SQLITE_BUSY_TIMEOUT}})
        try:
            probe.default_channel.session  # creates kombu's tables
        finally:
            probe.release()
    _prepared_databases[path] = os.getpid()


def restore_orphaned_messages(channel, queue_names):
    """Put back the unacknowledged Redis messages of a dead consumer.

    kombu's Redis transport keeps every delivered, unacknowledged message in
    one hash and restores it only after the visibility timeout (an hour by
    default). A runtime that starts holds the only lock on its queues, so any
    message of those queues still in that hash belongs to a consumer that
    died: restoring them at start makes a crashed child's jobs run again
    within a second instead of an hour. Other transports return unacked
    messages by themselves; this is a no-op for them.
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
        try:
            _, _, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        if routing_key in queue_names:
            qos.restore_by_tag(tag.decode() if isinstance(tag, bytes)
                               else tag, leftmost=True)
            restored += 1
    if restored:
        log.warning('restored %d unacknowledged message(s) of a previous '
                    'consumer of %s', restored, ', '.join(sorted(queue_names)))
    return restored
