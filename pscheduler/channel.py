"""The child's reports to its master: JSON lines on a pipe.

A child says ``ready`` once its runtime has started (the master counts a
child that exits before that as a boot failure, and tells systemd READY=1
only when every child said it) and ``failed`` with its error when it cannot
start, so the master can log why it gives up. A child whose broker does
not answer yet says ``waiting`` with the reason (each time it changes): it
is alive, not ready, and the master logs why. A child whose queue's job
store another process owns (on this host or another) says ``standby``: it
is ready to take the store over (the master counts it as ready, and tells
systemd so in STATUS), and says ``ready`` once it has.
"""
import errno
import json
import os

READY = 'ready'
FAILED = 'failed'
WAITING = 'waiting'
STANDBY = 'standby'


def open_channel():
    """``(read_fd, write_fd)``; each side closes the end it does not use."""
    return os.pipe2(os.O_CLOEXEC)


class ReportWriter:
    """The child's end."""

    def __init__(self, fd):
        self.fd = fd

    def send(self, event, **fields):
        data = (json.dumps({'event': event, **fields}) + '\n').encode()
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError as exc:
            if exc.errno != errno.EPIPE:  # the master is gone: nobody cares
                raise

    def ready(self, module_files=None):
        self.send(READY, pid=os.getpid(), files=module_files or [])

    def standby(self, owner):
        self.send(STANDBY, pid=os.getpid(), owner=str(owner))

    def waiting(self, reason):
        self.send(WAITING, pid=os.getpid(), reason=str(reason))

    def failed(self, error):
        self.send(FAILED, pid=os.getpid(), error=str(error))

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class ReportReader:
    """The master's end; never blocks."""

    def __init__(self, fd):
        os.set_blocking(fd, False)
        self.fd = fd
        self.eof = False
        self._buffer = b''

    def fileno(self):
        return self.fd

    def read(self):
        """The complete reports received so far, as dicts."""
        while not self.eof:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
                break
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b'\n')
        reports = []
        for line in lines:
            try:
                reports.append(json.loads(line))
            except ValueError:
                continue  # a child never writes anything else; ignore noise
        return reports

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
