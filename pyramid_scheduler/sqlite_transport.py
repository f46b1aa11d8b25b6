"""A kombu transport on one SQLite file, for the embedded default.

Messages live in the table ``pscheduler_message`` of the same SQLite file as
the APScheduler job stores; any number of processes on one machine publish
and consume through it. What it guarantees:

At-least-once delivery
    Receiving a message *leases* its row (``lease_token`` and the owner's
    node, pid and process start time); ``ack`` deletes the row (if the lease
    is still ours); ``reject(requeue=True)``, closing the channel and a
    consumer that stops make the row visible again in place (same id, so it
    stays first in line and is never duplicated). A consumer leases as many
    rows as its prefetch window allows (up to ``LEASE_BATCH``) in one
    statement and delivers them all in one ``drain_events``;
    ``Channel.basic_ack_many`` deletes a consumer turn's acknowledged rows
    in one statement too. A consumer that dies without a word (SIGKILL, OOM,
    power cut of a container) leaves leased rows behind: every consumer
    reclaims, when it starts and every few seconds, the rows whose owner
    process is gone (pid not alive, or alive with another start time), and
    rows leased longer ago than the visibility timeout (a hung owner, or one
    in another pid namespace whose liveness cannot be checked).

Low latency without polling
    Each consumed queue binds a unix datagram socket in a directory beside
    the database (``<db>.wake/<queue hash>.<pid>.<random>.sock``). A producer,
    once its insert is committed, sends one byte to every socket of that
    queue; a waiting consumer sleeps in ``poll()`` on its sockets and queries
    the database only when woken, after a delivery (there may be more), when
    an ack frees prefetch room, and every ``polling_interval`` seconds as a
    fallback against a lost wake-up. An idle consumer costs one indexed
    ``SELECT`` per queue per fallback interval.

Multi-process safety
    WAL journal (readers never block the writer), a 30 s busy timeout, every
    statement its own short transaction (no read transaction is ever upgraded
    to a write, the classic cause of an immediate "database is locked"),
    tables created once under an ``flock``, and nothing crosses a fork: the
    SQLite connection, the wake-up sockets and the lease identity are made
    lazily and re-made when ``os.getpid()`` changes.

Use::

    kombu.Connection('sqlite:///' + path, transport=SQLiteTransport)

(the SQLAlchemy convention: ``sqlite:////abs/path`` for an absolute path).
Transport options: ``polling_interval`` (fallback poll, default 2 s),
``busy_timeout`` (30 s), ``visibility_timeout`` (1 h), ``reclaim_interval``
(5 s), ``synchronous`` (``NORMAL``: durable across process crashes; use
``FULL`` to survive power loss too, at a few milliseconds per message).
``interrupt()`` makes a ``drain_events`` waiting in another thread return
(``socket.timeout``) at once. Fanout exchanges and priorities are not
supported. Same machine only: wake-ups and liveness checks are local (other
hosts on a shared file would get the fallback poll and the visibility
timeout), and SQLite on a network file system is unsafe anyway.
"""
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import select
import socket
import sqlite3
import tempfile
import threading
import time
import uuid
from queue import Empty

from kombu.transport import virtual

log = logging.getLogger(__name__)

MESSAGE_TABLE = 'pscheduler_message'
QUEUE_TABLE = 'pscheduler_queue'

BUSY_TIMEOUT = 30.0
POLLING_INTERVAL = 2.0
RECLAIM_INTERVAL = 5.0
VISIBILITY_TIMEOUT = 3600.0
# Auto-delete queues (command replies) idle this long are dropped by
# housekeeping with whatever is left in them.
STALE_QUEUE_AGE = 86400.0
# The most rows one consumer leases in one statement (its prefetch window
# permitting): what it delivers in one drain_events.
LEASE_BATCH = 100
# Row ids per acknowledging statement (SQLite before 3.32 allows 999
# parameters).
MAX_SETTLED = 500

HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)

# The longest AF_UNIX path is 107 bytes; the socket names are at most 40.
_MAX_WAKE_DIR = 107 - 41

SCHEMA = (
    f'''CREATE TABLE IF NOT EXISTS {QUEUE_TABLE} (
        name TEXT PRIMARY KEY,
        auto_delete INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL
    )''',
    f'''CREATE TABLE IF NOT EXISTS {MESSAGE_TABLE} (
        id INTEGER PRIMARY KEY,
        queue TEXT NOT NULL,
        payload TEXT NOT NULL,
        created REAL NOT NULL,
        deliveries INTEGER NOT NULL DEFAULT 0,
        lease_token TEXT,
        lease_node TEXT,
        lease_pid INTEGER,
        lease_started REAL,
        leased_at REAL
    )''',
    # The ready rows of a queue in FIFO order: what every poll reads.
    f'''CREATE INDEX IF NOT EXISTS {MESSAGE_TABLE}_ready
        ON {MESSAGE_TABLE} (queue, id) WHERE lease_token IS NULL''',
    # The few leased rows: what a reclaim and a channel close read.
    f'''CREATE INDEX IF NOT EXISTS {MESSAGE_TABLE}_leased
        ON {MESSAGE_TABLE} (lease_token) WHERE lease_token IS NOT NULL''',
)

