"""The kombu transport of the embedded broker: options, fork safety, hooks.

Every channel of a kombu Connection shares one transport; channel.py
translates kombu's calls into the methods here, which hand them to the two
things a process owns: its :class:`~.queues.Queues` (the SQLite connection,
the SQL, the lease token and the leases held) and its
:class:`~.waiting.Waiter` (the wake-up sockets, the flags and the drain
loop). Both are made again when ``os.getpid()`` changes and never used
from a parent's copy; their connection and sockets are made on first use.
See the package docstring for what the transport guarantees and its
options.
"""
import os
import sqlite3
from queue import Empty

from kombu.transport import virtual

from .channel import Channel
from .database import BUSY_TIMEOUT, ensure_database, path_from_url
from .leases import VISIBILITY_TIMEOUT, LeaseIdentity
from .queues import Queues
from .waiting import Waiter

POLLING_INTERVAL = 2.0
RECLAIM_INTERVAL = 5.0


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
        """Make this process' own Queues and Waiter; the ones before (a
        parent's, after a fork) are dropped, never closed."""
        self._pid = os.getpid()
        self._queues = Queues(self.path, self.busy_timeout, self.synchronous,
                              self._identity)
        self._waiter = Waiter(self.path, self.use_wakeups,
                              self.polling_interval, self.reclaim_interval)

    def _check_fork(self):
        if self._pid != os.getpid():
            # Inherited from the parent: never use, close or unlink any of
            # it (that would touch the parent's locks and sockets).
            listening = dict(self._waiter.listening)
            self._reset_process_state()
            for queue, count in listening.items():
                for _ in range(count):
                    self.consumer_added(queue)

    @property
    def queues(self):
        """This process' :class:`~.queues.Queues`."""
        self._check_fork()
        return self._queues

    @property
    def waiter(self):
        """This process' :class:`~.waiting.Waiter`."""
        self._check_fork()
        return self._waiter

    @property
    def db(self):
        """This process' :class:`~.database.Database` (tests)."""
        return self.queues.db

    @property
    def wake(self):
        """This process' :class:`~.wakeups.WakeBox`."""
        return self.waiter.box

    @property
    def statements(self):
        """SQL statements run so far by this process (tests, benchmarks)."""
        return self._queues.statements

    # --- the connection ---
    def establish_connection(self):
        ensure_database(self.path, self.busy_timeout)
        return super().establish_connection()

    def close_connection(self, connection):
        try:
            super().close_connection(connection)
        finally:
            if self._pid == os.getpid():
                self._queues.close()
                self._waiter.close()
            else:
                # The parent's: drop, never close (see _check_fork).
                self._reset_process_state()

    def driver_version(self):
        return sqlite3.sqlite_version

    # --- queues and messages (the channel's calls) ---
    def declare_queue(self, queue, auto_delete=False):
        self.queues.declare(queue, auto_delete)

    def has_queue(self, queue):
        return self.queues.has(queue)

    def size(self, queue):
        return self.queues.size(queue)

    def purge(self, queue):
        return self.queues.purge(queue)

    def delete_queue(self, queue):
        self.queues.delete(queue)

    def put(self, queue, message):
        self.queues.put(queue, message)
        self.notify(queue)

    def lease(self, queue, limit=1):
        """Lease up to ``limit`` oldest visible messages of ``queue``.

        Returns their payloads in FIFO order; raises Empty. See
        :meth:`~.queues.Queues.lease_rows` for what it costs.
        """
        queues = self.queues
        rows = queues.lease_rows(queue, limit)
        self._waiter.flags.dirty = True  # there may be more
        payloads = queues.received(queue, rows)
        if not payloads:
            raise Empty()  # only rows that were dead-lettered
        return payloads

    def settle(self, delivery_tags, delete):
        """Delete (ack) or make visible again (requeue, restore) our rows,
        in one statement (:meth:`~.queues.Queues.settle`)."""
        if self._pid != os.getpid():
            return  # the parent's messages: none of this process' business
        settled = self._queues.settle(delivery_tags, delete)
        if not settled:
            return
        if not delete:
            for queue in settled:
                self.notify(queue)
        self.capacity_freed()

    def forget(self, payload, delete):
        tag = payload.get('properties', {}).get('delivery_tag')
        self.settle([tag], delete)

    def reclaim(self):
        """Take back the leases of dead or expired owners; wake their
        queues' consumers. Returns ``{queue: count}``."""
        reclaimed = self.queues.reclaim(self.visibility_timeout)
        for queue in reclaimed:
            self.notify(queue)
        if reclaimed:
            self._waiter.flags.dirty = True
        return reclaimed

    # --- waking up ---
    def notify(self, queue):
        self.waiter.notify(queue)

    def capacity_freed(self):
        """An ack or requeue: a consumer at its prefetch limit may go on.

        Wakes a ``drain_events`` sleeping in another thread (the handshake
        is :class:`~.wakeups.WakeFlags`).
        """
        self._waiter.flags.capacity_freed()

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
        self._waiter.flags.interrupt()

    def consumer_added(self, queue):
        self.waiter.listen(queue)

    def consumer_removed(self, queue):
        if self._pid != os.getpid():
            return
        self._waiter.unlisten(queue)

    def drain_events(self, connection, timeout=None):
        """Deliver one lease (a batch, see ``Channel._get_and_deliver``);
        raise ``socket.timeout`` after ``timeout``.

        Queries the database only when there may be something to get;
        otherwise sleeps on the wake-up sockets (:meth:`Waiter.drain
        <.waiting.Waiter.drain>`).
        """
        self.waiter.drain(
            lambda: self.cycle.get(self._deliver, timeout=timeout),
            self.reclaim, timeout)


Transport = SQLiteTransport
