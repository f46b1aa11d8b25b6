"""Wake-ups: how a producer's commit reaches a sleeping consumer at once.

Each consumed queue binds a unix datagram socket in a directory beside the
database (``<db>.wake/<queue hash>.<pid>.<random>.sock``, or
``$TMPDIR/pscheduler-wake-<hash>`` when that path would be too long for
AF_UNIX). A producer, once its insert is committed, sends one byte to every
socket of that queue (:meth:`WakeBox.notify`); a consumer sleeps in
``poll()`` on its sockets (:meth:`WakeBox.wait`). Within one process,
:class:`WakeFlags` is the handshake between the thread asleep in
``drain_events`` and the threads that want it awake. A lost wake-up costs
latency only: consumers also poll every ``polling_interval``.
"""
import contextlib
import hashlib
import logging
import os
import select
import socket
import tempfile
import threading
import time
import uuid

log = logging.getLogger(__name__)

# The longest AF_UNIX path is 107 bytes; the socket names are at most 40.
_MAX_WAKE_DIR = 107 - 41


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
        self._setup_lock = threading.Lock()  # see _setup_waiting
        self._sender = None
        self._listing = None  # (mtime_ns, monotonic, names)
        self._poller = None
        self._pipe = None
        self._warned = False

    def _setup_waiting(self):
        # Under a lock: the consumer's first wait() and a worker's first
        # interrupt() may come at once, and two pipes would lose the
        # interrupt (the one written to is not the one polled).
        if self._poller is None:
            with self._setup_lock:
                if self._poller is None:
                    pipe = os.pipe()
                    for fd in pipe:
                        os.set_blocking(fd, False)
                    poller = select.poll()
                    poller.register(pipe[0], select.POLLIN)
                    self._pipe = pipe
                    self._poller = poller
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


class WakeFlags:
    """The handshake between a sleeping ``drain_events`` and its wakers.

    Lock-free: worker threads acknowledge job after job, and must not take
    a lock or make a system call for each one while the consumer is busy.

    ``dirty``
        There may be something to fetch (a wake-up, a delivery, freed
        prefetch room, a new consumer): query before sleeping again.
    ``interrupted``
        Someone asked the consumer to return from ``drain_events`` now.
    ``waiting``
        The consuming thread is asleep in :meth:`sleep`.

    The sleeper sets ``waiting`` then looks at ``dirty``; a waker sets
    ``dirty`` then looks at ``waiting``: one of the two sees the other, so
    a wake-up is never lost, and only a waker that finds the sleeper asleep
    calls ``ring()`` (a write to the WakeBox's pipe). Each flag is one
    attribute read or written whole, in that order, under the GIL.
    """

    def __init__(self, ring):
        self._ring = ring
        self.dirty = True
        self.interrupted = False
        self.waiting = False

    def capacity_freed(self):
        """Something to fetch may have appeared: wake the sleeper, if any."""
        self.dirty = True
        if self.waiting:
            self._ring()

    def interrupt(self):
        """Make the consumer return from ``drain_events`` soon."""
        self.interrupted = True
        self.capacity_freed()

    def take_interrupt(self):
        """True once per :meth:`interrupt`: the consumer returns now."""
        if self.interrupted:
            self.interrupted = False
            return True
        return False

    def take_dirty(self):
        """True if something may be there to fetch; clears the flag."""
        if self.dirty:
            self.dirty = False
            return True
        return False

    def sleep(self, wait, timeout):
        """Call ``wait(timeout)`` unless dirty already; dirty if woken."""
        self.waiting = True
        try:
            if self.dirty or wait(timeout):
                self.dirty = True
        finally:
            self.waiting = False
