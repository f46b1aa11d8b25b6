"""What runs inside a child, after the fork: load the app, serve one queue.

The child starts from the master's memory, which holds no thread, socket or
database connection (the master never loads the application): everything
with a connection is made here, after the fork. It then

1. gets ready to live alone: its own signal handlers, its title, and a
   promise from the kernel to be told when the master dies;
2. loads the application and checks it includes pyramid_scheduler, not in
   combined mode (distinct exit codes, which the master turns into its own);
3. takes its queue's job store lock (never two schedulers on one store;
   while another process, on any host, owns it, the child stands by,
   running async jobs, and says so: standby.py), starts the runtime, waits
   for its broker's first answer and reports ``ready``: a broker that is
   down keeps it waiting (and saying why to the master), one that refuses
   the configuration (wrong password, no such database) ends it with exit
   code 3, as a job store that does;
4. beats its heartbeat while the runtime lives, until SIGTERM/SIGINT (a
   SignalQueue, as in the master: the wait ends at once) or the
   master's death, then drains: no new messages, running jobs finish.
"""
import contextlib
import ctypes
import functools
import dataclasses
import logging
import os
import signal
import sys
import threading
import time

from pyramid.exceptions import ConfigurationError

from . import exitcodes
from .config import get_loader
from .exitcodes import ExitError
from .signals import SignalQueue
from .standby import Standby, StandbyFailed
from .titles import child_title, set_title, slot_label

log = logging.getLogger(__name__)

LOOP_INTERVAL = 0.2          # how often the main loop beats, at most
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_AFTER_PROBLEM = 10      # most seconds a child with a dead thread stops
PR_SET_PDEATHSIG = 1         # <linux/prctl.h>
# Blocked by the master across the fork, unblocked by the child once its
# own handlers are in place.
SIGNALS_BLOCKED_ACROSS_FORK = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                               signal.SIGCHLD)


@dataclasses.dataclass
class ChildSpec:
    queue: str
    config: object          # pscheduler.config.DaemonConfig
    master_pid: int
    heartbeat: object       # pscheduler.heartbeat.Heartbeat
    reports: object         # pscheduler.channel.ReportWriter
    report_modules: bool    # --reload: tell the master which files to watch
    signal_mask: frozenset = frozenset()  # to restore once handlers are set
    slot: int = 0           # which of the queue's processes; 0 owns its store
    processes: int = 1      # how many serve the queue
    # The master's state directory (pscheduler.statedir): the process
    # table that ``status`` reads; None when run without a master.
    state_dir: str = None


class BootError(Exception):
    def __init__(self, message, code=exitcodes.BOOT_FAILED):
        super().__init__(message)
        self.code = code


