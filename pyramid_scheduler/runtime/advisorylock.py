"""Ownership of a queue's job store on PostgreSQL: a session-level advisory
lock, on a connection of its own, kept alive and fenced.

The lock belongs to the database session: it ends with the owner's
connection, whatever ends it (the process killed, its host powered off), so
a standby on any host takes it as soon as PostgreSQL lets it go. A host cut
off from the database keeps its processes, and PostgreSQL would keep its
session for as long as TCP takes to notice (hours), so both sides bound it
(see storelock.Timing, with F = ``scheduler.failover``):

- the server: the lock's session runs with ``idle_session_timeout`` =
  ``lease`` (0.6 F), and the owner sends a keep-alive every ``beat``
  (0.1 F). An owner silent for ``lease`` has its session ended by the
  server, and its lock released, ``lease`` after its last keep-alive
  *arrived*, never sooner;
- the owner: it fires a run only within ``fence`` (0.4 F) of *sending* its
  last keep-alive that was answered (a send comes before its arrival), so
  it stops 0.2 F before the server can hand the lock to anyone. A keep-alive
  that fails (its session was ended) means the lock is lost for good: the
  runtime says so (``lost``) and its process is replaced, as a standby.

This holds with no clock shared between hosts: each side measures its own
interval on its own monotonic clock. What it cannot bound is a process
paused (SIGSTOP, swapping) for more than 0.2 F between its check and the
run it fires; the README says so. PostgreSQL 14 or newer is needed (for
``idle_session_timeout``); a pooler in transaction mode (PgBouncer) breaks
session locks: point ``jobstore.url`` at PostgreSQL itself.
"""
import hashlib
import logging
import threading
import time

import sqlalchemy
from pyramid.exceptions import ConfigurationError
from sqlalchemy.pool import NullPool

from .. import refusals
from .storelock import Timing, identity, parse_identity

log = logging.getLogger(__name__)

NAMESPACE = 0x70736368   # 'psch': the first key of our advisory locks
APPLICATION_PREFIX = 'pscheduler-owner '

OWNER_QUERY = """
SELECT a.application_name FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.classid::bigint = %s AND l.objid::bigint = %s
"""


def lock_keys(settings, queue):
    """The two int4 keys of ``queue``'s lock: ours, and its job table's."""
    table = f'{settings.scheduler_id}_{queue}_jobs'.replace('.', '_')
    digest = hashlib.sha1(table.encode()).digest()[:4]
    return NAMESPACE, int.from_bytes(digest, 'big', signed=True)


def connect(settings, timing, name):
    """A DBAPI connection (libpq: psycopg2) of its own, in autocommit.

    Its libpq options make it fail rather than hang: a connect within
    ``lease``, TCP writes unanswered for ``lease`` end it, and the server
    ends the session once idle for ``lease`` (the lock's lease)."""
    lease_ms = max(int(timing.lease * 1000), 100)
    engine = sqlalchemy.create_engine(
        settings.jobstore_url, poolclass=NullPool, connect_args={
            'application_name': name[:63],
            'connect_timeout': max(int(timing.lease + 0.999), 2),
            'options': (f'-c idle_session_timeout={lease_ms} '
                        f'-c statement_timeout={lease_ms}'),
            'keepalives': 1, 'keepalives_idle': 1,
            'keepalives_interval': 1, 'keepalives_count': 3,
            'tcp_user_timeout': lease_ms})
    try:
        pooled = engine.raw_connection()
        pooled.detach()    # ours to close, not the (disposed) engine's
        connection = pooled.dbapi_connection
    finally:
        engine.dispose()
    connection.autocommit = True
    return connection


def read_owner(settings, queue):
    """``{'host', 'pid'}`` of the session holding ``queue``'s lock, or None."""
    first, second = lock_keys(settings, queue)
    connection = connect(settings, Timing.of(settings.failover),
                         'pscheduler-status')
    try:
        with connection.cursor() as cursor:
            cursor.execute(OWNER_QUERY, (first & 0xFFFFFFFF,
                                         second & 0xFFFFFFFF))
            row = cursor.fetchone()
    finally:
        connection.close()
    if row is None:
        return None
    return parse_identity(row[0][len(APPLICATION_PREFIX):])


class AdvisoryLock:
    """``queue``'s advisory lock; see the module docstring."""

    def __init__(self, settings, queue):
        self.settings = settings
        self.queue = queue
        self.keys = lock_keys(settings, queue)
        self.timing = Timing.of(settings.failover)
        self.lost = None          # why, once the lock is lost for good
        self._connection = None   # kept while standing by, and holding
        self._held = False
        self._confirmed = None    # monotonic time of the last good send
        self._stop = threading.Event()
        self._thread = None

    def try_acquire(self):
        """Take the lock if it is free; return whether this process holds it.

        A database that cannot be reached is "not now" (logged), not an
        error: the standby tries again at its next turn."""
        if self._held:
            return True
        try:
            if self._connection is None:
                self._connection = connect(
                    self.settings, self.timing,
                    APPLICATION_PREFIX + identity())
            sent = time.monotonic()
            with self._connection.cursor() as cursor:
                cursor.execute('SELECT pg_try_advisory_lock(%s, %s)',
                               self.keys)
                got = cursor.fetchone()[0]
        except Exception as exc:
            refused = refusals.store_configuration_error(exc, self.settings)
            if refused is not None:   # retrying cannot help: say so
                self._close()
                raise refused from exc
            if 'idle_session_timeout' in str(exc):
                self._close()
                raise ConfigurationError(
                    'setting "scheduler.jobstore.url": PostgreSQL 14 or '
                    'newer is needed to own a job store across hosts '
                    f'(idle_session_timeout): {exc}') from exc
            log.warning('queue %s: cannot reach the job store to take its '
                        'ownership: %s', self.queue, str(exc).strip())
            self._close()
            return False
        if got:
            self._held, self._confirmed = True, sent
            self._start_keepalive()
        return got

    def acquire(self, timeout, should_stop=lambda: False):
        """Wait up to ``timeout`` seconds for the lock, trying every beat."""
        deadline = time.monotonic() + timeout
        while not self.try_acquire():
            if should_stop() or time.monotonic() >= deadline:
                return False
            time.sleep(min(self.timing.beat,
                           max(deadline - time.monotonic(), 0)))
        return True

    def _start_keepalive(self):
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._keep_alive, daemon=True,
            name=f'pscheduler-ownership-{self.queue}')
        self._thread.start()

    def _keep_alive(self):
        while not self._stop.wait(self.timing.beat):
            sent = time.monotonic()
            try:
                with self._connection.cursor() as cursor:
                    cursor.execute('SELECT 1')
            except Exception as exc:
                if self._stop.is_set():
                    return
                self.lost = (f'lost the ownership of queue {self.queue}\'s '
                             f'job store (its database session ended: '
                             f'{str(exc).strip() or type(exc).__name__})')
                log.error('queue %s: %s; no more deferred runs fire here',
                          self.queue, self.lost)
                return
            self._confirmed = sent

    @property
    def held(self):
        return self._held

    def may_fire(self):
        """True while a run fired now cannot also fire elsewhere."""
        confirmed = self._confirmed
        return (self._held and self.lost is None and confirmed is not None
                and time.monotonic() - confirmed < self.timing.fence)

    def owner(self):
        return read_owner(self.settings, self.queue)

    def release(self):
        """Let go (ending the session releases the lock)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timing.lease + 1)
            self._thread = None
        self._held = False
        self._close()

    def _close(self):
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:
                pass
            self._connection = None
