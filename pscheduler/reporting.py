"""What the master shows of the daemon: the process table and the metrics
server, driven by the master's loop.

Both are optional (the master's rules are tested without them): with no
state directory there is no table, with no ``scheduler.metrics.bind`` no
server. The master calls these hooks at the points of its loop where
they belong, and never waits on them.
"""
from .metricsserver import MetricsServer
from .processtable import ProcessTable


class Reporting:
    def __init__(self, state=None, metrics_bind=None):
        """``state``: a statedir.StateDir, entered; ``metrics_bind``:
        ``(host, port)`` to serve metrics on (bound now: ExitError if it
        cannot be)."""
        self.state = state
        self.metrics = (MetricsServer(metrics_bind, state.path)
                        if metrics_bind and state is not None else None)
        self.table = (ProcessTable(state.path, self.metrics_pid)
                      if state is not None else None)

    def metrics_pid(self):
        return self.metrics.pid if self.metrics is not None else None

    def fds(self):
        """What the master's other children must close."""
        return self.metrics.fds() if self.metrics is not None else ()

    @property
    def running(self):
        """A process of ours is still to be reaped."""
        return self.metrics is not None and self.metrics.running

    def supervise(self, stopping, now, close_in_child):
        if self.metrics is None:
            return
        if stopping:
            self.metrics.stop()
        else:
            self.metrics.ensure_running(now, close_in_child)

    def next_deadline(self):
        """When the metrics server may start again; None: nothing due."""
        metrics = self.metrics
        if metrics is None or metrics.running or metrics.stopped:
            return None
        return metrics.start_after

    def reaped(self, pid, code, now):
        """A process exited: True if it was the metrics server."""
        if self.metrics is not None and self.metrics.exited(pid, code, now):
            return True
        if self.state is not None:
            self.state.forget_process(pid)
        return False

    def child_exited(self, child, code, stopping):
        if self.table is not None:
            self.table.child_exited(child, code, stopping)

    def update(self, master):
        if self.table is not None:
            self.table.update(master)

    def stop_now(self):
        """The master failed: no one will reap gracefully."""
        if self.metrics is not None and self.metrics.pid is not None:
            self.metrics.stop()

    def close(self):
        if self.metrics is not None:
            self.metrics.close()
