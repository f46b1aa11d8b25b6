"""The embedded broker's SQLite file: its path, schema, setup and connection.

The tables (``pscheduler_message``, ``pscheduler_queue``) and their indexes
are persisted names: never rename them. Every statement is its own short
transaction (:class:`Database`), and the tables are created once under an
``flock`` (:func:`ensure_database`); see the package docstring for why.
"""
import contextlib
import fcntl
import os
import sqlite3
import threading

MESSAGE_TABLE = 'pscheduler_message'
QUEUE_TABLE = 'pscheduler_queue'

BUSY_TIMEOUT = 30.0

HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)

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

# The columns of a lease, cleared: the row is visible again.
UNLEASE = ('lease_token = NULL, lease_node = NULL, lease_pid = NULL, '
           'lease_started = NULL, leased_at = NULL')


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


class OncePerProcess:
    """Remembers which keys this process has done something for.

    A per-process cache, on purpose: setting up a database takes a file
    lock and a write transaction, and every kombu Connection has a transport
    of its own (producers' pools, admin commands, consumers), so it is done
    once per process and path rather than once per connection. Each key
    remembers the pid that did it: after a fork the child does it again
    (cheap, ``IF NOT EXISTS``) instead of trusting its parent's memory.
    """

    def __init__(self):
        self._done = {}  # key -> pid that did it
        self._lock = threading.Lock()

    def do(self, key, action):
        """Call ``action()`` unless this process did so for ``key``."""
        if self._done.get(key) == os.getpid():
            return
        with self._lock:
            if self._done.get(key) == os.getpid():
                return
            action()
            self._done[key] = os.getpid()


# The database files this process has set up (see ensure_database).
_prepared = OncePerProcess()


def ensure_database(path, busy_timeout=BUSY_TIMEOUT):
    """Create the SQLite file, WAL mode and our tables, once, race-free.

    Several processes (web workers, pscheduler children) may start at the
    same moment: an exclusive ``flock`` on ``<path>.lock`` serializes the
    first setup. Done once per process and path.
    """
    key = os.path.abspath(path)
    _prepared.do(key, lambda: _create(key, busy_timeout))


def _create(path, busy_timeout):
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    with _file_lock(path + '.lock'):
        db = sqlite3.connect(path, timeout=busy_timeout,
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
