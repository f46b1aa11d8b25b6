"""``--pidfile``: the master's pid, for scripts and old-style init systems."""
import logging
import os

import psutil

from . import exitcodes
from .exitcodes import ExitError

log = logging.getLogger(__name__)


class Pidfile:
    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.pid = None

    def create(self, pid=None):
        """Write ``pid``; refuse if the file names a live pscheduler."""
        pid = pid or os.getpid()
        other = self.running_pid()
        if other is not None and other != pid:
            raise ExitError(f'pidfile {self.path} names pscheduler process '
                            f'{other}, which is running: stop it first',
                            exitcodes.START_FAILED)
        temporary = f'{self.path}.{pid}.tmp'
        try:
            with open(temporary, 'w', encoding='ascii') as handle:
                handle.write(f'{pid}\n')
            # rename() is atomic: a reader never sees a half-written file.
            os.replace(temporary, self.path)
        except OSError as exc:
            raise ExitError(f'cannot write pidfile {self.path}: {exc}',
                            exitcodes.START_FAILED) from exc
        self.pid = pid

    def running_pid(self):
        """The pid in the file if that process is a pscheduler, else None.

        A pid left by a crash may have been reused by an unrelated process,
        so its command line must mention pscheduler too.
        """
        try:
            with open(self.path, encoding='ascii') as handle:
                pid = int(handle.read().strip() or 0)
        except (OSError, ValueError):
            return None
        try:
            cmdline = ' '.join(psutil.Process(pid).cmdline())
        except (psutil.Error, ValueError):
            return None
        return pid if 'pscheduler' in cmdline else None

    def remove(self):
        """Remove the file if it is still ours (a successor may own it)."""
        if self.pid is None:
            return
        try:
            with open(self.path, encoding='ascii') as handle:
                if int(handle.read().strip() or 0) != self.pid:
                    return
            os.unlink(self.path)
        except (OSError, ValueError):
            log.debug('could not remove pidfile %s', self.path,
                      exc_info=True)
        self.pid = None
