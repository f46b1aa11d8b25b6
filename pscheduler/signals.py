"""Signals recorded by their handler and acted on by the main loop.

As in gunicorn's arbiter, a handler does nothing but append the signal to a
queue: the main loop, woken through ``signal.set_wakeup_fd``, decides what
to do. So no handler ever runs in the middle of a half-done restart, and a
``select()`` wakes as soon as a signal arrives, however long it would sleep.
"""
import os
import select
import signal


class SignalQueue:
    def __init__(self, signals):
        self.signals = tuple(signals)
        self.pending = []
        self._previous_handlers = {}
        self._previous_wakeup_fd = -1
        self._read_fd = self._write_fd = None

    def __enter__(self):
        self.install()
        return self

    def __exit__(self, *exc_info):
        self.restore()

    def install(self):
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous_wakeup_fd = signal.set_wakeup_fd(
            self._write_fd, warn_on_full_buffer=False)
        for signum in self.signals:
            self._previous_handlers[signum] = signal.signal(signum,
                                                            self._record)

    def _record(self, signum, frame):
        # The same signal twice in one loop turn means nothing more; keeping
        # one of each also means a burst of SIGCHLD never crowds out a TERM.
        if signum not in self.pending:
            self.pending.append(signum)

    def fileno(self):
        return self._read_fd

    def fds(self):
        """Descriptors a forked child must close."""
        return tuple(fd for fd in (self._read_fd, self._write_fd)
                     if fd is not None)

    def wait(self, timeout, other_fds=()):
        """Sleep until a signal, a readable ``other_fds`` or ``timeout``."""
        readable, _, _ = select.select([self._read_fd, *other_fds], [], [],
                                       max(timeout, 0))
        return readable

    def pop_all(self):
        """The signals received since the last call, oldest first."""
        try:
            while os.read(self._read_fd, 512):
                pass
        except BlockingIOError:
            pass
        pending, self.pending = self.pending, []
        return pending

    def restore(self):
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        for fd in self.fds():
            os.close(fd)
        self._read_fd = self._write_fd = None
