"""Running a lone async job in the thread that received it.

A job handed to a worker thread starts only once the operating system has
woken that thread, and on an idle machine that wake-up is a large share of
the time to execution: 0.19-0.31 ms p50 between the hand-off and the
worker's start, of about 1.3 ms in all, on the project's 2-core bench VM
(Redis, one job at a time). Huey's worker, which takes its message itself,
has one wake-up fewer.

So when the pool is idle (no job queued or running), the thread turning the
consumer loop keeps the job (:meth:`InlineJobs.submit`) and runs it itself
right after the turn that received it, while one worker of the pool stands
in for it (:meth:`InlineJobs.after_turn`): the stand-in turns the loop
(new messages, acknowledgements, heartbeats, stop requests) until the job
has ended. A message that arrives meanwhile goes to the pool as always,
and so do all the jobs of a turn that brings several (a stream). At
most one job runs so at a time, and the stand-in holds a worker while it
does, so ``scheduler.executor.size`` still bounds the jobs running at once.
Under a stream of messages the pool is rarely idle, and jobs go to the
workers as before.
"""
import logging
import threading

log = logging.getLogger(__name__)


class InlineJobs:
    """The worker pool as the dispatcher sees it (``submit``), keeping a
    lone job for the thread that turns the consumer loop."""

    def __init__(self, pool):
        self.pool = pool
        self._lock = threading.Lock()
        self._turning = None   # ident of the thread in a turn of the loop
        self._kept = None      # (fn, args) kept for that thread to run
        self._running = False  # a kept job runs

    def turning(self):
        """The calling thread is turning the consumer loop."""
        self._turning = threading.get_ident()

    def submit(self, fn, *args):
        """Run ``fn(*args)``: in the turning thread after its turn if
        nothing else runs, else in the pool."""
        with self._lock:
            kept, self._kept = self._kept, None
            if (kept is None and not self._running
                    and self._turning == threading.get_ident()
                    and self.pool.idle()):
                self._kept = (fn, args)
                return
        if kept is not None:
            # A second job in the same turn: a stream, which the pool
            # serves; the kept one goes first, as it came.
            self.pool.submit(kept[0], *kept[1])
        self.pool.submit(fn, *args)

    def after_turn(self, turn):
        """In the consumer thread, after each turn: run the job it kept, if
        any, while a worker turns the loop with ``turn()`` (which returns
        False once the loop has ended)."""
        call = self._take()
        if call is None:
            return
        done = threading.Event()
        try:
            self.pool.lend(self._stand_in, turn, done)
        except RuntimeError:
            pass   # the pool is shut down (stopping): the job runs anyway
        try:
            self._run(call)
        finally:
            done.set()

    def _stand_in(self, turn, done):
        """In a worker: turn the loop until the consumer thread's job has
        ended. A job kept in the last turn (the consumer thread is back,
        and turns the loop from now on) runs here."""
        while not done.is_set() and self._kept is None:
            if not turn():
                break
        call = self._take()
        if call is not None:
            self._run(call)

    def _take(self):
        with self._lock:
            call, self._kept = self._kept, None
            if call is not None:
                self._running = True
            return call

    def _run(self, call):
        fn, args = call
        try:
            fn(*args)
        except BaseException:
            # As in the pool: the runtime's calls handle their own errors.
            log.exception('a job run in the consumer thread failed')
        finally:
            self._running = False
