"""The master: children serving the queues, kept serving (after gunicorn's
arbiter).

Each queue has ``scheduler.processes`` slots (one by default), each with at
most one child (:mod:`pscheduler.slots`); the master sees a child through
its handle (:mod:`pscheduler.handles`).

The master is single-threaded and never loads the application. Its signal
handlers only record signals (:mod:`pscheduler.signals`); one loop does the
work, in turns:

    supervise -> sleep until a signal, a child report or a deadline
              -> act on signals -> reap dead children -> read reports

Its rules:

- A child that dies unexpectedly is replaced after an exponential backoff
  (0.1s first), reset once a child has served 30s. One that fails on its
  own before reporting ``ready`` is a boot failure;
  ``scheduler.child.boot_failures`` of them in a row stop the master with
  exit code 20, and a child that says the application lacks the scheduler
  (10) or runs combined (11) stops it at once: retrying cannot help. One
  killed from outside while starting is only replaced
  (:mod:`pscheduler.restarts`).
- SIGTERM/SIGINT: every child drains (``scheduler.shutdown_timeout``), is
  killed if it overstays, and the master exits 0. A second signal, a second
  or more later, kills the children at once (:mod:`pscheduler.stopping`).
- SIGHUP: re-read the ini. Removed queues (and slots, when a queue's
  processes go down) lose their child, added ones get one, and the others
  are restarted one at a time: a slot's old child exits (releasing the job
  store, for slot 0) before its new one starts (:mod:`pscheduler.reload`).
- Every second: a child silent for ``scheduler.child.heartbeat_timeout`` is
  killed, one above ``scheduler.child.memory_limit`` is replaced gracefully.
"""
import logging
import os
import signal
import time

from . import (childreports, exitcodes, handles, health, reload, restarts,
               systemd)
from .reporting import Reporting
from .exitcodes import ExitError
from .handles import PLANNED_STOPS, SHUTDOWN, describe_exit
from .signals import SignalQueue
from .slots import (add_wanted_slots, all_current, configured_slots,
                    due_to_start, status_text)
from .stopping import STOP_GRACE, Shutdown, enforce_kill_deadlines
from .titles import master_title, set_title

log = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                   signal.SIGCHLD)
LOOP_INTERVAL = 1.0   # the longest the loop sleeps
WATCH_INTERVAL = 1.0  # how often heartbeats and memory are checked


