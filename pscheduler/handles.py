"""The master's handle on one child process, the fork that makes it and
the wait that reaps it (the other side of the fork is pscheduler.child).

Everything the child needs from the master (its heartbeat file, its report
pipe) is created just before the fork and is nothing but file descriptors;
the child closes those of its siblings and the master's signal pipe at once.
"""
import logging
import os
import signal
import sys
import time

import psutil

from . import child as child_main
from .channel import ReportReader, ReportWriter, open_channel
from .heartbeat import Heartbeat
from .titles import slot_label

log = logging.getLogger(__name__)

# Why the master stops a child (ChildHandle.stop_reason); any other exit is
# unexpected, and only HUNG is the child's own fault.
RELOAD = 'reload'
MEMORY_LIMIT = 'memory limit'
QUEUE_REMOVED = 'queue removed'
SLOT_REMOVED = 'fewer processes for its queue'
SHUTDOWN = 'shutdown'
HUNG = 'no heartbeat'
PLANNED_STOPS = (RELOAD, MEMORY_LIMIT, QUEUE_REMOVED, SLOT_REMOVED,
                 SHUTDOWN)


class ChildHandle:
    """One child as the master sees it: pid, state, and how to reach it."""

    def __init__(self, pid, queue, generation, config, heartbeat, reports,
                 slot=0, clock=time.monotonic):
        self.pid = pid
        self.queue = queue
        self.slot = slot               # which of the queue's processes
        self.label = slot_label(queue, slot, config.settings.processes(queue))
        self.generation = generation   # which reload of the ini it runs
        self.config = config
        self.heartbeat = heartbeat
        self.reports = reports
        self.clock = clock             # the master's
        self.started_at = clock()
        self.started_wall = time.time()  # for the process table
        self.ready_at = None
        # Who owns its job store while it stands by (channel.STANDBY).
        self.standby = None
        self.error = None
        self.stop_reason = None        # why the master asked it to go
        self.kill_at = None            # when a stopping child gets SIGKILL
        self.killed = False

    def __repr__(self):
        return f'<child {self.pid} queue {self.label}>'

    @property
    def slot_key(self):
        return (self.queue, self.slot)

    @property
    def ready(self):
        return self.ready_at is not None

    def mark_ready(self):
        self.ready_at = self.clock()

    def uptime(self):
        return self.clock() - self.started_at

    def served_for(self):
        """Seconds since it reported ready; 0 if it never did."""
        return self.clock() - self.ready_at if self.ready else 0.0

    def request_stop(self, reason, grace):
        """SIGTERM: drain and exit; SIGKILL comes after the drain timeout."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        self.kill_at = (self.clock()
                        + self.config.settings.shutdown_timeout + grace)
        self.send_signal(signal.SIGTERM)

    def kill(self, reason):
        self.stop_reason = self.stop_reason or reason
        self.killed = True
        self.send_signal(signal.SIGKILL)

    def send_signal(self, signum):
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass  # already dead; the master reaps it on its next turn

    def read_reports(self):
        return self.reports.read() if self.reports.fd is not None else []

    def seconds_since_heartbeat(self):
        return self.heartbeat.seconds_since_beat()

    def rss(self):
        """Resident memory in bytes, or None if the process is gone."""
        try:
            return psutil.Process(self.pid).memory_info().rss
        except psutil.Error:
            return None

    def fds(self):
        return tuple(fd for fd in (self.reports.fd, self.heartbeat.fd)
                     if fd is not None)

    def close(self):
        self.reports.close()
        self.heartbeat.close()


def describe_exit(code):
    """How logs say a child ended: ``exit code 3``, ``killed by SIGKILL``."""
    if code < 0:
        try:
            return f'killed by {signal.Signals(-code).name}'
        except ValueError:
            return f'killed by signal {-code}'
    return f'exit code {code}'


def spawn(queue, config, generation, slot, close_in_child,
          report_modules=False, clock=time.monotonic, state_dir=None):
    """Fork a child serving ``queue`` in ``slot``; return its handle (in
    the master)."""
    heartbeat = Heartbeat()
    read_fd, write_fd = open_channel()
    master_pid = os.getpid()
    flush_output()
    # Signals wait until the child has its own handlers: a SIGTERM sent the
    # moment after the fork must reach the child's handler, not a copy of
    # the master's.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK,
                                  child_main.SIGNALS_BLOCKED_ACROSS_FORK)
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for fd in (read_fd, write_fd):
            os.close(fd)
        heartbeat.close()
        raise
    if pid == 0:
        signal.set_wakeup_fd(-1)  # before its descriptor is closed
        os.close(read_fd)
        for fd in close_in_child:
            close_quietly(fd)
        _run_child_and_exit(child_main.ChildSpec(
            queue=queue, config=config, master_pid=master_pid,
            heartbeat=heartbeat, reports=ReportWriter(write_fd),
            report_modules=report_modules, signal_mask=mask, slot=slot,
            processes=config.settings.processes(queue),
            state_dir=state_dir))
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    os.close(write_fd)
    return ChildHandle(pid, queue, generation, config, heartbeat,
                       ReportReader(read_fd), slot, clock)


def reap():
    """Yield ``(pid, exit code)`` of each child that has exited, at once."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, os.waitstatus_to_exitcode(status)


def _run_child_and_exit(spec):
    """Run the child; never return into the master's code below the fork.

    ``os._exit`` skips the master's ``finally`` blocks and atexit handlers
    (its pidfile removal, for one), which are not the child's business.
    """
    code = 1
    try:
        code = child_main.Child(spec).run()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        log.exception('queue %s: child %d failed', spec.queue, os.getpid())
    finally:
        flush_output()
        os._exit(code)


def flush_output():
    """Flush before forking and exiting, so no line is lost or doubled."""
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def close_quietly(fd):
    try:
        os.close(fd)
    except OSError:
        pass
