"""The kombu transport of the embedded broker: SQL, leases and the drain loop.

One SQLite connection per process (``check_same_thread=False``, guarded by
an RLock) serves every channel of a kombu Connection; channel.py translates
kombu's calls into the methods here. Everything a process owns (the
connection, the wake-up sockets, the lease token) is made lazily and made
again when ``os.getpid()`` changes, never used from a parent's copy. See the
package docstring for what the transport guarantees and its options.
"""
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from queue import Empty

from kombu.transport import virtual

from .channel import Channel
from .database import (
    BUSY_TIMEOUT, HAS_RETURNING, MESSAGE_TABLE, QUEUE_TABLE, UNLEASE,
    Database, ensure_database, path_from_url)
from .leases import (
    VISIBILITY_TIMEOUT, LeaseIdentity, has_ready, lease_batch,
    lease_one_without_returning, reclaim)
from .wakeups import WakeBox, WakeFlags, wake_directory

log = logging.getLogger(__name__)

POLLING_INTERVAL = 2.0
RECLAIM_INTERVAL = 5.0
# Row ids per acknowledging statement (SQLite before 3.32 allows 999
# parameters).
MAX_SETTLED = 500


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
        self._identity = LeaseIdentity()  # remade after a fork by itself
        self._reset_process_state()

    def _reset_process_state(self):
        self._pid = os.getpid()
        self._db_lock = threading.RLock()
        self._flags = WakeFlags(self._ring)
        self._db = None
        self._wake = None
        self._token = uuid.uuid4().hex
        self._statements = 0
        self._leased = {}  # delivery tag -> (row id, queue)
        self._known_queues = set()
        self._streak = set()  # queues whose last lease found a message
        self._listening = {}  # queue -> consumer count
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
                                f'UPDATE {MESSAGE_TABLE} SET {UNLEASE} '
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
                got = lease_one_without_returning(db, queue,
                                                  self._lease_values)
            elif queue in self._streak or has_ready(db, queue):
                got = lease_batch(db, queue, limit, self._lease_values)
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

    def _lease_values(self):
        """What a lease records: our token, who we are, when."""
        return (self._token, *self._identity(), time.time())

    def _leased_payload(self, row_id, queue, text, deliveries):
        self._flags.dirty = True  # there may be more
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
                  f'UPDATE {MESSAGE_TABLE} SET {UNLEASE}')
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

        Wakes a ``drain_events`` sleeping in another thread (the handshake
        is :class:`~.wakeups.WakeFlags`).
        """
        self._flags.capacity_freed()

    def interrupt(self):
        """Make a ``drain_events`` in another thread return soon.

        Thread-safe. The waiting ``drain_events`` raises ``socket.timeout``
        early (as if its timeout had passed), so a consumer loop that runs
        work between calls (sending acknowledgements queued by worker
        threads, say) does it at once instead of after its timeout. Writes
        to the wake-up pipe only while ``drain_events`` sleeps (see
        :class:`~.wakeups.WakeFlags`): a busy consumer sees the flags, and
        worker threads acknowledging job after job make no system call for
        it.
        """
        self._flags.interrupt()

    def _ring(self):
        """Wake the ``drain_events`` asleep in this process' WakeBox."""
        if self._pid == os.getpid():
            self.wake.interrupt()

    def consumer_added(self, queue):
        self._check_fork()
        self._listening[queue] = self._listening.get(queue, 0) + 1
        if self.use_wakeups:
            self.wake.listen(queue)
        self._flags.dirty = True
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
            self._flags.dirty = True
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
            self._reclaim_if_due(now)
            if self._deliver_if_dirty(now, timeout):
                return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                # One last look at wake-ups that came in meanwhile (what
                # timeout=0 relies on), then give up.
                if last_look or not self._woken_meanwhile():
                    raise socket.timeout()
                last_look = True
                continue
            self._raise_if_interrupted()
            self._sleep(self._next_wait(now, deadline))
            self._raise_if_interrupted()
            now = time.monotonic()

    def _reclaim_if_due(self, now):
        """Every ``reclaim_interval`` while consuming (and at once when a
        consumer starts): take back the leases of dead owners."""
        if not self._listening or now < self._next_reclaim:
            return
        self._next_reclaim = now + self.reclaim_interval
        try:
            self.reclaim()
        except Exception:  # never worth stopping a consumer for
            log.warning('could not reclaim abandoned messages',
                        exc_info=True)

    def _deliver_if_dirty(self, now, timeout):
        """Lease and deliver if there may be something, or the fallback
        poll is due; True if a message was delivered."""
        if not (self._flags.take_dirty() or now >= self._next_poll):
            return False
        self._next_poll = now + self.polling_interval
        try:
            self.cycle.get(self._deliver, timeout=timeout)
        except Empty:
            return False
        return True

    def _woken_meanwhile(self):
        """True (and dirty) if a wake-up came in since the last look."""
        if self.use_wakeups and (self._flags.dirty or self.wake.wait(0)):
            self._flags.dirty = True
            return True
        return False

    def _next_wait(self, now, deadline):
        """Seconds until the fallback poll, a reclaim or the deadline."""
        wait = self._next_poll - now
        if self._listening:
            wait = min(wait, self._next_reclaim - now)
        if deadline is not None:
            wait = min(wait, deadline - now)
        return wait

    def _sleep(self, wait):
        """Sleep up to ``wait`` seconds, less if woken or dirty already."""
        if self.use_wakeups:
            self._flags.sleep(self.wake.wait, wait)
        elif wait > 0 and not self._flags.dirty:
            time.sleep(wait)

    def _raise_if_interrupted(self):
        if self._flags.take_interrupt():
            raise socket.timeout()


Transport = SQLiteTransport
