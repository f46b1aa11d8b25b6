"""The crash journal: how many times an async job took its process down.

A job that kills its process (``os._exit``, a segfault in an extension, the
OOM killer) is never acknowledged, so the broker hands its message out
again, to the next process, which dies the same way: forever, with the
queue behind it starved. The brokers cannot tell such a message apart (the
embedded transport counts deliveries, but a message is delivered again for
innocent reasons too: a reload, a handed-back prefetch), so each process
keeps a *journal*: a file mapped in memory (``MAP_SHARED``) with one slot
per worker thread, where the thread writes the id of the job it runs and
clears it after. A journal holds an ``flock`` for as long as its process
lives, and the kernel drops it when the process dies, however it dies. The
next process to start (or to receive a redelivered message) takes the lock
of every journal nobody holds: the ids still in its slots were running when
their process died; each such id gets one line in the
``crashes`` file beside the journals. :meth:`CrashJournal.crashes` counts
them, and the dispatcher dead-letters a job that has taken its process down
``scheduler.max_deliveries`` times instead of running it again.

What this costs a job: two writes to memory, no system call (the mapped
pages are the page cache's: they outlive a crashed process; no fsync, so
not a power cut); a redelivered message also a look at the journals and
the crashes file. A process that stops
gracefully marks the jobs it leaves running as finished (stopping is not
their fault) and removes its journal. All of it lives in
``<database>.<scheduler.id>.journal/``, beside the embedded SQLite file, on
the one host whose processes share a queue.
"""
import collections
import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import threading
import uuid

log = logging.getLogger(__name__)

CRASHES = 'crashes'
JOURNAL_SUFFIX = '.running'
# A journal's slots: one per worker thread (threads beyond are not
# journaled); a job id longer than a slot is journaled by its hash.
SLOTS = 256
SLOT_SIZE = 128


def journal_directory(settings):
    return f'{settings.database_path}.{settings.scheduler_id}.journal'


