"""The commit spool: messages of committed transactions, kept on disk until
the broker has them.

A job added inside a transaction (pyramid_tm, or the ``transaction``
package's explicit mode) must go out if and only if the transaction
commits, even when the broker is down at that moment and the web process
exits before it is back. So the message is written to this spool, an SQLite
file on the web host (``scheduler.outbox.path``), as part of the commit
(spooltxn.SpoolDataManager: the vote writes, the finish publishes and
removes), and whoever publishes it removes it. What the commit could not
publish is published as soon as the broker is back, by a retry thread of
the web process or by the pscheduler daemon of the host (its store-owning
children drain the spool), whichever comes first; each entry is claimed
before it is published, so two drainers do not both send it. An entry not
published within ``scheduler.outbox.retry_for`` goes to the spool's
``dead`` table, with an ERROR: never silence.

A crash between the publish and the removal sends an entry twice: every
copy carries the entry's id and a token of its own (headers below), and the
consumer runs an entry once (runtime/received.py).

The settings call it "the outbox", as the pattern is known; the module is
named "spool" so as not to be confused with runtime/outbox.py, which sends
the runtime's own dead letters, pass-ons and replies.
"""
import dataclasses
import logging
import os
import sqlite3
import threading
import time
import uuid

from . import codec, naming, signing

log = logging.getLogger(__name__)

# Headers of a message sent from the spool: the entry (one per message
# added) and this copy of it (one per publish). Old consumers ignore them.
ENTRY_HEADER = 'x-pscheduler-spool-entry'
COPY_HEADER = 'x-pscheduler-spool-copy'
DEFAULT_FILE_NAME = 'pscheduler-outbox.sqlite'
# Entries claimed and published in one go by a drain.
DRAIN_BATCH = 100

SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    entry TEXT PRIMARY KEY, routing_key TEXT NOT NULL, payload BLOB NOT NULL,
    content_type TEXT NOT NULL, content_encoding TEXT NOT NULL,
    created REAL NOT NULL, claimed_by INTEGER NOT NULL DEFAULT 0,
    claimed_until REAL NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT);
