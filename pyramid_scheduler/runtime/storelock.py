"""One runtime per job store: an exclusive lock that dies with its process.

Two schedulers on one job store would run every deferred job twice
(APScheduler's stores do no locking of their own), so each runtime holds an
``flock`` on a file named after its job store and queue. The kernel releases
it when the process dies, however it dies, so a SIGKILLed child never leaves a
stale lock behind. It is a same-machine guarantee: pscheduler and combined
mode both run their consumers on one host.
"""
import fcntl
import hashlib
import os
import tempfile
import time


def lock_path(settings, queue):
    if settings.jobstore_url == 'sqlite:///' + settings.database_path:
        return f'{settings.database_path}.{queue}.lock'
    key = hashlib.sha1(
        f'{settings.jobstore_url}\0{settings.scheduler_id}\0{queue}'.encode()
    ).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f'pscheduler-{key}.lock')


class StoreLock:
    def __init__(self, path):
        self.path = path
        self._handle = None

    def try_acquire(self):
        """Take the lock if it is free; return whether this process holds it."""
        if self._handle is not None:
            return True
        os.makedirs(os.path.dirname(self.path) or '.', exist_ok=True)
        handle = open(self.path, 'a+')
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        except BaseException:
            handle.close()
            raise
        self._handle = handle
        return True

    def acquire(self, timeout, should_stop=lambda: False, interval=0.05):
        """Wait up to ``timeout`` seconds for the lock.

        Polls instead of blocking in flock() so a signal handler that asks
        the process to stop is acted on at once.
        """
        deadline = time.monotonic() + timeout
        while not self.try_acquire():
            if should_stop() or time.monotonic() >= deadline:
                return False
            time.sleep(interval)
        return True

    @property
    def held(self):
        return self._handle is not None

    def release(self):
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