_UNLEASE = ('lease_token = NULL, lease_node = NULL, lease_pid = NULL, '
            'lease_started = NULL, leased_at = NULL')


# --- the database file -------------------------------------------------------

def path_from_url(url):
    """``sqlite:////abs/db`` -> ``/abs/db``; ``sqlite:///rel`` -> ``rel``."""
    if '://' not in url:
        return url
    rest = url.split('://', 1)[1]
    if not rest.startswith('/') or rest == '/':
        raise ValueError(f'not a SQLite URL: {url!r} (expected '
                         'sqlite:////absolute/path or '
                         'sqlite:///relative/path)')
    return rest[1:]


@contextlib.contextmanager
def _file_lock(path):
    with open(path, 'a+') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_prepared = {}
_prepare_lock = threading.Lock()


def ensure_database(path, busy_timeout=BUSY_TIMEOUT):
    """Create the SQLite file, WAL mode and our tables, once, race-free.

    Several processes (web workers, pscheduler children) may start at the
    same moment: an exclusive ``flock`` on ``<path>.lock`` serializes the
    first setup. Done once per process and path.
    """
    key = os.path.abspath(path)
    if _prepared.get(key) == os.getpid():
        return
    with _prepare_lock:
        if _prepared.get(key) == os.getpid():
            return
        os.makedirs(os.path.dirname(key) or '.', exist_ok=True)
        with _file_lock(key + '.lock'):
            db = sqlite3.connect(key, timeout=busy_timeout,
                                 isolation_level=None)
            try:
                db.execute('PRAGMA journal_mode=WAL')
                db.execute('BEGIN IMMEDIATE')
                try:
                    for statement in SCHEMA:
                        db.execute(statement)
                except BaseException:
                    db.execute('ROLLBACK')
                    raise
                db.execute('COMMIT')
            finally:
                db.close()
        _prepared[key] = os.getpid()


class Database:
    """One autocommit SQLite connection: every statement its own transaction.

    So no read transaction is ever upgraded to a write one (which fails at
    once with "database is locked" when another process wrote meanwhile, busy
    timeout or not), and every write lock is held for one statement only.
    """

    def __init__(self, path, busy_timeout=BUSY_TIMEOUT, synchronous='NORMAL'):
        if str(synchronous).upper() not in ('OFF', 'NORMAL', 'FULL',
                                            'EXTRA'):
            raise ValueError('synchronous must be OFF, NORMAL, FULL or '
                             f'EXTRA, not {synchronous!r}')
        self.connection = sqlite3.connect(path, timeout=busy_timeout,
                                          isolation_level=None,
                                          check_same_thread=False)
        self.statements = 0
        self.run(f'PRAGMA synchronous={synchronous}')

    def _execute(self, sql, params):
        self.statements += 1
        cursor = self.connection.execute(sql, params)
        return cursor, cursor.fetchall()

    def run(self, sql, params=()):
        """The rows of ``sql`` (a list, maybe empty)."""
        return self._execute(sql, params)[1]

    def change(self, sql, params=()):
        """The number of rows ``sql`` changed."""
        return self._execute(sql, params)[0].rowcount

    def close(self):
        self.connection.close()


# --- who holds a lease -------------------------------------------------------

_identity = (None, None)


def _node():
    """This host and pid namespace: where a pid means the same process."""
    try:
        namespace = os.readlink('/proc/self/ns/pid')
    except OSError:
        namespace = ''
    return f'{socket.gethostname()}/{namespace}'


def identity():
    """``(node, pid, process start time)`` of this process."""
    global _identity
    pid = os.getpid()
    if _identity[0] != pid:
        import psutil
        started = round(psutil.Process(pid).create_time(), 3)
        _identity = (pid, (_node(), pid, started))
    return _identity[1]


