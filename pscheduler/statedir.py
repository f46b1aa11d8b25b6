"""The master's state directory: what its processes share on this host.

Made by each master run, before the first fork, and removed when it
stops. It holds the process table the master writes (pyramid_scheduler.
daemonview) and ``metrics/``, where every process writes its Prometheus
metrics: prometheus_client's multiprocess mode, which reads
``PROMETHEUS_MULTIPROC_DIR`` when it is first imported, so the variable
is set here, in the master that never imports it, and every child
inherits it. The directory is always our own (a value the environment
had is replaced): its files must start empty with the daemon, or
counters "since the daemon started" would include an earlier run.
"""
import os
import shutil
import sys
import tempfile

from pyramid_scheduler.daemonview import metrics_dir

MULTIPROC_VARIABLE = 'PROMETHEUS_MULTIPROC_DIR'


class StateDir:
    def __init__(self, parent=None):
        self.parent = parent
        self.path = None

    @property
    def metrics_dir(self):
        return metrics_dir(self.path)

    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix=f'pscheduler-{os.getpid()}-',
                                     dir=self.parent)
        os.mkdir(self.metrics_dir)
        self._previous = os.environ.get(MULTIPROC_VARIABLE)
        os.environ[MULTIPROC_VARIABLE] = self.metrics_dir
        refresh_value_class()
        return self

    def __exit__(self, *exc_info):
        if self._previous is None:
            os.environ.pop(MULTIPROC_VARIABLE, None)
        else:
            os.environ[MULTIPROC_VARIABLE] = self._previous
        shutil.rmtree(self.path, ignore_errors=True)

    def forget_process(self, pid):
        """A process is gone: its per-process gauges (jobs in flight, ...)
        leave the metrics; its counters stay, summed into the totals."""
        from prometheus_client.multiprocess import mark_process_dead
        mark_process_dead(pid, self.metrics_dir)


def refresh_value_class():
    """prometheus_client picks how values are kept when it is imported: if
    something imported it before the variable was set (a plugin of the
    ini's logging, say), have it pick again, or the children would keep
    their counters in memory, lost with them."""
    values = sys.modules.get('prometheus_client.values')
    if values is not None:
        values.ValueClass = values.get_value_class()
