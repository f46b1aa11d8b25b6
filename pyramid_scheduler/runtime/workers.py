"""The threads that run async jobs: a fixed pool fed by one queue, and the
count of jobs in flight.

``concurrent.futures.ThreadPoolExecutor`` builds a Future and a work item,
takes two locks and checks whether to start a thread on every ``submit``.
Nobody waits on an async job's result (the job acknowledges its own
message), and at thousands of jobs a second that bookkeeping was a quarter
of the consumer thread's time; a put on a ``SimpleQueue`` is all a hand-off
needs.
"""
import logging
import queue
import threading

log = logging.getLogger(__name__)

_STOP = None


class WorkerPool:
    """``size`` threads calling what :meth:`submit` gives them, in order."""

    def __init__(self, size, name):
        self._size = size
        self._name = name
        self._calls = queue.SimpleQueue()
        self._shut_down = False
        self._threads = []
        # Calls submitted and not ended (queued or running); not the lent.
        self._busy = 0
        self._busy_lock = threading.Lock()

    def start(self):
        """Start the threads (never before a fork: the runtime's start)."""
        self._threads = [
            threading.Thread(target=self._work, name=f'{self._name}_{number}',
                             daemon=True)
            for number in range(self._size)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn, *args):
        if self._shut_down:
            raise RuntimeError('the worker pool is shut down')
        with self._busy_lock:
            self._busy += 1
        self._calls.put((fn, args, True))

    def lend(self, fn, *args):
        """Lend a thread to ``fn(*args)``, which runs no job but stands in
        for the consumer thread (inline.py): not counted by :meth:`idle`."""
        if self._shut_down:
            raise RuntimeError('the worker pool is shut down')
        self._calls.put((fn, args, False))

    def idle(self):
        """True while no submitted call is queued or running."""
        return not self._busy and not self._shut_down

    def shutdown(self):
        """Drop the calls not started yet; threads end after their current
        one. Returns how many calls were dropped."""
        self._shut_down = True
        dropped = 0
        while True:
            try:
                _, _, counted = self._calls.get_nowait()
            except queue.Empty:
                break
            dropped += counted
            with self._busy_lock:
                self._busy -= counted
        for _ in self._threads:
            self._calls.put(_STOP)
        return dropped

    def liveness(self):
        """None while every thread is alive (or the pool is shut down)."""
        dead = sum(1 for thread in self._threads if not thread.is_alive())
        if dead and not self._shut_down:
            return f'{dead} of its {len(self._threads)} threads have died'
        return None

    def finished(self):
        """True once every thread has ended (after :meth:`shutdown`)."""
        return not any(thread.is_alive() for thread in self._threads)

    def _work(self):
        while True:
            call = self._calls.get()
            if call is _STOP:
                return
            fn, args, counted = call
            try:
                fn(*args)
            except BaseException:
                # The runtime's calls handle their own errors; whatever
                # escapes must not cost the pool a thread.
                log.exception('a worker call failed')
            finally:
                if counted:
                    with self._busy_lock:
                        self._busy -= 1


class InFlight:
    """Jobs running, or queued to run, in this runtime (async and deferred):
    a stopping runtime waits for them. Counted from any thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._count = 0

    def add(self, delta):
        with self._lock:
            self._count += delta

    @property
    def count(self):
        with self._lock:
            return self._count