class CrashJournal:
    """This process' journal, and the crash counts of every process."""

    def __init__(self, directory):
        self.directory = directory
        self._lock = threading.Lock()
        self._pid = None        # the process whose journal _map is
        self._fd = None
        self._map = None
        self._path = None
        self._failed = False    # the directory is not writable: no limit
        self._slots = threading.local()   # .index: this thread's slot
        self._next_slot = 0
        self._counts = collections.Counter()    # job id -> crashes
        self._seen = None       # (size, mtime) of the crashes file read

    # --- what the dispatcher asks -----------------------------------------

    def crashes(self, job_id, redelivered=False):
        """How many times ``job_id`` took a process down.

        Only a message the broker marks ``redelivered`` can have: one whose
        process died comes back so marked on every transport (RabbitMQ
        requeues it so; the embedded transport counts its deliveries;
        Redis restores it from the unacknowledged hash so). The first
        delivery costs nothing here; a redelivery reads the journals of the
        processes that died since (one may not be recovered yet).
        """
        if not redelivered:
            return 0
        with self._lock:
            if not self._open():
                return 0
            self._recover()
            self._refresh()
            return self._counts[_line_id(job_id)]

    def running(self, job_id):
        """A context that journals ``job_id`` as running in this thread
        while its block runs (one job at a time per thread)."""
        offset = self._slot()
        journal = self._map
        if journal is None or offset is None:
            return contextlib.nullcontext()
        data = _id_bytes(job_id) + b'\0'   # a reader stops at the NUL
        journal[offset:offset + len(data)] = data
        return _Running(journal, offset)

    def close(self):
        """A graceful stop: the jobs still running are not to blame for it;
        the journal goes."""
        with self._lock:
            if self._pid != os.getpid():
                return
            journal, self._map = self._map, None
            journal.close()
            os.close(self._fd)
            with contextlib.suppress(OSError):
                os.unlink(self._path)
            self._pid = self._fd = None

    def open(self):
        """Start this process' journal now (at start: the sooner the dead
        are counted, the better); False if it cannot be had."""
        with self._lock:
            return self._open()

    # --- this process' journal ---------------------------------------------

    def _open(self):
        if self._pid == os.getpid():
            return True
        if self._failed:
            return False
        # A forked child never writes its parent's journal (nor unlocks it:
        # the parent's descriptor is left alone).
        self._map = None
        self._slots = threading.local()
        self._next_slot = 0
        try:
            os.makedirs(self.directory, exist_ok=True)
            path = os.path.join(self.directory, f'{os.getpid()}.'
                                f'{uuid.uuid4().hex[:8]}{JOURNAL_SUFFIX}')
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, SLOTS * SLOT_SIZE)
            self._map = mmap.mmap(fd, SLOTS * SLOT_SIZE, mmap.MAP_SHARED)
            self._pid, self._fd, self._path = os.getpid(), fd, path
            self._recover()
        except OSError as exc:
            self._failed = True
            log.warning('no crash journal in %s (%s): jobs that take their '
                        'process down are not counted (scheduler.'
                        'max_deliveries)', self.directory, exc)
            return False
        return True

    def _slot(self):
        """This thread's slot offset in the journal, or None."""
        offset = getattr(self._slots, 'offset', -1)
        if offset != -1 and self._pid == os.getpid():
            return offset
        with self._lock:
            if not self._open():
                return None
            index, self._next_slot = self._next_slot, self._next_slot + 1
        offset = index * SLOT_SIZE if index < SLOTS else None
        if offset is None:
            log.warning('more than %d worker threads: the jobs of the others '
                        'are not journaled (scheduler.max_deliveries)', SLOTS)
        self._slots.offset = offset
        return offset

    # --- the journals of dead processes, the crash counts -----------------

    def _recover(self):
        """Count the jobs of every journal whose process is gone."""
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if name.endswith(JOURNAL_SUFFIX) and path != self._path:
                self._recover_one(path)

    def _recover_one(self, path):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return   # recovered by another process meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return   # its process lives
            if os.fstat(fd).st_nlink == 0:
                return   # another process recovered it before we locked
            with os.fdopen(os.dup(fd), 'rb') as handle:
                crashed = _running_ids(handle.read())
            if crashed:
                self._count(crashed, path)
            os.unlink(path)
        finally:
            os.close(fd)

    def _count(self, crashed, path):
        crashes_path = os.path.join(self.directory, CRASHES)
        with open(crashes_path, 'a', encoding='utf-8') as handle:
            handle.write(''.join(f'{job_id}\n' for job_id in crashed))
        self._refresh()
        for job_id in crashed:
            log.warning('job %s was running when its process died (journal '
                        '%s): %d time(s) now', job_id,
                        os.path.basename(path), self._counts[job_id])

    def _refresh(self):
        path = os.path.join(self.directory, CRASHES)
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            self._counts.clear()
            return
        seen = (stat.st_size, stat.st_mtime_ns)
        if seen == self._seen:
            return
        with open(path, encoding='utf-8', errors='replace') as handle:
            self._counts = collections.Counter(
                line.rstrip('\n') for line in handle if line.strip())
        self._seen = seen


def _running_ids(data):
    """The job ids in the slots of a journal's bytes."""
    ids = []
    for start in range(0, len(data) - SLOT_SIZE + 1, SLOT_SIZE):
        if data[start]:
            raw = data[start:start + SLOT_SIZE].split(b'\0', 1)[0]
            ids.append(raw.decode('utf-8', 'replace'))
    return ids


def _line_id(job_id):
    """A job id as a slot and a line of the crashes file hold it."""
    return _id_bytes(job_id).decode('utf-8')


def _id_bytes(job_id):
    """:func:`_line_id` encoded: what a slot holds before its NUL."""
    text = job_id if type(job_id) is str else str(job_id)
    if '\n' in text or '\r' in text:
        text = text.replace('\n', ' ').replace('\r', ' ')
    data = text.encode('utf-8')
    if len(data) >= SLOT_SIZE:
        data = b'sha1:' + hashlib.sha1(data).hexdigest().encode('ascii')
    return data


class _Running:
    """What :meth:`CrashJournal.running` returns: clears the slot when the
    block ends (a class, not a generator: it is entered for every job)."""

    __slots__ = ('_journal', '_offset')

    def __init__(self, journal, offset):
        self._journal = journal
        self._offset = offset

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        try:
            self._journal[self._offset] = 0
        except ValueError:
            pass   # the journal was closed meanwhile (a graceful stop)
        return False


class NoJournal:
    """No delivery limit (a runtime without a journal directory)."""

    def crashes(self, job_id, redelivered=False):
        return 0

    def running(self, job_id):
        return contextlib.nullcontext()

    def close(self):
        pass
