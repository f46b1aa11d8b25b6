"""A runtime's lifecycle, as its threads see it.

The owner of the runtime (a pscheduler child, or combined mode) asks it to
stop and waits for it to be ready or drained; the consumer thread beats,
says when it is ready and drained, and looks for a stop request at each
turn; the dispatcher refuses new work once a stop is requested. One small
object they share, so none of them needs the :class:`Runtime` itself.
"""
import threading
import time


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

    def beat(self):
        """The consumer thread is alive (it turned, or tried to reconnect)."""
        self._last_beat = time.monotonic()

    def seconds_since_beat(self):
        return time.monotonic() - self._last_beat

    @property
    def stopping(self):
        return self.stop_requested.is_set()