def owner_alive(node, pid, started):
    """True, False, or None when this process cannot tell (other node)."""
    if node != identity()[0]:
        return None
    import psutil
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - started) > 0.01:
            return False  # the pid was reused
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def reclaim(db, visibility_timeout=VISIBILITY_TIMEOUT, exclude_token=None):
    """Make visible again the rows leased by dead or expired owners.

    Returns ``{queue: count}`` of the rows made visible. ``db`` is an
    autocommit connection; the read is one indexed query over leased rows
    only (a handful), so this is cheap to call every few seconds.
    """
    owners = db.run(
        f'SELECT lease_node, lease_pid, lease_started, MIN(leased_at) '
        f'FROM {MESSAGE_TABLE} WHERE lease_token IS NOT NULL '
        f'GROUP BY lease_node, lease_pid, lease_started')
    reclaimed = {}
    if not owners:
        return reclaimed
    now = time.time()
    for node, pid, started, oldest in owners:
        alive = owner_alive(node, pid, started)
        expired = (visibility_timeout and oldest is not None
                   and now - oldest > visibility_timeout)
        if alive is not False and not expired:
            continue
        where = ('lease_node IS ? AND lease_pid IS ? AND lease_started IS ? '
                 'AND lease_token IS NOT NULL')
        params = [node, pid, started]
        if alive is not False:  # only the expired rows of a live owner
            where += ' AND leased_at < ?'
            params.append(now - visibility_timeout)
        if exclude_token is not None:
            where += ' AND lease_token != ?'
            params.append(exclude_token)
        rows = db.run(f'UPDATE {MESSAGE_TABLE} SET {_UNLEASE} '
                      f'WHERE {where} RETURNING queue'
                      if HAS_RETURNING else
                      f'SELECT queue FROM {MESSAGE_TABLE} WHERE {where}',
                      params)
        if not HAS_RETURNING and rows:
            db.run(f'UPDATE {MESSAGE_TABLE} SET {_UNLEASE} '
                   f'WHERE {where}', params)
        for (queue,) in rows:
            reclaimed[queue] = reclaimed.get(queue, 0) + 1
        if rows:
            why = ('its lease is older than the visibility timeout '
                   f'({visibility_timeout:g}s)' if alive is not False
                   else 'the process that received it is gone')
            log.warning('made %d unacknowledged message(s) of pid %s on %s '
                        'visible again: %s', len(rows), pid, node, why)
    return reclaimed


def housekeeping(path, visibility_timeout=VISIBILITY_TIMEOUT,
                 stale_queue_age=STALE_QUEUE_AGE,
                 busy_timeout=BUSY_TIMEOUT):
    """Reclaim abandoned leases and drop stale reply queues.

    Acknowledged messages are deleted at once, so there is nothing consumed
    to clean. What can pile up: leases of consumers that died while nobody
    consumed their queue since, and auto-delete queues (command replies)
    whose sender gave up before the reply came. Returns the number of
    message rows deleted.
    """
    ensure_database(path, busy_timeout)
    db = Database(path, busy_timeout)
    try:
        reclaimed = reclaim(db, visibility_timeout)
        cutoff = time.time() - stale_queue_age
        stale = [name for (name,) in db.run(
            f'SELECT name FROM {QUEUE_TABLE} '
            f'WHERE auto_delete AND created < ?', (cutoff,))]
        deleted = 0
        for name in stale:
            deleted += db.change(
                f'DELETE FROM {MESSAGE_TABLE} WHERE queue = ?', (name,))
            db.run(f'DELETE FROM {QUEUE_TABLE} WHERE name = ?', (name,))
        remove_stale_sockets(wake_directory(path))
        if reclaimed or stale:
            log.info('embedded broker housekeeping: %d message(s) made '
                     'visible again, %d stale reply queue(s) dropped with '
                     '%d message(s)', sum(reclaimed.values()), len(stale),
                     deleted)
        return deleted
    finally:
        db.close()


# --- wake-ups ----------------------------------------------------------------

def wake_directory(path):
    """Where the wake-up sockets of the database ``path`` live.

    Beside the database when the socket paths fit in AF_UNIX's 107 bytes,
    else in the temporary directory under a name derived from the database's
    real path (every process computes the same).
    """
    real = os.path.realpath(path)
    beside = real + '.wake'
    if len(os.fsencode(beside)) <= _MAX_WAKE_DIR:
        return beside
    digest = hashlib.sha1(os.fsencode(real)).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f'pscheduler-wake-{digest}')


def queue_key(queue):
    return hashlib.sha1(queue.encode('utf-8')).hexdigest()[:12]