class Child:
    def __init__(self, spec):
        self.spec = spec
        self.queue = spec.queue
        # How logs name this child: the queue, and which of its processes.
        self.label = slot_label(spec.queue, spec.slot, spec.processes)
        self.stop_signal = None
        self.signals = None   # a SignalQueue, once forked
        self.standby = None   # a standby.Standby, once booting

    def run(self):
        """The child's whole life; returns its exit code."""
        self.prepare_after_fork()
        log.info('queue %s: child %d starting', self.label, os.getpid())
        try:
            runtime = self.boot()
        except BootError as exc:
            log.error('queue %s: child %d cannot start: %s', self.label,
                      os.getpid(), exc)
            self.spec.reports.failed(exc)
            return exc.code
        if runtime is None:
            return exitcodes.OK  # asked to stop before it had started
        try:
            reached = self.await_broker(runtime)
        except BootError as exc:
            log.error('queue %s: child %d cannot start: %s', self.label,
                      os.getpid(), exc)
            self.spec.reports.failed(exc)
            runtime.stop(timeout=0)
            return exc.code
        if not reached:  # asked to stop while the broker was away
            return self.drain(runtime)
        self.spec.reports.ready(self.module_files())
        return self.serve(runtime)

    # --- 1. after the fork -------------------------------------------------

    def prepare_after_fork(self):
        # Recorded by the handler, and waking the serve loop at once: a stop
        # is not left waiting for the loop's next beat.
        self.signals = SignalQueue(STOP_SIGNALS)
        self.signals.install()
        # A reload is the master's business: it replaces us when it wants to.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, self.spec.signal_mask)
        die_with_parent(signal.SIGTERM)
        set_title(child_title(self.queue, self.spec.slot,
                              self.spec.processes))

    def should_stop(self):
        if self.stop_signal is None:
            received = self.signals.pop_all()
            if received:
                self.stop_signal = received[0]
        if self.stop_signal is not None:
            return True
        if os.getppid() != self.spec.master_pid:
            # PR_SET_PDEATHSIG covers this on Linux; this covers the rest,
            # and a master that died before prctl() was called.
            log.warning('queue %s: the pscheduler master %d is gone; '
                        'stopping', self.label, self.spec.master_pid)
            self.stop_signal = signal.SIGTERM
            return True
        return False

    # --- 2 and 3. boot -----------------------------------------------------

    def boot(self):
        """Load the app and start the runtime; None if told to stop first."""
        scheduler = self.load_scheduler()
        self.spec.heartbeat.beat()
        if self.should_stop():
            return None
        runtime = scheduler.make_runtime([self.queue], slot=self.spec.slot)
        runtime.state_dir = self.spec.state_dir
        runtime.limits.on_hard_limit = functools.partial(
            exit_past_hard_time_limit, self.spec.reports)
        try:
            if not self.acquire_store(runtime, scheduler):
                return None
            runtime.start()
        except BootError:
            runtime.stop(timeout=0)
            raise
        except ConfigurationError as exc:  # a job store refusing us
            runtime.stop(timeout=0)
            raise BootError(one_line(exc), exitcodes.CONFIG) from exc
        except Exception as exc:
            log.exception('queue %s: the job runtime did not start',
                          self.label)
            runtime.stop(timeout=0)
            raise BootError(f'the job runtime did not start: '
                            f'{type(exc).__name__}: {one_line(exc)}') from exc
        self.spec.heartbeat.beat()
        return runtime

    def load_scheduler(self):
        config = self.spec.config
        try:
            # pyramid.paster.get_app, without plaster's search for a loader
            # (see config.get_loader): a child restarted after a crash
            # serves its queue that much sooner.
            app = get_loader(config.config_uri).get_wsgi_app(config.app_name)
        except ExitError as exc:
            raise BootError(str(exc), exitcodes.CONFIG) from exc
        except ConfigurationError as exc:
            log.exception('queue %s: the application in %s is misconfigured',
                          self.label, config.ini_path)
            raise BootError(f'configuration error: {configuration_error(exc)}',
                            exitcodes.CONFIG) from exc
        except Exception as exc:
            log.exception('queue %s: could not load the application '
                          '[app:%s] from %s', self.label, config.app_name,
                          config.ini_path)
            raise BootError(f'could not load the application: '
                            f'{type(exc).__name__}: {exc}') from exc
        return self.check_scheduler(getattr(app, 'registry', None))

    def check_scheduler(self, registry):
        scheduler = getattr(registry, 'scheduler', None)
        if scheduler is None or scheduler.settings is None:
            raise BootError(
                'the application does not include pyramid_scheduler: add '
                '"config.include(\'pyramid_scheduler\')" to its main() or '
                '"pyramid.includes = pyramid_scheduler" to its ini section',
                exitcodes.NO_SCHEDULER)
        settings = scheduler.settings
        if settings.combined:
            raise BootError(
                'the application runs its jobs itself '
                '(scheduler.combined = true): pscheduler must not',
                exitcodes.COMBINED)
        if self.queue not in settings.queues:
            raise BootError(
                f'the application does not configure queue {self.queue!r} '
                f'(its scheduler.queues: {" ".join(settings.queues)})',
                exitcodes.CONFIG)
        return scheduler

    def await_broker(self, runtime):
        """Wait for the broker's first answer; False if told to stop first.

        "ready" means serving: a child whose broker is down must not say
        it (nor the master tell systemd READY=1). The broker may come back,
        so the child waits, beating, and tells the master each new reason;
        a broker that refuses the configuration is a BootError (exit 3).
        """
        told = None
        while not runtime.wait_ready(LOOP_INTERVAL):
            refusal = runtime.state.refusal
            if refusal is not None:
                raise BootError(f'setting "scheduler.broker.url": the broker '
                                f'refused pscheduler: {refusal}',
                                exitcodes.CONFIG)
            if not runtime.running:
                raise BootError('the job runtime stopped before its broker '
                                'answered')
            self.spec.heartbeat.beat(time.time()
                                     - runtime.state.seconds_since_beat())
            if self.should_stop():
                return False
            problem = runtime.state.connection_problem
            if problem is not None and problem != told:
                self.spec.reports.waiting(f'cannot reach the broker: '
                                          f'{problem}')
                told = problem
        return True

    def acquire_store(self, runtime, scheduler):
        """Wait for the queue's job store lock; False if told to stop.

        Our master stops a queue's old child before it starts the new one,
        so the lock is normally free at once. Another process holding it (a
        pscheduler on another host, a combined-mode web process) makes us a
        standby, serving async jobs meanwhile (standby.py).
        """
        self.standby = Standby(self, scheduler, functools.partial(
            exit_past_hard_time_limit, self.spec.reports))
        try:
            return self.standby.wait_for_store(runtime)
        except StandbyFailed as exc:
            raise BootError(str(exc)) from exc

    def module_files(self):
        """The application's source files, for ``--reload`` to watch."""
        if not self.spec.report_modules:
            return []
        files = set()
        for module in list(sys.modules.values()):
            path = getattr(module, '__file__', None)
            if path:
                files.add(path)
        return sorted(files)

    # --- 4. serve ----------------------------------------------------------

    def serve(self, runtime):
        log.info('queue %s: child %d serving', self.label, os.getpid())
        while not self.should_stop():
            if not runtime.running:
                log.error('queue %s: the job runtime stopped by itself; '
                          'exiting so that the master starts a new child',
                          self.label)
                runtime.stop(timeout=0)
                return exitcodes.FAILURE
            problem = runtime.problem()
            if problem is not None:
                return self.exit_for(runtime, problem)
            # The heartbeat carries the runtime's own last sign of life, so
            # a consumer thread that hangs shows even while we loop on.
            self.spec.heartbeat.beat(time.time()
                                     - runtime.state.seconds_since_beat())
            runtime.sample_metrics()
            self.signals.wait(LOOP_INTERVAL)
        return self.drain(runtime)

    def drain(self, runtime):
        """Stop taking messages, let running jobs finish; exit code."""
        timeout = runtime.settings.shutdown_timeout
        log.info('queue %s: child %d stopping (signal %s): no new jobs; '
                 'waiting up to %gs for running jobs', self.label,
                 os.getpid(), signal.Signals(self.stop_signal).name, timeout)
        runtime.stop(timeout=timeout)
        if self.standby is not None:   # its async jobs, after a take-over
            self.standby.finish(timeout)
        log.info('queue %s: child %d stopped', self.label, os.getpid())
        return exitcodes.OK

    def exit_for(self, runtime, problem):
        """A thread the runtime depends on died or is stuck: exit, so that
        the master starts a new child. The stop is bounded: a stuck thread
        may hold what stopping waits for."""
        log.error('queue %s: %s; exiting so that the master starts a new '
                  'child', self.label, problem)
        stopping = threading.Thread(target=runtime.stop, args=(0,),
                                    daemon=True)
        stopping.start()
        stopping.join(STOP_AFTER_PROBLEM)
        return exitcodes.FAILURE


