"""A runtime's lifecycle, as its threads see it.

The owner of the runtime (a pscheduler child, or combined mode) asks it to
stop and waits for it to be ready or drained; the consumer thread beats,
says when it is ready and drained, and looks for a stop request at each
turn; the dispatcher refuses new work once a stop is requested. One small
object they share, so none of them needs the :class:`Runtime` itself.

:class:`ThreadWatch`: every thread the runtime depends on (the consumer,
APScheduler's, the worker pool, the WAL checkpointers...) answers whether
it is alive; a pscheduler child whose thread died or is stuck exits, with
the reason, so that the master replaces it. Before, only the consumer
thread was watched: an APScheduler thread killed by a job store error left
a child answering ``ping`` whose deferred jobs never fired again.
"""
import threading
import time

ALIVE = 'alive'


class RunState:
    """Stop requested, ready, drained, and the last sign of life."""

    def __init__(self):
        self.stop_requested = threading.Event()
        # The consumer is consuming (and has restored what it should).
        self.ready = threading.Event()
        # The consumer thread has ended.
        self.drained = threading.Event()
        # Set by the consumer thread (read by the owner, waiting for ready):
        # the last error connecting to the broker, and the broker's refusal
        # of our configuration, which ends the consumer thread.
        self.connection_problem = None
        self.refusal = None
        self._last_beat = time.monotonic()
        self.threads = ThreadWatch()

    def beat(self):
        """The consumer thread is alive (it turned, or tried to reconnect)."""
        self._last_beat = time.monotonic()

    def seconds_since_beat(self):
        return time.monotonic() - self._last_beat

    @property
    def stopping(self):
        return self.stop_requested.is_set()


class ThreadWatch:
    """Named checks of the threads a runtime depends on; each check
    returns None while its thread is fine, else what is wrong."""

    def __init__(self):
        self._checks = {}

    def watch(self, name, check):
        self._checks[name] = check

    def report(self):
        """``{thread: 'alive' or what is wrong}``, for ``status``."""
        report = {}
        for name, check in list(self._checks.items()):
            try:
                problem = check()
            except Exception as exc:
                problem = f'cannot tell ({type(exc).__name__}: {exc})'
            report[name] = problem or ALIVE
        return report

    def problem(self):
        """The first thread that is dead or stuck, with why; None if none."""
        for name, state in self.report().items():
            if state != ALIVE:
                return f'the {name} thread: {state}'
        return None
