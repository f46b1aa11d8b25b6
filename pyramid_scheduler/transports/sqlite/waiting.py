"""How one process' transport waits for work, and is woken.

A :class:`Waiter` is what a process owns of the consumer side of a
transport: its :class:`~.wakeups.WakeBox` (made on first use), the
:class:`~.wakeups.WakeFlags` handshake with the threads that want the
consumer awake, how many consumers listen on each queue, and when the
fallback poll and the next reclaim are due. :meth:`Waiter.drain` is the
loop of ``drain_events``: it queries the database only when there may be
something to get (a wake-up, a delivery, freed prefetch room, a new
consumer) or when the fallback poll is due; otherwise it sleeps on the
wake-up sockets. The transport makes one per process and never uses its
parent's after a fork (transport.py).
"""
import logging
import os
import socket
import threading
import time
from queue import Empty

from .wakeups import WakeBox, WakeFlags, wake_directory

log = logging.getLogger(__name__)


class Waiter:
    """The wake-ups and the drain loop of one process' transport.

    ``path``: the database (its wake-up sockets live beside it);
    ``use_wakeups``, ``polling_interval``, ``reclaim_interval``: the
    transport's options (see the package docstring).
    """

    def __init__(self, path, use_wakeups, polling_interval,
                 reclaim_interval):
        self.path = path
        self.use_wakeups = use_wakeups
        self.polling_interval = polling_interval
        self.reclaim_interval = reclaim_interval
        self.pid = os.getpid()
        self.flags = WakeFlags(self._ring)
        self.listening = {}  # queue -> consumer count
        self._box = None
        self._box_lock = threading.Lock()
        self._next_poll = 0.0
        self._next_reclaim = 0.0

    @property
    def box(self):
        """This process' WakeBox, made on first use."""
        if self._box is None:
            with self._box_lock:  # interrupt() may come from another thread
                if self._box is None:
                    self._box = WakeBox(wake_directory(self.path))
        return self._box

    # --- the wakers' side ---
    def notify(self, queue):
        """Wake the consumers of ``queue`` (a message is there for them)."""
        if self.use_wakeups:
            try:
                self.box.notify(queue)
            except Exception:  # a wake-up is an optimization, never an error
                log.debug('wake-up of %s failed', queue, exc_info=True)

    def _ring(self):
        """Wake the ``drain`` asleep in this process' WakeBox."""
        if self.pid == os.getpid():
            self.box.interrupt()

    # --- who listens ---
    def listen(self, queue):
        self.listening[queue] = self.listening.get(queue, 0) + 1
        if self.use_wakeups:
            self.box.listen(queue)
        self.flags.dirty = True
        self._next_reclaim = 0.0  # a consumer reclaims when it starts

    def unlisten(self, queue):
        count = self.listening.get(queue, 0) - 1
        if count > 0:
            self.listening[queue] = count
        else:
            self.listening.pop(queue, None)
        if self._box is not None:
            self._box.unlisten(queue)

    def close(self):
        """Close the wake-up sockets; nobody listens any more."""
        if self._box is not None:
            self._box.close()
        self._box = None
        self.listening = {}

    # --- the drain loop ---
    def drain(self, deliver, reclaim, timeout=None):
        """Call ``deliver()`` (raises Empty if nothing came) until it
        delivers; raise ``socket.timeout`` after ``timeout``.

        ``reclaim()`` takes back the leases of dead owners, every
        ``reclaim_interval`` while consumers listen.
        """
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        last_look = False
        while True:
            self._reclaim_if_due(now, reclaim)
            if self._deliver_if_dirty(now, deliver):
                return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                # One last look at wake-ups that came in meanwhile (what
                # timeout=0 relies on), then give up.
                if last_look or not self._woken_meanwhile():
                    raise socket.timeout()
                last_look = True
                continue
            self._raise_if_interrupted()
            self._sleep(self._next_wait(now, deadline))
            self._raise_if_interrupted()
            now = time.monotonic()

    def _reclaim_if_due(self, now, reclaim):
        """Every ``reclaim_interval`` while consuming (and at once when a
        consumer starts): take back the leases of dead owners."""
        if not self.listening or now < self._next_reclaim:
            return
        self._next_reclaim = now + self.reclaim_interval
        try:
            reclaim()
        except Exception:  # never worth stopping a consumer for
            log.warning('could not reclaim abandoned messages',
                        exc_info=True)

    def _deliver_if_dirty(self, now, deliver):
        """Lease and deliver if there may be something, or the fallback
        poll is due; True if a message was delivered."""
        if not (self.flags.take_dirty() or now >= self._next_poll):
            return False
        self._next_poll = now + self.polling_interval
        try:
            deliver()
        except Empty:
            return False
        return True

    def _woken_meanwhile(self):
        """True (and dirty) if a wake-up came in since the last look."""
        if self.use_wakeups and (self.flags.dirty or self.box.wait(0)):
            self.flags.dirty = True
            return True
        return False

    def _next_wait(self, now, deadline):
        """Seconds until the fallback poll, a reclaim or the deadline."""
        wait = self._next_poll - now
        if self.listening:
            wait = min(wait, self._next_reclaim - now)
        if deadline is not None:
            wait = min(wait, deadline - now)
        return wait

    def _sleep(self, wait):
        """Sleep up to ``wait`` seconds, less if woken or dirty already."""
        if self.use_wakeups:
            self.flags.sleep(self.box.wait, wait)
        elif wait > 0 and not self.flags.dirty:
            time.sleep(wait)

    def _raise_if_interrupted(self):
        if self.flags.take_interrupt():
            raise socket.timeout()