class WakeBox:
    """The wake-up sockets of one transport, in one process.

    ``listen(queue)`` binds a datagram socket for ``queue``; ``notify(queue)``
    sends one byte to every socket bound for ``queue`` by anyone;
    ``wait(timeout)`` sleeps until one of ours (or ``interrupt()``) is
    signalled. Every failure degrades to the fallback poll, never to an error.
    """

    LISTING_MAX_AGE = 1.0

    def __init__(self, directory):
        self.directory = directory
        self.pid = os.getpid()
        self._sockets = {}  # queue -> (socket, path, refcount)
        self._lock = threading.Lock()
        self._sender = None
        self._listing = None  # (mtime_ns, monotonic, names)
        self._poller = None
        self._pipe = None
        self._warned = False

    def _setup_waiting(self):
        if self._poller is None:
            self._pipe = os.pipe()
            for fd in self._pipe:
                os.set_blocking(fd, False)
            self._poller = select.poll()
            self._poller.register(self._pipe[0], select.POLLIN)
        return self._poller

    # consumer side
    def listen(self, queue):
        with self._lock:
            entry = self._sockets.get(queue)
            if entry is not None:
                self._sockets[queue] = (entry[0], entry[1], entry[2] + 1)
                return
            name = f'{queue_key(queue)}.{self.pid}.{uuid.uuid4().hex[:8]}.sock'
            path = os.path.join(self.directory, name)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                os.makedirs(self.directory, exist_ok=True)
                sock.setblocking(False)
                sock.bind(path)
            except OSError as exc:
                sock.close()
                if not self._warned:
                    self._warned = True
                    log.warning('cannot bind a wake-up socket in %s (%s): '
                                'consumers will poll instead',
                                self.directory, exc)
                return
            self._setup_waiting().register(sock.fileno(), select.POLLIN)
            self._sockets[queue] = (sock, path, 1)

    def unlisten(self, queue):
        with self._lock:
            entry = self._sockets.get(queue)
            if entry is None:
                return
            sock, path, count = entry
            if count > 1:
                self._sockets[queue] = (sock, path, count - 1)
                return
            del self._sockets[queue]
            self._close_socket(sock, path)

    def _close_socket(self, sock, path):
        try:
            self._poller.unregister(sock.fileno())
        except (KeyError, ValueError):
            pass
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)

    def wait(self, timeout):
        """Sleep up to ``timeout`` seconds; True if something woke us."""
        events = self._setup_waiting().poll(max(timeout, 0) * 1000)
        for fd, _ in events:
            for _ in range(64):  # a socket's queue holds a few datagrams
                try:
                    if not os.read(fd, 256):
                        break
                except OSError:  # BlockingIOError: drained
                    break
        return bool(events)

    def interrupt(self):
        """Wake a ``wait()`` in another thread (or the next one)."""
        self._setup_waiting()
        try:
            os.write(self._pipe[1], b'\0')
        except OSError:
            pass  # the pipe is full: a wake-up is pending already

    # producer side
    def _names(self):
        now = time.monotonic()
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except OSError:
            return ()
        listing = self._listing
        if (listing is not None and listing[0] == mtime
                and now - listing[1] < self.LISTING_MAX_AGE):
            return listing[2]
        try:
            names = tuple(entry.name for entry in os.scandir(self.directory)
                          if entry.name.endswith('.sock'))
        except OSError:
            names = ()
        self._listing = (mtime, now, names)
        return names

    def notify(self, queue):
        prefix = queue_key(queue) + '.'
        sender = None
        for name in self._names():
            if not name.startswith(prefix):
                continue
            if sender is None:
                sender = self._sender
                if sender is None:
                    sender = self._sender = socket.socket(socket.AF_UNIX,
                                                          socket.SOCK_DGRAM)
                    sender.setblocking(False)
            path = os.path.join(self.directory, name)
            try:
                sender.sendto(b'\0', path)
            except BlockingIOError:
                pass  # its queue is full: it has a wake-up pending already
            except (ConnectionRefusedError, FileNotFoundError):
                # Nobody listens there any more (a consumer that died).
                with contextlib.suppress(OSError):
                    os.unlink(path)
                self._listing = None
            except OSError:
                pass

    def close(self):
        with self._lock:
            if self.pid != os.getpid():
                # Another process' sockets: drop, never unlink them.
                self._sockets.clear()
                return
            for sock, path, _ in self._sockets.values():
                self._close_socket(sock, path)
            self._sockets.clear()
            if self._sender is not None:
                self._sender.close()
                self._sender = None
            if self._pipe is not None:
                for fd in self._pipe:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._pipe = self._poller = None


def remove_stale_sockets(directory):
    """Unlink the wake-up sockets nobody listens on (dead consumers').

    Producers unlink those of the queues they publish to; this catches the
    rest. Live consumers get one spurious wake-up (one cheap query).
    """
    try:
        names = [n for n in os.listdir(directory) if n.endswith('.sock')]
    except OSError:
        return 0
    removed = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        for name in names:
            path = os.path.join(directory, name)
            try:
                sender.sendto(b'\0', path)
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    os.unlink(path)
                    removed += 1
            except OSError:
                pass
    return removed