CREATE TABLE IF NOT EXISTS dead (
    entry TEXT PRIMARY KEY, routing_key TEXT NOT NULL, payload BLOB NOT NULL,
    content_type TEXT NOT NULL, content_encoding TEXT NOT NULL,
    created REAL NOT NULL, dead_at REAL NOT NULL, attempts INTEGER NOT NULL,
    reason TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS pending_by_age ON pending (created);
"""


def spool_path(settings):
    """``scheduler.outbox.path``, by default beside the embedded database
    (itself beside the ini): the web app and the daemon of a host find it."""
    if settings.outbox_path:
        return os.path.abspath(os.path.expanduser(settings.outbox_path))
    return os.path.join(os.path.dirname(settings.database_path),
                        DEFAULT_FILE_NAME)


@dataclasses.dataclass(slots=True)
class SpoolEntry:
    """One message to send: its encoded payload and its queue."""
    entry: str
    routing_key: str
    payload: object
    content_type: str
    content_encoding: str
    created: float
    attempts: int = 0

    @classmethod
    def of(cls, settings, body, routing_key):
        payload, content_type, encoding, _ = codec.encode(settings, body)
        return cls(uuid.uuid4().hex, routing_key, payload, content_type,
                   encoding, time.time())

    def row(self):
        return (self.entry, self.routing_key, self.payload, self.content_type,
                self.content_encoding, self.created)

    def message(self, settings):
        """``(payload, content_type, encoding, headers)`` of a new copy,
        signed now: a signature's age counts from the publish, so an entry
        that waited for the broker is no replay."""
        headers = {ENTRY_HEADER: self.entry, COPY_HEADER: uuid.uuid4().hex}
        if settings.secrets:
            headers[signing.HEADER] = signing.sign(
                settings.secrets[0], self.payload, self.content_type,
                self.content_encoding)
        return (self.payload, self.content_type, self.content_encoding,
                headers)


class Spool:
    """The spool file. One connection per thread and process, kept open:
    opening one and closing it (which checkpoints the WAL) costs ten times
    the write. A connection made before a fork is never used, nor closed,
    after it."""

    def __init__(self, path, claim_seconds=60.0):
        self.path = path
        self.claim_seconds = claim_seconds
        self._local = threading.local()

    def exists(self):
        return os.path.exists(self.path)

    def _connect(self):
        connections = getattr(self._local, 'connections', None)
        if connections is None:
            connections = self._local.connections = {}
        connection = connections.get(os.getpid())
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30,
                                         isolation_level=None)
            connection.execute('PRAGMA journal_mode=WAL')
            connections[os.getpid()] = connection
        return connection

    def _transaction(self, work, durable=False):
        """``work(connection)`` in one write transaction. ``durable``: on
        disk before this returns (a vote); the rest (removals, claims) may
        be lost in a power cut, which only sends an entry again."""
        connection = self._connect()
        connection.execute('PRAGMA synchronous=%s'
                           % ('FULL' if durable else 'NORMAL'))
        connection.execute('BEGIN IMMEDIATE')
        try:
            result = work(connection)
        except BaseException:
            connection.execute('ROLLBACK')
            raise
        connection.execute('COMMIT')
        return result

    def write(self, entries):
        """Keep ``entries`` durably, claimed by this process (which is
        about to publish them)."""
        if not getattr(self._local, 'schema', False):
            os.makedirs(os.path.dirname(self.path) or '.', exist_ok=True)
            self._connect().executescript(SCHEMA)
            self._local.schema = True
        until = time.time() + self.claim_seconds
        self._transaction(lambda c: c.executemany(
            'INSERT INTO pending (entry, routing_key, payload, content_type, '
            'content_encoding, created, claimed_by, claimed_until) '
            'VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
            [e.row() + (os.getpid(), until) for e in entries]),
            durable=True)

    def remove(self, entries):
        self._transaction(lambda c: c.executemany(
            'DELETE FROM pending WHERE entry = ?',
            [(e.entry,) for e in entries]))

    def release(self, entries, error):
        """Published none of ``entries``: any drainer may take them now."""
        self._transaction(lambda c: c.executemany(
            'UPDATE pending SET claimed_by = 0, claimed_until = 0, '
            'attempts = attempts + 1, last_error = ? WHERE entry = ?',
            [(error[:1000], e.entry) for e in entries]))

    def claim(self, limit=DRAIN_BATCH):
        """Up to ``limit`` entries nobody is publishing (unclaimed, claimed
        past its time, or by a process that is gone), now claimed by us."""
        def work(connection):
            now = time.time()
            gone = [(pid,) for (pid,) in connection.execute(
                'SELECT DISTINCT claimed_by FROM pending '
                'WHERE claimed_until >= ?', (now,)) if not _alive(pid)]
            connection.executemany('UPDATE pending SET claimed_until = 0 '
                                   'WHERE claimed_by = ?', gone)
            taken = [SpoolEntry(*row) for row in connection.execute(
                'SELECT entry, routing_key, payload, content_type, '
                'content_encoding, created, attempts FROM pending '
                'WHERE claimed_until < ? ORDER BY created LIMIT ?',
                (now, limit))]
            connection.executemany(
                'UPDATE pending SET claimed_by = ?, claimed_until = ? '
                'WHERE entry = ?', [(os.getpid(), now + self.claim_seconds,
                                     e.entry) for e in taken])
            return taken
        if not self.exists():
            return []
        return self._transaction(work)

    def bury(self, entry, reason):
        """Move ``entry`` to the ``dead`` table."""
        def work(connection):
            connection.execute(
                'INSERT OR REPLACE INTO dead (entry, routing_key, payload, '
                'content_type, content_encoding, created, dead_at, attempts, '
                'reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
                entry.row() + (time.time(), entry.attempts, reason))
            connection.execute('DELETE FROM pending WHERE entry = ?',
                               (entry.entry,))
        self._transaction(work, durable=True)

    def count(self, table='pending'):
        if not self.exists():
            return 0
        return self._connect().execute(
            f'SELECT count(*) FROM {table}').fetchone()[0]

    def dead_letters(self):
        """The dead entries, oldest first: ``(entry, routing_key, reason)``
        (for an operator, and the tests)."""
        if not self.exists():
            return []
        return self._connect().execute(
            'SELECT entry, routing_key, reason FROM dead '
            'ORDER BY dead_at').fetchall()


def _alive(pid):
    """Whether process ``pid`` of this host still runs (the spool is a
    local file: its claimers are local processes)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish_entries(settings, spool, producer, entries):
    """Publish ``entries`` in order, then remove those sent (in one write:
    a crash before it sends them again, and the consumer drops the second
    copies); the first broker error releases the rest (the broker is down:
    each would wait ``send_timeout`` again). True if all went out."""
    sent, queues = 0, {}
    try:
        for entry in entries:
            key = entry.routing_key
            if key not in queues:
                # Building a kombu Queue costs more than the publish.
                queues[key] = [naming.kombu_queue(key)]
            producer.publish_encoded(entry.message(settings), key,
                                     declare=queues[key])
            sent += 1
    except Exception as exc:
        spool.release(entries[sent:], f'{type(exc).__name__}: {exc}')
        log.warning('could not send %d message(s) of the outbox %s yet '
                    '(%s: %s); they are kept and will be sent when the '
                    'broker is back', len(entries) - sent, spool.path,
                    type(exc).__name__, exc)
    finally:
        if sent:
            spool.remove(entries[:sent])
    return sent == len(entries)


def drain(settings, spool, producer):
    """Send what the spool holds and nobody is sending, burying what is
    past ``scheduler.outbox.retry_for``. True if the spool is now empty of
    what we could take (the broker took everything we tried)."""
    while True:
        entries = spool.claim()
        if not entries:
            return True
        horizon = time.time() - settings.outbox_retry_for
        live = []
        for entry in entries:
            if entry.created < horizon:
                _bury(settings, spool, entry)
            else:
                live.append(entry)
        if not publish_entries(settings, spool, producer, live):
            return False


def _bury(settings, spool, entry):
    reason = (f'not sent within scheduler.outbox.retry_for '
              f'({settings.outbox_retry_for:g}s) after its transaction '
              f'committed, {entry.attempts} attempt(s)')
    spool.bury(entry, reason)
    log.error('gave up sending a message to %s (outbox entry %s): %s; it is '
              'kept in the "dead" table of %s', entry.routing_key, entry.entry,
              reason, spool.path)


class SpoolDrainer:
    """A thread that drains the spool, started on demand in this process.

    The web process starts one when a commit could not publish (``until
    empty``: it ends once the spool is empty); the pscheduler child that
    owns a queue's job store runs one while it serves, polling the file.
    Started lazily, never at import, so no thread crosses a fork; a
    drainer made before a fork is restarted by its first use after it.
    """

    def __init__(self, settings, producer_factory, interval=2.0,
                 until_empty=True):
        self.settings = settings
        self.spool = Spool(spool_path(settings),
                           claim_seconds=max(60.0, 10 * settings.send_timeout))
        self._producer_factory = producer_factory
        self.interval = interval
        self.until_empty = until_empty
        self._lock = threading.Lock()
        self._thread = None
        self._pid = None
        self._stop = threading.Event()
        self._resumed_pid = None

    def ensure_running(self):
        with self._lock:
            if self._pid == os.getpid() and self._thread.is_alive():
                return
            self._pid = os.getpid()
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, name='pscheduler-outbox', daemon=True)
            self._thread.start()

    def resume_once(self):
        """On this process' first call: drain what an earlier process left
        unsent (a web process that exited, no daemon on this host)."""
        if self._resumed_pid == os.getpid():
            return
        self._resumed_pid = os.getpid()
        try:
            left = self.spool.count()
        except sqlite3.Error:
            log.exception('cannot read the outbox %s', self.spool.path)
            return
        if left:
            self.ensure_running()

    def stop(self, timeout=5.0):
        self._stop.set()
        thread = self._thread
        if thread is not None and self._pid == os.getpid():
            thread.join(timeout)

    def _run(self):
        stop, producer = self._stop, None
        try:
            while not stop.is_set():
                if self.spool.exists():
                    producer = producer or self._producer_factory()
                    if self._drain_once(producer) and self.until_empty and \
                            not self.spool.count():
                        return
                stop.wait(self.interval)
        finally:
            if producer is not None:
                producer.close()

    def _drain_once(self, producer):
        try:
            return drain(self.settings, self.spool, producer)
        except Exception:
            log.exception('draining the outbox %s failed; trying again in '
                          '%gs', self.spool.path, self.interval)
            return False
