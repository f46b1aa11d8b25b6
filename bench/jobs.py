"""The job functions every system runs.

``record(path, tag)`` writes ``"<time.time() at start> <tag>\\n"`` to ``path``,
a FIFO the benchmark reads (see :class:`bench.common.Recorder`). One write of
less than PIPE_BUF bytes is atomic, so any number of worker processes and
threads may record at once. The descriptor is opened once per process and
path, so a recorded job costs one ``write()``.
"""
import fcntl
import os
import threading
import time

_fds = {}
_lock = threading.Lock()


def _fd(path):
    key = (os.getpid(), path)
    fd = _fds.get(key)
    if fd is None:
        with _lock:
            fd = _fds.get(key)
            if fd is None:
                # O_NONBLOCK only for the open (fails at once if the bench is
                # gone instead of hanging); writes then block normally.
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                flags = fcntl.fcntl(fd, fcntl.F_GETFL)
                fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
                _fds[key] = fd
    return fd


def record(path, tag=0.0):
    now = time.time()
    os.write(_fd(path), b'%.6f %.6f\n' % (now, float(tag)))


def noop():
    pass


def burn(seconds):
    """Use ``seconds`` of this thread's CPU time (not wall time: on a busy
    machine the job still does the same work)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def io_record(path, tag=0.0, seconds=0.005):
    """Case 8: record the start, then wait ``seconds`` as on I/O."""
    record(path, tag)
    time.sleep(seconds)


def cpu_record(path, tag=0.0, seconds=0.005):
    """Case 8: record the start, then burn ``seconds`` of CPU."""
    record(path, tag)
    burn(seconds)