# --- kombu -------------------------------------------------------------------

class Channel(virtual.Channel):
    """A virtual channel whose queues are rows of the message table."""

    supports_fanout = False

    def __init__(self, connection, **kwargs):
        super().__init__(connection, **kwargs)
        self._no_ack_queues = set()

    # queues
    def _new_queue(self, queue, auto_delete=False, **kwargs):
        self.connection.declare_queue(queue, bool(auto_delete))

    def _has_queue(self, queue, **kwargs):
        return self.connection.has_queue(queue)

    def _size(self, queue):
        return self.connection.size(queue)

    def _purge(self, queue):
        return self.connection.purge(queue)

    def _delete(self, queue, *args, **kwargs):
        self.connection.delete_queue(queue)

    def queue_delete(self, queue, if_unused=False, if_empty=False, **kwargs):
        # Queues bound to the default exchange have no bindings, so kombu's
        # version would never call _delete(): a deleted queue stayed.
        if if_empty and self._size(queue):
            return
        self.state.queue_bindings_delete(queue)
        self._delete(queue)

    # messages
    def _put(self, queue, message, **kwargs):
        self.connection.put(queue, message)

    def _get(self, queue, timeout=None):
        return self.connection.lease(queue)[0]

    def _get_and_deliver(self, queue, callback):
        """Lease a batch (as much as the prefetch window allows) and deliver
        all of it, as kombu's SQS channel does with a bulk receive.

        One statement leases the batch, and the runtime acknowledges what
        its workers finished meanwhile in one statement at its next turn,
        instead of two statements per message.
        """
        payloads = self.connection.lease(queue, self._lease_limit())
        no_ack = queue in self._no_ack_queues
        for index, payload in enumerate(payloads):
            try:
                if no_ack:
                    self.connection.forget(payload, delete=True)
                callback(payload, queue)
            except BaseException:
                # The rest stay first in line for whoever consumes next.
                self.connection.settle(
                    [p['properties']['delivery_tag']
                     for p in payloads[index + 1:]], delete=False)
                raise

    def _lease_limit(self):
        room = self.qos.can_consume_max_estimate()  # None: no prefetch limit
        return LEASE_BATCH if room is None else max(min(room, LEASE_BATCH), 1)

    def basic_get(self, queue, no_ack=False, **kwargs):
        try:
            payload = self._get(queue)
        except Empty:
            return None
        message = self.Message(payload, channel=self)
        if no_ack:
            self.connection.forget(payload, delete=True)
        else:
            self.qos.append(message, message.delivery_tag)
        return message

    def basic_consume(self, queue, no_ack, callback, consumer_tag, **kwargs):
        super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)
        if no_ack:
            self._no_ack_queues.add(queue)
        self.connection.consumer_added(queue)

    def basic_cancel(self, consumer_tag):
        queue = self._tag_to_queue.get(consumer_tag)
        known = consumer_tag in self._consumers
        super().basic_cancel(consumer_tag)
        if known and queue is not None:
            if queue not in self._active_queues:
                self._no_ack_queues.discard(queue)
            self.connection.consumer_removed(queue)

    def basic_ack(self, delivery_tag, multiple=False):
        self.connection.settle([delivery_tag], delete=True)
        super().basic_ack(delivery_tag, multiple)

    def basic_ack_many(self, delivery_tags):
        """Acknowledge several messages in one statement (one transaction).

        What the runtime calls with a consumer turn's acknowledgements.
        """
        self.connection.settle(delivery_tags, delete=True)
        for tag in delivery_tags:
            self.qos.ack(tag)

    def basic_reject(self, delivery_tag, requeue=False):
        self.connection.settle([delivery_tag], delete=not requeue)
        # Never kombu's requeue: it would put a copy; the row is back already.
        self.qos.reject(delivery_tag, requeue=False)

    def _restore(self, message):
        """Unacked at close or recover: make the row visible again in place."""
        self.connection.settle([message.delivery_tag], delete=False)

    def _restore_at_beginning(self, message):
        self._restore(message)


