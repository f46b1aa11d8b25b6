"""How the master stops: its own shutdown, and the deadline by which any
child it asked to stop is killed.

- SIGTERM/SIGINT: every child drains (``scheduler.shutdown_timeout``), is
  killed if it overstays (by ``STOP_GRACE`` more), and the master exits 0.
  A second signal, ``REPEAT_SIGNAL_AFTER`` or more later, kills the
  children at once.
- A halt (a child that cannot start, see :mod:`pscheduler.restarts`) stops
  the same way, with its own exit code.

The master owns the loop and the children; ``Shutdown`` only records that
a stop has begun and with which exit code, and signals the children.
"""
import logging

from . import exitcodes, systemd
from .handles import SHUTDOWN

log = logging.getLogger(__name__)

STOP_GRACE = 5.0      # beyond shutdown_timeout, before a child gets SIGKILL
REPEAT_SIGNAL_AFTER = 1.0  # a second stop signal sooner is the same stop


class Shutdown:
    """The master's stop, once begun: its exit code, and when the last stop
    signal came.

    ``children`` is the master's own dict (pid -> ChildHandle), shared, not
    copied: a stop reaches the children alive when it is asked for.
    """

    def __init__(self, children):
        self.children = children
        self.begun = False
        self.exit_code = None
        self.signal_at = float('-inf')

    def on_signal(self, name, now, shutdown_timeout):
        """SIGTERM or SIGINT (``name``) came at ``now``."""
        if self.begun and now - self.signal_at < REPEAT_SIGNAL_AFTER:
            # One stop sent twice at once (timeout(1), a service manager and
            # a shell trap signalling the whole group): not a second request.
            log.info('%s again at once: still stopping gracefully', name)
            return
        self.signal_at = now
        if self.begun:
            log.warning('%s again: killing the children now; their '
                        'unfinished jobs will be delivered again', name)
            self.kill_children()
            return
        log.info('%s: stopping; children finish their running jobs '
                 '(up to %gs)', name, shutdown_timeout)
        self.begin(exitcodes.OK)

    def begin(self, exit_code):
        """Ask every child to drain; the first exit code asked for wins."""
        if self.exit_code is None:
            self.exit_code = exit_code
        if self.begun:
            return
        self.begun = True
        systemd.stopping('stopping: children finish their running jobs')
        for child in self.children.values():
            child.request_stop(SHUTDOWN, STOP_GRACE)

    def halt(self, exit_code, message):
        """Stop everything because of ``message``; exit with ``exit_code``.

        Gentler than gunicorn's HaltServer: the other children drain."""
        log.error('%s; stopping pscheduler (exit code %d)', message,
                  exit_code)
        self.begin(exit_code)

    def abort(self, exit_code):
        """The master itself failed: kill the children, whatever stop was
        under way, and exit with ``exit_code``."""
        self.exit_code = exit_code
        self.kill_children()

    def kill_children(self):
        for child in self.children.values():
            child.kill(SHUTDOWN)


def enforce_kill_deadlines(children, now):
    """Kill the children asked to stop (for any reason: shutdown, reload,
    memory) that overstayed ``shutdown_timeout`` plus ``STOP_GRACE``."""
    for child in children:
        if child.kill_at is not None and now >= child.kill_at \
                and not child.killed:
            log.warning('child %d (queue %s) did not stop within %gs; '
                        'killing it', child.pid, child.label,
                        child.config.settings.shutdown_timeout + STOP_GRACE)
            child.kill(child.stop_reason)
