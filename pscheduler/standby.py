"""A child whose queue's job store another process owns: the standby.

The store's owner may be a pscheduler on another host (sharing a broker and
a PostgreSQL job store: see README "Several machines"), or a combined-mode
web process. Meanwhile the standby serves the queue's async jobs in a
runtime that owns no store (as the children of slots 1 and up do), so every
host takes its share of them; it tells the master it stands by (ready, for
systemd too, whose STATUS says so) and tries to take the store every beat
(a tenth of ``scheduler.failover``). Once it has it, the child starts its
owner runtime at once, and the async one drains in the background: the jobs
it runs finish, those it had not started go back to the broker.
"""
import logging
import threading
import time

log = logging.getLogger(__name__)

# How often a standby says whose store it waits for.
LOCK_WAIT_LOG_INTERVAL = 10
ASYNC_ONLY = 'standby'        # the slot of its runtime of async jobs


class StandbyFailed(Exception):
    """The standby's runtime of async jobs died or did not start."""


class Standby:
    """Serve a queue's async jobs until its job store is ours."""

    def __init__(self, child, scheduler, on_hard_limit):
        self.child = child
        self.scheduler = scheduler
        self.on_hard_limit = on_hard_limit
        self.runtime = None      # the runtime of async jobs, while standing by
        self._draining = None    # the thread stopping it, once taken over

    def wait_for_store(self, owner):
        """True once ``owner`` (the child's runtime) holds its job stores;
        False if the child was told to stop first."""
        if owner.acquire_stores():
            return True
        self._start_async_runtime()
        try:
            return self._stand_by(owner)
        except BaseException:
            if self._draining is None:
                self.runtime.stop(timeout=0)
            raise

    def _stand_by(self, owner):
        next_log = time.monotonic()
        self.child.spec.reports.standby(describe_owners(owner))
        while True:
            if owner.acquire_stores(timeout=1,
                                    should_stop=self._beat_and_check):
                log.warning('queue %s: taking over the job store',
                            self.child.label)
                self._drain_in_background()
                return True
            if self.child.should_stop():
                self.runtime.stop()
                return False
            problem = (self.runtime.problem() or
                       (None if self.runtime.running else
                        'its runtime of async jobs stopped by itself'))
            if problem is not None:
                raise StandbyFailed(f'standing by: {problem}')
            if time.monotonic() >= next_log:
                log.warning('queue %s: standing by: the job store is owned '
                            'by %s', self.child.label, describe_owners(owner))
                next_log = time.monotonic() + LOCK_WAIT_LOG_INTERVAL

    def _start_async_runtime(self):
        self.runtime = self.scheduler.make_runtime([self.child.queue],
                                                   slot=ASYNC_ONLY)
        self.runtime.limits.on_hard_limit = self.on_hard_limit
        try:
            self.runtime.start()
        except Exception as exc:
            log.exception('queue %s: the standby\'s runtime of async jobs '
                          'did not start', self.child.label)
            self.runtime.stop(timeout=0)
            raise StandbyFailed(f'the runtime of async jobs did not start: '
                                f'{type(exc).__name__}: {exc}') from exc

    def _beat_and_check(self):
        self.child.spec.heartbeat.beat(
            time.time() - self.runtime.state.seconds_since_beat())
        return self.child.should_stop()

    def _drain_in_background(self):
        self._draining = threading.Thread(
            target=self.runtime.stop, name='pscheduler-standby-drain',
            daemon=True)
        self._draining.start()

    def finish(self, timeout):
        """Wait (up to ``timeout`` seconds) for the async runtime's drain."""
        if self._draining is not None:
            self._draining.join(timeout)


def describe_owners(runtime):
    """``host db1 pid 42``: who owns the runtime's job stores (logs and
    systemd's STATUS); read from the stores, so it may fail."""
    try:
        owners = runtime.store_owners()
    except Exception as exc:
        return f'another process (unknown: {type(exc).__name__}: {exc})'
    return ', '.join(f'host {o["host"]} pid {o["pid"]}' if o
                     else 'another process' for o in owners.values())
