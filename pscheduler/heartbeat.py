"""A child's heartbeat: the mtime of an unlinked temp file.

As gunicorn's WorkerTmp does it, the master creates the file before the fork
and both keep its descriptor; the child sets the mtime to the last moment its
job runtime was seen alive, the master compares it with the clock. Nothing is
written to disk, no socket is needed, and a child that is stopped,
deadlocked or stuck in a C call simply stops moving the mtime.
"""
import os
import tempfile
import time


class Heartbeat:
    def __init__(self, directory=None):
        fd, path = tempfile.mkstemp(prefix='pscheduler-heartbeat-',
                                    dir=directory)
        os.unlink(path)  # only the descriptor is needed; nothing to clean up
        self.fd = fd
        self.beat()

    def fileno(self):
        return self.fd

    def beat(self, at=None):
        """Record that the child was alive at ``at`` (default: now)."""
        at = time.time() if at is None else at
        os.utime(self.fd, (at, at))

    def seconds_since_beat(self):
        return time.time() - os.fstat(self.fd).st_mtime

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
