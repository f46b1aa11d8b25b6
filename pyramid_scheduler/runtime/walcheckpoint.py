"""Checkpoints of a SQLite job store's write-ahead log, off the hot path.

By default SQLite checkpoints a WAL database from inside the commit that
grows the log past 1,000 pages: that commit copies the log into the
database file and syncs it, and a due job that APScheduler is taking out of
the store waits those milliseconds (most of the date-job lateness above the
99th percentile, measured with bench/). So the job store's connections turn
automatic checkpoints off (:data:`DISABLE_AUTOCHECKPOINT`) and a
:class:`WalCheckpointer` thread does them instead: once a second, if the log
has changed, a ``PASSIVE`` checkpoint, which neither waits for a lock nor
blocks a reader or a writer. The last connection to close still checkpoints
and removes the log, as SQLite always does.
"""
import logging
import os
import sqlite3
import threading

log = logging.getLogger(__name__)

DISABLE_AUTOCHECKPOINT = 'PRAGMA wal_autocheckpoint=0'
CHECKPOINT_INTERVAL = 1.0


class WalCheckpointer:
    """A thread checkpointing the WAL of the SQLite database at ``path``."""

    def __init__(self, path, interval=CHECKPOINT_INTERVAL):
        self.path = path
        self.interval = interval
        self._stopped = threading.Event()
        self._thread = None
        self._connection = None
        self._last_seen = None   # (size, mtime) of the log when last done

    def start(self):
        self._thread = threading.Thread(
            target=self._run, name='pscheduler-wal-checkpoint', daemon=True)
        self._thread.start()

    def stop(self):
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def running(self):
        """Whether its thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self):
        try:
            while not self._stopped.wait(self.interval):
                try:
                    self.checkpoint_if_changed()
                except sqlite3.Error as exc:
                    # Never fatal: the log grows until the next try, or
                    # until the last connection closes.
                    log.warning('checkpoint of %s failed: %s', self.path, exc)
        finally:
            if self._connection is not None:
                self._connection.close()

    def checkpoint_if_changed(self):
        """Checkpoint if the log changed since the last time; returns
        SQLite's ``(busy, log frames, checkpointed frames)`` or None."""
        try:
            stat = os.stat(self.path + '-wal')
        except FileNotFoundError:
            return None
        seen = (stat.st_size, stat.st_mtime_ns)
        if seen == self._last_seen:
            return None
        if self._connection is None:
            self._connection = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False)
        result = self._connection.execute(
            'PRAGMA wal_checkpoint(PASSIVE)').fetchone()
        self._last_seen = seen
        return result


def sqlite_pragmas(dbapi_connection, connection_record):
    # WAL: the job store's writes (every due run) need not wait for readers,
    # nor readers for them. synchronous=NORMAL is safe in WAL against a
    # crashed process (not a power cut) and saves an fsync per commit, which
    # is most of a deferred job's lateness on SQLite. Checkpoints happen in
    # a thread of their own, not in the commit of a due run (walcheckpoint).
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute('PRAGMA journal_mode=WAL')
        cursor.execute('PRAGMA synchronous=NORMAL')
        cursor.execute(DISABLE_AUTOCHECKPOINT)
    finally:
        cursor.close()
