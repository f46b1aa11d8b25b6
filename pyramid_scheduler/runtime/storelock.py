"""One owner per job store: the lock a runtime holds to fire its deferred jobs.

Two schedulers on one job store would run every deferred job twice
(APScheduler 3's stores do no locking of their own), so each queue's job
store has one owner at a time, and the others stand by. Which lock, by the
job store (:func:`store_lock`):

- PostgreSQL: a session-level advisory lock in the database itself, on a
  connection of its own (advisorylock.py): it holds across hosts.
- another SQLAlchemy database (MySQL, ...): a lease row with an expiry and
  a fencing token beside the job store (leaselock.py).
- SQLite, or a job store class of its own: an ``flock`` on a file named
  after the job store and queue (:class:`StoreLock`). The kernel releases
  it when the process dies, however it dies, so a SIGKILLed child never
  leaves a stale lock behind. It is a same-machine guarantee: two hosts
  sharing one SQLite file (over NFS) are not detected, and fire twice.

Every lock answers :meth:`may_fire` before each deferred run is fired: a
lock on the shared store is good only as long as its keep-alive says so
(see :class:`Timing`), a file lock as long as it is held.
"""
import dataclasses
import fcntl
import hashlib
import os
import socket
import tempfile
import time


@dataclasses.dataclass(frozen=True)
class Timing:
    """How the owner of a shared store and its standbys wait, from
    ``scheduler.failover`` (F). The store ends a silent owner's hold after
    ``lease`` (0.6 F); the owner stops firing ``fence`` (0.4 F) after its
    last keep-alive was sent, so 0.2 F before any standby can take over;
    keep-alives and the standbys' tries come every ``beat`` (0.1 F)."""
    lease: float
    fence: float
    beat: float

    @classmethod
    def of(cls, failover):
        return cls(lease=0.6 * failover, fence=0.4 * failover,
                   beat=0.1 * failover)


def identity():
    """``host pid start``: who holds a lock, as the other hosts read it."""
    return f'{socket.gethostname()} {os.getpid()} {int(time.time())}'


def parse_identity(text):
    """``{'host': ..., 'pid': ...}`` from :func:`identity`, or None."""
    parts = (text or '').split()
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    return {'host': parts[0], 'pid': int(parts[1])}


def store_kind(settings):
    """``'postgresql'``, ``'lease'`` or ``'file'``: how the store is owned."""
    url = settings.jobstore_url
    if settings.jobstore_class is not None or url.startswith('sqlite'):
        return 'file'
    if url.startswith('postgresql'):
        return 'postgresql'
    return 'lease'


def store_lock(settings, queue):
    """The lock of ``queue``'s job store, not taken yet."""
    kind = store_kind(settings)
    if kind == 'postgresql':
        from .advisorylock import AdvisoryLock
        return AdvisoryLock(settings, queue)
    if kind == 'lease':
        from .leaselock import LeaseLock
        return LeaseLock(settings, queue)
    return StoreLock(lock_path(settings, queue))


def store_owner(settings, queue):
    """Who owns ``queue``'s job store now: ``{'host', 'pid'}`` or None;
    read from the store itself, so any process can ask (``status``)."""
    kind = store_kind(settings)
    if kind == 'postgresql':
        from .advisorylock import read_owner
        return read_owner(settings, queue)
    if kind == 'lease':
        from .leaselock import read_owner
        return read_owner(settings, queue)
    return read_file_owner(lock_path(settings, queue))


def store_owners(settings, queues=None):
    """``{queue: {'host', 'pid'} or None}`` for ``queues`` (all by
    default): who owns each job store now, for ``status``."""
    return {queue: store_owner(settings, queue)
            for queue in queues or settings.queues}


def lock_path(settings, queue):
    """Beside an SQLite file, where every process using it meets (a
    temporary directory may be private to a process: systemd's
    ``PrivateTmp=yes``); in the temporary directory for a store elsewhere."""
    if settings.jobstore_url == 'sqlite:///' + settings.database_path:
        return f'{settings.database_path}.{queue}.lock'
    path = sqlite_file(settings)
    if path is not None:
        return f'{path}.{settings.scheduler_id}.{queue}.lock'
    key = hashlib.sha1(
        f'{settings.jobstore_url}\0{settings.scheduler_id}\0{queue}'.encode()
    ).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f'pscheduler-{key}.lock')


def sqlite_file(settings):
    """The absolute path of the SQLite job store's file, or None."""
    url = settings.jobstore_url
    if settings.jobstore_class is not None or not url.startswith('sqlite'):
        return None
    database = url.split('///', 1)[1].split('?', 1)[0] if '///' in url \
        else ''
    if not database or database == ':memory:':
        return None
    return os.path.abspath(database)


def read_file_owner(path):
    """The owner a file lock's holder wrote in it, if it is held now."""
    try:
        with open(path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return parse_identity(handle.read())
            fcntl.flock(handle, fcntl.LOCK_UN)
            return None   # nobody holds it
    except FileNotFoundError:
        return None


class StoreLock:
    """An ``flock`` on a local file (see the module docstring)."""
    lost = None    # a file lock is never taken away from its holder

    def __init__(self, path):
        self.path = path
        self._handle = None

    def try_acquire(self):
        """Take the lock if it is free; return whether this process holds it."""
        if self._handle is not None:
            return True
        os.makedirs(os.path.dirname(self.path) or '.', exist_ok=True)
        handle = open(self.path, 'a+')
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        except BaseException:
            handle.close()
            raise
        self._handle = handle
        self._write_identity()
        return True

    def _write_identity(self):
        # For status: who holds it (read_file_owner).
        try:
            self._handle.truncate(0)
            self._handle.write(identity())
            self._handle.flush()
        except OSError:
            pass

    def acquire(self, timeout, should_stop=lambda: False, interval=0.05):
        """Wait up to ``timeout`` seconds for the lock.

        Polls instead of blocking in flock() so a signal handler that asks
        the process to stop is acted on at once.
        """
        deadline = time.monotonic() + timeout
        while not self.try_acquire():
            if should_stop() or time.monotonic() >= deadline:
                return False
            time.sleep(interval)
        return True

    @property
    def held(self):
        return self._handle is not None

    def may_fire(self):
        return self.held

    def owner(self):
        return read_file_owner(self.path)

    def release(self):
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