class SQLiteTransport(virtual.Transport):
    """kombu transport on one SQLite file; see the module docstring."""

    Channel = Channel

    can_parse_url = True
    default_port = 0
    driver_type = 'sqlite'
    driver_name = 'sqlite3'
    polling_interval = POLLING_INTERVAL
    connection_errors = virtual.Transport.connection_errors + (
        sqlite3.OperationalError,)

    def __init__(self, client, **kwargs):
        super().__init__(client, **kwargs)
        options = client.transport_options
        self.path = path_from_url(client.hostname or '')
        if not self.path:
            raise ValueError('the SQLite transport needs a database path: '
                             'sqlite:////absolute/path/to/file.sqlite')
        self.busy_timeout = float(options.get('busy_timeout', BUSY_TIMEOUT))
        visibility_timeout = options.get('visibility_timeout',
                                         VISIBILITY_TIMEOUT)
        self.visibility_timeout = (float(visibility_timeout)
                                   if visibility_timeout else None)
        self.reclaim_interval = float(options.get('reclaim_interval',
                                                  RECLAIM_INTERVAL))
        self.synchronous = options.get('synchronous', 'NORMAL')
        self.use_wakeups = options.get('wakeups', True)
        self._reset_process_state()

    def _reset_process_state(self):
        self._pid = os.getpid()
        self._db_lock = threading.RLock()
        self._waiting = False
        self._interrupted = False
        self._db = None
        self._wake = None
        self._token = uuid.uuid4().hex
        self._statements = 0
        self._leased = {}  # delivery tag -> (row id, queue)
        self._known_queues = set()
        self._streak = set()  # queues whose last lease found a message
        self._listening = {}  # queue -> consumer count
        self._dirty = True
        self._next_poll = 0.0
        self._next_reclaim = 0.0

    def _check_fork(self):
        if self._pid != os.getpid():
            # Inherited from the parent: never use, close or unlink any of
            # it (that would touch the parent's locks and sockets).
            listening = dict(self._listening)
            self._reset_process_state()
            for queue, count in listening.items():
                for _ in range(count):
                    self.consumer_added(queue)

    # --- the database ---
    @property
    def db(self):
        """This process' :class:`Database` (hold ``_db_lock`` to use it)."""
        self._check_fork()
        if self._db is None:
            ensure_database(self.path, self.busy_timeout)
            self._db = Database(self.path, self.busy_timeout,
                                self.synchronous)
        return self._db

    @property
    def statements(self):
        """SQL statements run so far by this process (tests, benchmarks)."""
        return self._statements + (self._db.statements if self._db else 0)

    def _execute(self, sql, params=()):
        self._check_fork()
        with self._db_lock:
            return self.db.run(sql, params)

    def establish_connection(self):
        ensure_database(self.path, self.busy_timeout)
        return super().establish_connection()

    def close_connection(self, connection):
        try:
            super().close_connection(connection)
        finally:
            if self._pid == os.getpid():
                if self._db is not None:
                    try:
                        # Anything our closed channels did not give back.
                        with self._db_lock:
                            self._db.run(
                                f'UPDATE {MESSAGE_TABLE} SET {_UNLEASE} '
                                'WHERE lease_token = ?', (self._token,))
                    except sqlite3.Error:
                        log.warning('could not release the leases of a '
                                    'closing connection; they come back '
                                    'when this process exits', exc_info=True)
                    self._statements += self._db.statements
                    self._db.close()
                if self._wake is not None:
                    self._wake.close()
            self._db = None
            self._wake = None
            self._leased = {}
            self._listening = {}

    def driver_version(self):
        return sqlite3.sqlite_version

    # --- queues ---
    def declare_queue(self, queue, auto_delete=False):
        if queue in self._known_queues:
            return
        rows = self._execute(
            f'SELECT 1 FROM {QUEUE_TABLE} WHERE name = ?', (queue,))
        if not rows:
            self._execute(
                f'INSERT OR IGNORE INTO {QUEUE_TABLE} '
                '(name, auto_delete, created) VALUES (?, ?, ?)',
                (queue, int(auto_delete), time.time()))
        self._known_queues.add(queue)

    def has_queue(self, queue):
        return bool(self._execute(
            f'SELECT 1 FROM {QUEUE_TABLE} WHERE name = ? UNION ALL '
            f'SELECT 1 FROM {MESSAGE_TABLE} WHERE queue = ? LIMIT 1',
            (queue, queue)))

    def size(self, queue):
        return self._execute(
            f'SELECT COUNT(*) FROM {MESSAGE_TABLE} '
            'WHERE queue = ? AND lease_token IS NULL', (queue,))[0][0]

    def purge(self, queue):
        with self._db_lock:
            return self.db.change(
                f'DELETE FROM {MESSAGE_TABLE} '
                'WHERE queue = ? AND lease_token IS NULL', (queue,))

    def delete_queue(self, queue):
        with self._db_lock:
            self.db.run(f'DELETE FROM {MESSAGE_TABLE} WHERE queue = ?',
                        (queue,))
            self.db.run(f'DELETE FROM {QUEUE_TABLE} WHERE name = ?',
                        (queue,))
        self._known_queues.discard(queue)

    # --- messages ---
    def put(self, queue, message):
        self._execute(
            f'INSERT INTO {MESSAGE_TABLE} (queue, payload, created) '
            'VALUES (?, ?, ?)', (queue, json.dumps(message), time.time()))
        self.notify(queue)

    def lease(self, queue, limit=1):
        """Lease up to ``limit`` oldest visible messages of ``queue``.

        Returns their payloads in FIFO order; raises Empty. Usually a read
        (is there one?) then one conditional write leasing up to ``limit``
        rows (those another consumer took meanwhile are skipped), so an
        empty queue costs no write lock. In a burst (the last lease of this
        queue got all it asked for) the write alone.
        """
        with self._db_lock:
            db = self.db
            if not HAS_RETURNING:
                got = self._lease_one_without_returning(db, queue)
            elif queue in self._streak or self._has_ready(db, queue):
                got = db.run(
                    f'UPDATE {MESSAGE_TABLE} SET {self._lease_columns()} '
                    f'WHERE id IN (SELECT id FROM {MESSAGE_TABLE} '
                    'WHERE queue = ? AND lease_token IS NULL '
                    'ORDER BY id LIMIT ?) '
                    'RETURNING id, payload, deliveries',
                    (*self._lease_values(), queue, limit))
                got.sort()  # RETURNING has no ORDER BY
            else:
                got = []
        if len(got) < limit:
            self._streak.discard(queue)
        else:
            self._streak.add(queue)
        if not got:
            raise Empty()
        return [self._leased_payload(row_id, queue, text, deliveries)
                for row_id, text, deliveries in got]

    @staticmethod
    def _has_ready(db, queue):
        return bool(db.run(
            f'SELECT 1 FROM {MESSAGE_TABLE} WHERE queue = ? AND '
            'lease_token IS NULL LIMIT 1', (queue,)))

    @staticmethod
    def _lease_columns():
        return ('lease_token = ?, lease_node = ?, lease_pid = ?, '
                'lease_started = ?, leased_at = ?, '
                'deliveries = deliveries + 1')

    def _lease_values(self):
        return (self._token, *identity(), time.time())

    def _lease_one_without_returning(self, db, queue):
        """SQLite < 3.35: read a candidate, lease it unless taken, read it."""
        for _ in range(10):
            candidate = db.run(
                f'SELECT id FROM {MESSAGE_TABLE} WHERE queue = ? AND '
                'lease_token IS NULL ORDER BY id LIMIT 1', (queue,))
            if not candidate:
                return []
            row_id = candidate[0][0]
            if db.change(f'UPDATE {MESSAGE_TABLE} SET '
                         f'{self._lease_columns()} '
                         'WHERE id = ? AND lease_token IS NULL',
                         (*self._lease_values(), row_id)):
                return [(row_id, *db.run(
                    f'SELECT payload, deliveries FROM {MESSAGE_TABLE} '
                    'WHERE id = ?', (row_id,))[0])]
            # Another consumer leased it between our two statements.
        return []

    def _leased_payload(self, row_id, queue, text, deliveries):
        self._dirty = True  # there may be more
        payload = json.loads(text)
        properties = payload.setdefault('properties', {})
        tag = properties.get('delivery_tag')
        if tag is None:
            tag = properties['delivery_tag'] = uuid.uuid4().hex
        if deliveries > 1:
            properties.setdefault('delivery_info', {})['redelivered'] = True
        self._leased[tag] = (row_id, queue)
        return payload

    def settle(self, delivery_tags, delete):
        """Delete (ack) or make visible again (requeue, restore) our rows.

        One statement for up to ``MAX_SETTLED`` tags: a consumer turn's
        acknowledgements cost one transaction, not one each.
        """
        if self._pid != os.getpid():
            return  # the parent's messages: none of this process' business
        entries = [self._leased.pop(tag, None) for tag in delivery_tags]
        entries = [entry for entry in entries if entry is not None]
        if not entries:
            return
        # Only while the lease is ours: one taken back after the visibility
        # timeout belongs to its new holder, and row ids can be reused.
        change = (f'DELETE FROM {MESSAGE_TABLE}' if delete else
                  f'UPDATE {MESSAGE_TABLE} SET {_UNLEASE}')
        row_ids = sorted(row_id for row_id, _ in entries)
        for start in range(0, len(row_ids), MAX_SETTLED):
            chunk = row_ids[start:start + MAX_SETTLED]
            self._execute(f'{change} WHERE lease_token = ? AND id IN '
                          f'({",".join("?" * len(chunk))})',
                          (self._token, *chunk))
        if not delete:
            for queue in {queue for _, queue in entries}:
                self.notify(queue)
        self.capacity_freed()

    def forget(self, payload, delete):
        tag = payload.get('properties', {}).get('delivery_tag')
        self.settle([tag], delete)

    # --- waking up ---
    @property
    def wake(self):
        self._check_fork()
        if self._wake is None:
            with self._db_lock:  # interrupt() may come from another thread
                if self._wake is None:
                    self._wake = WakeBox(wake_directory(self.path))
        return self._wake

    def notify(self, queue):
        if self.use_wakeups:
            try:
                self.wake.notify(queue)
            except Exception:  # a wake-up is an optimization, never an error
                log.debug('wake-up of %s failed', queue, exc_info=True)

    def capacity_freed(self):
        """An ack or requeue: a consumer at its prefetch limit may go on.

        Wakes a ``drain_events`` sleeping in another thread. (The waiter sets
        ``_waiting`` then looks at ``_dirty``; we set ``_dirty`` then look at
        ``_waiting``: one of the two sees the other.)
        """
        self._dirty = True
        if self._waiting and self._pid == os.getpid():
            self.wake.interrupt()

    def interrupt(self):
        """Make a ``drain_events`` in another thread return soon.

        Thread-safe. The waiting ``drain_events`` raises ``socket.timeout``
        early (as if its timeout had passed), so a consumer loop that runs
        work between calls (sending acknowledgements queued by worker
        threads, say) does it at once instead of after its timeout. Writes
        to the wake-up pipe only while ``drain_events`` sleeps (see
        :meth:`capacity_freed`): a busy consumer sees the flags, and worker
        threads acknowledging job after job make no system call for it.
        """
        self._interrupted = True
        self._dirty = True
        if self._waiting and self._pid == os.getpid():
            self.wake.interrupt()

    def consumer_added(self, queue):
        self._check_fork()
        self._listening[queue] = self._listening.get(queue, 0) + 1
        if self.use_wakeups:
            self.wake.listen(queue)
        self._dirty = True
        self._next_reclaim = 0.0  # a consumer reclaims when it starts

    def consumer_removed(self, queue):
        if self._pid != os.getpid():
            return
        count = self._listening.get(queue, 0) - 1
        if count > 0:
            self._listening[queue] = count
        else:
            self._listening.pop(queue, None)
        if self._wake is not None:
            self._wake.unlisten(queue)

    def reclaim(self):
        with self._db_lock:
            reclaimed = reclaim(self.db, self.visibility_timeout,
                                exclude_token=self._token)
        for queue in reclaimed:
            self.notify(queue)
        if reclaimed:
            self._dirty = True
        return reclaimed

    def drain_events(self, connection, timeout=None):
        """Deliver one lease (a batch, see ``Channel._get_and_deliver``);
        raise ``socket.timeout`` after ``timeout``.

        Queries the database only when there may be something to get (a
        wake-up, a delivery, freed prefetch room, a new consumer) or when the
        fallback poll is due; otherwise sleeps on the wake-up sockets.
        """
        self._check_fork()
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        last_look = False
        while True:
            if self._listening and now >= self._next_reclaim:
                self._next_reclaim = now + self.reclaim_interval
                try:
                    self.reclaim()
                except Exception:  # never worth stopping a consumer for
                    log.warning('could not reclaim abandoned messages',
                                exc_info=True)
            if self._dirty or now >= self._next_poll:
                self._dirty = False
                self._next_poll = now + self.polling_interval
                try:
                    self.cycle.get(self._deliver, timeout=timeout)
                except Empty:
                    pass
                else:
                    return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                # One last look at wake-ups that came in meanwhile (what
                # timeout=0 relies on), then give up.
                if (not last_look and self.use_wakeups
                        and (self._dirty or self.wake.wait(0))):
                    last_look = self._dirty = True
                    continue
                raise socket.timeout()
            wait = self._next_poll - now
            if self._listening:
                wait = min(wait, self._next_reclaim - now)
            if deadline is not None:
                wait = min(wait, deadline - now)
            if self._interrupted:
                self._interrupted = False
                raise socket.timeout()
            if self.use_wakeups:
                self._waiting = True
                try:
                    if self._dirty or self.wake.wait(wait):
                        self._dirty = True
                finally:
                    self._waiting = False
            elif wait > 0 and not self._dirty:
                time.sleep(wait)
            if self._interrupted:
                self._interrupted = False
                raise socket.timeout()
            now = time.monotonic()

Transport = SQLiteTransport