class Master:
    def __init__(self, config, reload_config, watch_files=None, *,
                 spawn=handles.spawn, reap=handles.reap,
                 clock=time.monotonic, signals=None, reporting=None):
        """``reload_config()`` re-reads the ini (raising ExitError);
        ``watch_files(paths)``, under ``--reload``, watches the children's
        source files.

        The rest are the master's reach into the world, so that tests can
        drive its rules in-process: ``spawn`` forks a child and returns its
        handle (see handles.spawn), ``reap()`` yields ``(pid, exit code)``
        of the children that exited, ``clock`` is monotonic time, and
        ``signals`` the SignalQueue the loop sleeps on. ``reporting``
        (pscheduler.reporting) writes the process table and runs the
        metrics server.
        """
        self.config = config
        self.reload_config = reload_config
        self.watch_files = watch_files
        self.spawn = spawn
        self.reap = reap
        self.clock = clock
        self.signals = signals or SignalQueue(HANDLED_SIGNALS)
        self.reporting = reporting or Reporting()
        self.generation = 1
        self.slots = {}
        self.children = {}   # pid -> ChildHandle
        self.shutdown = Shutdown(self.children)
        self.ready_announced = False
        self.next_watch = 0.0

    # --- the loop ----------------------------------------------------------

    def run(self):
        """Supervise until stopped; return the exit code."""
        set_title(master_title(self.config.config_uri))
        log.info('pscheduler master %d starting: %s [app:%s], queue(s) %s',
                 os.getpid(), self.config.ini_path, self.config.app_name,
                 ', '.join(self.config.queues))
        with self.signals:
            try:
                add_wanted_slots(self.slots, configured_slots(self.config))
                while not self.finished:
                    self.turn()
            except Exception:
                log.exception('the pscheduler master failed; killing its '
                              'children')
                self.shutdown.abort(exitcodes.FAILURE)
                self.reporting.stop_now()
                self.reap_remaining(timeout=5)
        log.info('pscheduler master %d stopped (exit code %d)', os.getpid(),
                 self.exit_code)
        return self.exit_code

    @property
    def stopping(self):
        return self.shutdown.begun

    @property
    def exit_code(self):
        return self.shutdown.exit_code

    @property
    def finished(self):
        return (self.stopping and not self.children
                and not self.reporting.running)

    def turn(self):
        """One turn of the loop: act, sleep, then see what woke us."""
        self.supervise()
        self.sleep()
        self.handle_signals()
        self.reap_children()
        self.read_reports()
        self.reporting.update(self)

    def supervise(self):
        now = self.clock()
        enforce_kill_deadlines(self.children.values(), now)
        self.reporting.supervise(self.stopping, now,
                                 self.descriptors_children_must_close())
        if self.stopping:
            return
        if now >= self.next_watch:
            self.watch_children()
            self.next_watch = now + WATCH_INTERVAL
        reload.restart_one_outdated_child(self.slots, self.generation,
                                          self.config.queues, STOP_GRACE)
        for slot in due_to_start(list(self.slots.values()), now):
            self.start_child(slot)
        self.announce_ready()

    def sleep(self):
        now = self.clock()
        fds = [child.reports.fileno() for child in self.children.values()
               if not child.reports.eof]
        self.signals.wait(max(self.next_deadline(now) - now, 0), fds)

    def next_deadline(self, now):
        """The soonest the loop has something to do, signals aside."""
        deadlines = [now + LOOP_INTERVAL]
        deadlines += [child.kill_at for child in self.children.values()
                      if child.kill_at is not None and not child.killed]
        if not self.stopping:  # nothing else is due while stopping
            deadlines.append(self.next_watch)
            if self.reporting.next_deadline() is not None:
                deadlines.append(self.reporting.next_deadline())
            deadlines += [slot.start_after for slot in self.slots.values()
                          if slot.child is None and not slot.removed]
        return min(deadlines)

    # --- signals: handle_<name>, as gunicorn's arbiter ---------------------

    def handle_signals(self):
        for signum in self.signals.pop_all():
            name = signal.Signals(signum).name
            getattr(self, f'handle_{name[3:].lower()}')()

    def handle_term(self):
        self.on_stop_signal('SIGTERM')

    def handle_int(self):
        self.on_stop_signal('SIGINT')

    def handle_hup(self):
        self.on_reload_signal()

    def handle_chld(self):
        """Only wakes the loop: reap_children() runs every turn."""

    def on_stop_signal(self, name):
        self.shutdown.on_signal(name, self.clock(),
                                self.config.settings.shutdown_timeout)

    def on_reload_signal(self):
        if self.stopping:
            log.info('SIGHUP while stopping: ignored')
            return
        log.info('SIGHUP: reloading %s', self.config.ini_path)
        systemd.reloading('reloading the configuration')
        try:
            new_config = self.reload_config()
        except ExitError as exc:
            log.error('reload failed; the children keep running the '
                      'previous configuration: %s', exc)
            systemd.ready(self.status_text())
            return
        self.apply_config(new_config)

    def apply_config(self, new_config):
        """Run ``new_config`` from now on: a new generation, whose roll
        the next turns carry out (reload.restart_one_outdated_child)."""
        old_config, self.config = self.config, new_config
        self.generation += 1
        self.ready_announced = False
        reload.apply_config(self.slots, old_config, new_config, STOP_GRACE)

    # --- children ------------------------------------------------------------

    def start_child(self, slot):
        try:
            child = self.spawn(
                slot.queue, self.config, self.generation, slot.index,
                close_in_child=self.descriptors_children_must_close(),
                report_modules=self.watch_files is not None,
                clock=self.clock)
        except OSError as exc:  # out of processes or memory: try later
            delay = slot.restart_later(self.clock())
            log.error('cannot start a child for queue %s (%s); trying again '
                      'in %.1fs', slot.label, exc, delay)
            return
        self.children[child.pid] = child
        slot.child = child
        log.info('started child %d for queue %s', child.pid, slot.label)

    def descriptors_children_must_close(self):
        fds = list(self.signals.fds()) + list(self.reporting.fds())
        for child in self.children.values():
            fds.extend(child.fds())
        return fds

    def reap_children(self):
        for pid, code in self.reap():
            if self.reporting.reaped(pid, code, self.clock()):
                continue
            child = self.children.pop(pid, None)
            if child is not None:
                self.on_child_exit(child, code)

    def reap_remaining(self, timeout):
        """Reap the children killed because the master failed, for up to
        ``timeout`` seconds: the loop that would reap them is over."""
        deadline = self.clock() + timeout
        while self.children and self.clock() < deadline:
            self.reap_children()
            time.sleep(0.05)

    def on_child_exit(self, child, code):
        self.handle_reports(child, child.read_reports())  # its last words
        child.close()
        self.reporting.child_exited(child, code, self.stopping)
        slot = self.slots.get(child.slot_key)
        if slot is not None and slot.child is child:
            slot.child = None
        else:
            slot = None
        if child.stop_reason in PLANNED_STOPS or self.stopping:
            log.log(logging.INFO if code == 0 else logging.WARNING,
                    'child %d (queue %s) exited (%s), as asked: %s',
                    child.pid, child.label, describe_exit(code),
                    child.stop_reason or SHUTDOWN)
            if slot is not None and slot.removed:
                del self.slots[slot.key]
            return
        if slot is not None:
            give_up = restarts.after_unexpected_exit(slot, child, code,
                                                     self.clock())
            if give_up is not None:
                self.shutdown.halt(give_up.code, give_up.message)

    def read_reports(self):
        for child in list(self.children.values()):
            self.handle_reports(child, child.read_reports())

    def handle_reports(self, child, reports):
        for report in reports:
            childreports.handle(self, child, report)

    # --- health --------------------------------------------------------------

    def watch_children(self):
        for slot in self.slots.values():
            if slot.child is not None and slot.child.stop_reason is None:
                health.check(slot.child, STOP_GRACE)

    # --- readiness -----------------------------------------------------------

    def announce_ready(self):
        if self.ready_announced or not all_current(
                list(self.slots.values()), self.generation):
            return
        self.ready_announced = True
        log.info('pscheduler ready: %s', self.status_text())
        systemd.ready(self.status_text())

    def status_text(self):
        return status_text(self.slots.values())