def exit_past_hard_time_limit(reports, reason):
    """A job ran past its hard time limit (its record says so already,
    runtime.timelimits): tell the master why, and end this process now,
    from the watchdog thread; the master starts a new child at once."""
    with contextlib.suppress(OSError):
        reports.failed(reason)
    os._exit(exitcodes.HARD_TIME_LIMIT)


def configuration_error(exc):
    """The cause of a Pyramid ConfigurationError, on one line: Pyramid
    wraps an error raised by an include (``scheduler.delegator`` that does
    not import, ...) with the place it was raised, over several lines."""
    cause = getattr(exc, 'evalue', None)  # ConfigurationExecutionError
    return one_line(cause if cause is not None else exc)


def one_line(exc):
    """``exc`` as one line: what the master logs of a child's failure."""
    lines = [line.strip() for line in str(exc).splitlines()]
    lines = [line for line in lines
             if line and not line.startswith('(Background on this error')]
    return '; '.join(lines) or type(exc).__name__


def die_with_parent(signum):
    """Ask the kernel to send ``signum`` when the master dies (Linux only)."""
    if not sys.platform.startswith('linux'):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), 'prctl(PR_SET_PDEATHSIG)')
    except (OSError, AttributeError) as exc:
        log.warning('cannot ask to die with the master (%s); relying on '
                    'polling getppid()', exc)
