"""Combined mode (``scheduler.combined = true``): the web process runs jobs.

Two parts, both about running jobs in a process that is not a pscheduler
child:

- the start policy of the include (``setup_combined_mode``): on the first
  real request, or at ApplicationCreated with ``PYRAMID_SCHEDULER_CONSUME=1``,
  never with ``=0``;
- ``InProcessRunner``, behind ``Scheduler.start`` / ``shutdown``: start the
  runtime if this process can take every queue's job store, or stand by in a
  thread until it can (another web worker consumes already), and stop it at
  exit.

And ``ini_directory``, the fallback that finds the ini file's directory for
the default SQLite file when ``scheduler.database`` does not name one.
"""
import atexit
import inspect
import logging
import os
import threading

from pyramid.events import ApplicationCreated, NewRequest

log = logging.getLogger(__name__)

# Set to "0" to keep a process from running jobs in combined mode, or to "1"
# to let a script that never serves a request (bootstrap) run them anyway.
CONSUME_ENV = 'PYRAMID_SCHEDULER_CONSUME'


def setup_combined_mode(config, scheduler):
    """Run jobs in the web process, started by its first real request.

    Starting on the first request (not at ApplicationCreated) is what keeps
    scripts that load the app from consuming: pshell, bootstrap() and
    ``pscheduler --message`` never route a request, and ``prequest`` marks its
    one with ``paste.command_request``. It also keeps threads out of a
    pre-forking server's master (``gunicorn --preload``): the first request
    is served after the fork.
    """
    setting = os.environ.get(CONSUME_ENV, '').strip()
    if setting == '0':
        log.info('%s=0: this process does not run jobs', CONSUME_ENV)
        return
    if setting == '1':
        config.add_subscriber(_start_on_created(scheduler),
                              ApplicationCreated)
        return
    config.add_subscriber(_start_on_first_request(scheduler), NewRequest)


def _start_on_created(scheduler):
    def subscriber(event):
        scheduler.start()
    return subscriber


def _start_on_first_request(scheduler):
    def subscriber(event):
        if scheduler.runtime is not None or \
                event.request.environ.get('paste.command_request'):
            return
        scheduler.start()
    return subscriber


def ini_directory():
    """The directory of the ini file being loaded, for the SQLite default.

    Call it from ``includeme`` itself: the two frames above it (this one and
    the include) are skipped. PasteDeploy passes ``here`` to the app factory
    in ``global_config`` but not in the settings that reach a Configurator,
    so we look for its loader context up the stack. Failing that,
    ``scheduler.database`` or the current directory decide (see README.rst);
    ``scheduler.database = %(here)s/pscheduler.sqlite`` needs no walk.
    """
    for frame_info in inspect.stack(context=0)[2:40]:
        context = frame_info.frame.f_locals.get('context')
        global_conf = getattr(context, 'global_conf', None)
        if isinstance(global_conf, dict) and global_conf.get('here'):
            return global_conf['here']
    return None


class InProcessRunner:
    """Runs a scheduler's jobs in this process, or stands by to.

    ``make_runtime(queues)`` builds a runtime (``Scheduler.make_runtime``);
    ``on_exit`` is registered with atexit once a runtime runs, so that the
    process drains its jobs when it exits (``Scheduler.shutdown``).
    """

    def __init__(self, make_runtime, on_exit):
        self.runtime = None
        self._make_runtime = make_runtime
        self._on_exit = on_exit
        self._start_lock = threading.Lock()
        self._standby = None
        self._stopping = threading.Event()

    def start(self, queues=None, standby_interval=2.0):
        """Start at once if this process can take every queue's job store;
        otherwise a standby thread keeps trying, so another process that
        consumes already (another web worker) keeps doing it alone, and this
        one takes over if it dies."""
        with self._start_lock:
            if self.runtime is not None or self._standby is not None:
                return
            self._stopping.clear()
            runtime = self._make_runtime(queues)
            if runtime.acquire_stores():
                self._run(runtime)
                return
            log.info('another process runs the jobs of queue(s) %s; this one '
                     'stands by to take over', ', '.join(runtime.queues))
            self._standby = threading.Thread(
                target=self._wait_for_stores,
                args=(runtime, standby_interval),
                name='pscheduler-standby', daemon=True)
            self._standby.start()

    def _wait_for_stores(self, runtime, interval):
        stopping = self._stopping.is_set
        while not runtime.acquire_stores(timeout=interval,
                                         should_stop=stopping):
            if stopping():
                break
        with self._start_lock:
            self._standby = None
            if stopping():
                # stop() was called while waiting: never start after it.
                runtime.release_stores()
                return
            self._run(runtime)

    def _run(self, runtime):
        runtime.start()
        self.runtime = runtime
        atexit.register(self._on_exit)

    def stop(self, timeout=None):
        """Stop the runtime (drains; see Runtime.stop) or the standby."""
        self._stopping.set()
        with self._start_lock:
            runtime, self.runtime = self.runtime, None
        if runtime is not None:
            runtime.stop(timeout)
