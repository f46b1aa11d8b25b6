"""The master's rules, driven in-process: no fork, no broker, no sleep.

``Master`` takes its reach into the world as arguments (``spawn``, ``reap``,
``clock``, ``signals``), as gunicorn's arbiter tests mock ``os.waitpid`` and
huey's drive ``loop(now)``. Here ``World`` stands in for all four: its
children are real ``ChildHandle``\\ s whose signals are recorded instead of
sent, and they exit when a test says so. Each test runs whole loop turns
(``master.turn()``) and reads what the master did from the handles. A turn
ends by hearing signals, exits and reports; the next one acts on them.
"""
import logging
import signal
import types

import pytest

from pscheduler import exitcodes
from pscheduler.handles import (HUNG, MEMORY_LIMIT, QUEUE_REMOVED, RELOAD,
                                SHUTDOWN, SLOT_REMOVED, ChildHandle)
from pscheduler.master import WATCH_INTERVAL, Master
from pscheduler.restarts import STABLE_AFTER
from pscheduler.slots import add_wanted_slots, configured_slots
from pscheduler.stopping import REPEAT_SIGNAL_AFTER, STOP_GRACE

SHUTDOWN_TIMEOUT = 10.0
HEARTBEAT_TIMEOUT = 20.0
BOOT_FAILURES = 3
MEMORY_LIMIT_BYTES = 100_000_000


# --- the fake world ----------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


class Settings:
    def __init__(self, processes=None, **values):
        self._processes = processes or {}
        self.shutdown_timeout = SHUTDOWN_TIMEOUT
        self.child_heartbeat_timeout = HEARTBEAT_TIMEOUT
        self.child_boot_failures = BOOT_FAILURES
        self.child_memory_limit = MEMORY_LIMIT_BYTES
        self.metrics_bind = None
        vars(self).update(values)

    def processes(self, queue):
        return self._processes.get(queue, 1)


def make_config(queues=('jobs',), **settings):
    return types.SimpleNamespace(
        queues=tuple(queues), settings=Settings(**settings),
        config_uri='app.ini', ini_path='app.ini', app_name='main')


class Reports:
    """A report pipe the test writes into."""
    fd = None
    eof = False

    def __init__(self):
        self.pending = []

    def fileno(self):
        return -1

    def read(self):
        reports, self.pending = self.pending, []
        return reports

    def close(self):
        pass


class Heartbeat:
    fd = None

    def __init__(self):
        self.silent = 0.0

    def seconds_since_beat(self):
        return self.silent

    def close(self):
        pass


class FakeChild(ChildHandle):
    """A real handle on a process that does not exist: signals are
    recorded, never sent (a made-up pid must never meet os.kill)."""

    def __init__(self, world, pid, queue, generation, config, slot):
        super().__init__(pid, queue, generation, config, Heartbeat(),
                         Reports(), slot, world.clock)
        self.world = world
        self.signals = []
        self.memory = 0
        self.exited = False

    def send_signal(self, signum):
        self.signals.append(signum)

    def rss(self):
        return self.memory

    def read_reports(self):
        return self.reports.read()

    # what the test makes the child do
    def report_ready(self):
        self.reports.pending.append({'event': 'ready'})

    def report_failed(self, error):
        self.reports.pending.append({'event': 'failed', 'error': error})

    def exit(self, code):
        assert not self.exited, f'{self} exited twice'
        self.exited = True
        self.world.exits.append((self.pid, code))


class FakeSignals:
    def __init__(self):
        self.pending = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        pass

    def fds(self):
        return ()

    def wait(self, timeout, other_fds=()):
        return []

    def pop_all(self):
        pending, self.pending = self.pending, []
        return pending


class World:
    def __init__(self):
        self.clock = Clock()
        self.spawned = []
        self.exits = []
        self.next_pid = 100

    def spawn(self, queue, config, generation, slot, close_in_child,
              report_modules=False, clock=None):
        assert clock is self.clock
        self.next_pid += 1
        child = FakeChild(self, self.next_pid, queue, generation, config,
                          slot)
        self.spawned.append(child)
        return child

    def reap(self):
        exits, self.exits = self.exits, []
        yield from exits

    def alive(self, queue=None, slot=None):
        return [child for child in self.spawned if not child.exited
                and queue in (None, child.queue)
                and slot in (None, child.slot)]

    def owners_of_store(self, queue):
        """Live children of the queue's slot 0: the job store owners."""
        return self.alive(queue, 0)


@pytest.fixture
def world(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger='pscheduler')
    monkeypatch.delenv('NOTIFY_SOCKET', raising=False)
    return World()


def make_master(world, config=None, reload_to=None):
    config = config or make_config()
    master = Master(config, lambda: reload_to or config,
                    spawn=world.spawn, reap=world.reap, clock=world.clock,
                    signals=FakeSignals())
    add_wanted_slots(master.slots, configured_slots(config))
    return master


def signal_master(master, signum):
    """The turn that hears the signal, then the one that acts on it."""
    master.signals.pending.append(signum)
    master.turn()
    master.turn()


def start_ready(world, master):
    """One turn starts every child; each reports ready; return them."""
    master.turn()
    children = world.alive()
    for child in children:
        child.report_ready()
    master.turn()
    assert all(child.ready for child in children)
    return children


def crash(world, master, child, code=-signal.SIGKILL):
    child.exit(code)
    master.turn()
    return master.slots[child.slot_key].start_after - world.clock()


def replacement(world, child):
    [new] = [c for c in world.alive(child.queue, child.slot)]
    assert new is not child
    return new


# --- restarts and backoff ----------------------------------------------------

def test_a_crashed_ready_child_is_restarted_after_a_backoff(world):
    master = make_master(world)
    [child] = start_ready(world, master)

    assert crash(world, master, child) == pytest.approx(0.1)
    master.turn()
    assert world.alive() == []  # not before its backoff
    world.clock.advance(0.1)
    master.turn()
    assert replacement(world, child).generation == 1
    assert not master.stopping


def test_the_backoff_grows_with_each_crash_and_resets_after_a_stable_child(
        world):
    master = make_master(world)
    [child] = start_ready(world, master)
    delays = []
    for _ in range(4):
        delays.append(crash(world, master, child))
        world.clock.advance(delays[-1])
        master.turn()
        child = replacement(world, child)
        child.report_ready()
        master.turn()
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8])

    world.clock.advance(STABLE_AFTER)
    assert crash(world, master, child) == pytest.approx(0.1)


def test_the_loop_sleeps_until_the_next_restart_is_due(world):
    master = make_master(world)
    [child] = start_ready(world, master)
    crash(world, master, child)
    master.next_watch = world.clock() + WATCH_INTERVAL
    assert master.next_deadline(world.clock()) == pytest.approx(
        world.clock() + 0.1)


def test_a_child_past_a_hard_time_limit_is_replaced_at_once(world, caplog):
    # Exit code 12: a job ran past its hard_time_limit (runtime.timelimits).
    # Neither a crash (no backoff, none grows) nor a boot failure.
    master = make_master(world)
    [child] = start_ready(world, master)
    for _ in range(3):
        child.report_failed('job j1 (m:f) ran longer than its '
                            'hard_time_limit of 2s')
        assert crash(world, master, child,
                     code=exitcodes.HARD_TIME_LIMIT) == 0
        master.turn()
        child = replacement(world, child)
        child.report_ready()
        master.turn()
    assert master.slots['jobs', 0].boot_failures == 0
    assert crash(world, master, child) == pytest.approx(0.1)
    assert not master.stopping
    assert ('ended itself: job j1 (m:f) ran longer than its hard_time_limit '
            'of 2s (exit code 12); starting a new one now') in caplog.text


# --- boot failures -----------------------------------------------------------

def fail_to_boot(world, master, code=exitcodes.BOOT_FAILED, error='boom'):
    """Start the next child and let it fail before it is ready."""
    slot = master.slots['jobs', 0]
    world.clock.advance(max(slot.start_after - world.clock(), 0))
    master.turn()
    [child] = world.alive()
    child.report_failed(error)
    child.exit(code)
    master.turn()
    return child


def test_boot_failures_in_a_row_stop_the_master_with_exit_code_20(world,
                                                                  caplog):
    master = make_master(world)
    for attempt in range(BOOT_FAILURES - 1):
        fail_to_boot(world, master)
        assert not master.stopping
    fail_to_boot(world, master)

    assert master.stopping and master.finished
    assert master.exit_code == exitcodes.BOOT_FAILED == 20
    assert f'failed to start {BOOT_FAILURES} times in a row' in caplog.text
    assert 'last error: boom' in caplog.text


def test_a_ready_child_resets_the_boot_failure_count(world):
    master = make_master(world)
    for _ in range(BOOT_FAILURES - 1):
        fail_to_boot(world, master)
    world.clock.advance(10)
    [child] = start_ready(world, master)
    assert master.slots['jobs', 0].boot_failures == 0
    crash(world, master, child)
    for _ in range(BOOT_FAILURES - 1):
        fail_to_boot(world, master)
    assert not master.stopping


@pytest.mark.parametrize('code', [exitcodes.NO_SCHEDULER, exitcodes.COMBINED])
def test_a_child_that_cannot_ever_start_stops_the_master_at_once(world, code):
    master = make_master(world)
    fail_to_boot(world, master, code=code)
    assert master.stopping
    assert master.exit_code == code


def test_a_child_hung_while_starting_is_a_boot_failure(world, caplog):
    master = make_master(world)
    master.turn()
    [child] = world.alive()
    child.heartbeat.silent = HEARTBEAT_TIMEOUT + 1
    world.clock.advance(WATCH_INTERVAL)
    master.turn()
    assert child.signals == [signal.SIGKILL] and child.stop_reason == HUNG
    child.exit(-signal.SIGKILL)
    master.turn()
    assert master.slots['jobs', 0].boot_failures == 1
    assert 'no heartbeat while starting' in caplog.text


@pytest.mark.parametrize('code', [-signal.SIGKILL, -signal.SIGTERM,
                                  -signal.SIGINT, exitcodes.OK])
def test_a_child_stopped_from_outside_while_starting_is_no_boot_failure(
        world, caplog, code):
    master = make_master(world)
    delays = []
    for _ in range(BOOT_FAILURES * 2):
        fail_to_boot(world, master, code=code)
        delays.append(master.slots['jobs', 0].start_after - world.clock())
    assert not master.stopping
    assert master.slots['jobs', 0].boot_failures == 0
    assert delays[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert 'stopped from outside while starting' in caplog.text

    world.clock.advance(delays[-1])
    start_ready(world, master)
    master.turn()
    assert master.ready_announced


def test_a_crash_signal_while_starting_is_a_boot_failure(world):
    master = make_master(world)
    for _ in range(BOOT_FAILURES):
        fail_to_boot(world, master, code=-signal.SIGSEGV)
    assert master.exit_code == exitcodes.BOOT_FAILED


def test_outside_stops_neither_count_nor_break_a_row_of_boot_failures(world):
    master = make_master(world)
    for _ in range(BOOT_FAILURES - 1):
        fail_to_boot(world, master)
        fail_to_boot(world, master, code=-signal.SIGKILL)
    assert not master.stopping
    fail_to_boot(world, master)
    assert master.exit_code == exitcodes.BOOT_FAILED


def test_the_backoff_resets_only_once_a_child_has_served(world):
    master = make_master(world)
    [child] = start_ready(world, master)
    crash(world, master, child)
    world.clock.advance(0.1)
    master.turn()
    child = replacement(world, child)
    # A slow boot is no service: up long, ready a moment.
    world.clock.advance(STABLE_AFTER + 5)
    child.report_ready()
    master.turn()
    world.clock.advance(1)
    assert crash(world, master, child) == pytest.approx(0.2)

    world.clock.advance(0.2)
    master.turn()
    child = replacement(world, child)
    child.report_ready()
    master.turn()
    world.clock.advance(STABLE_AFTER)
    assert crash(world, master, child) == pytest.approx(0.1)


# --- reload ------------------------------------------------------------------

def assert_one_store_owner_per_queue(world, queues):
    for queue in queues:
        assert len(world.owners_of_store(queue)) <= 1, queue


def test_a_hup_roll_restarts_one_child_at_a_time_never_two_store_owners(
        world):
    config = make_config(('jobs', 'mail'), processes={'jobs': 2})
    master = make_master(world, config, reload_to=make_config(
        ('jobs', 'mail'), processes={'jobs': 2}))
    old = start_ready(world, master)
    assert len(old) == 3

    signal_master(master, signal.SIGHUP)
    restarted = []
    for _ in range(20):
        stopping = [c for c in world.alive() if c.stop_reason is not None]
        starting = [c for c in world.alive() if not c.ready]
        assert len(stopping) + len(starting) <= 1, (stopping, starting)
        assert_one_store_owner_per_queue(world, ('jobs', 'mail'))
        if stopping:
            [child] = stopping
            assert child.stop_reason == RELOAD
            assert child.signals == [signal.SIGTERM]
            restarted.append(child.slot_key)
            child.exit(0)
        for child in starting:
            child.report_ready()
        master.turn()
        if master.ready_announced:
            break

    assert sorted(restarted) == [('jobs', 0), ('jobs', 1), ('mail', 0)]
    assert {c.generation for c in world.alive()} == {2}
    assert all(c.exited for c in old)


def test_a_queue_added_by_a_reload_gets_its_child_at_once(world):
    master = make_master(world, reload_to=make_config(('jobs', 'mail')))
    [jobs] = start_ready(world, master)
    signal_master(master, signal.SIGHUP)
    [mail] = world.alive('mail')
    assert mail.generation == 2
    assert jobs.stop_reason is None  # its turn comes once mail is ready
    mail.report_ready()
    master.turn()
    master.turn()
    assert jobs.stop_reason == RELOAD


def test_the_roll_waits_until_the_new_child_is_ready(world):
    master = make_master(world, make_config(('jobs', 'mail')))
    start_ready(world, master)
    signal_master(master, signal.SIGHUP)
    [first] = [c for c in world.alive() if c.stop_reason == RELOAD]
    first.exit(0)
    master.turn()  # reaped
    master.turn()  # replaced
    new = replacement(world, first)
    for _ in range(3):
        master.turn()
    assert [c for c in world.alive() if c.stop_reason] == []
    new.report_ready()
    master.turn()  # read
    master.turn()  # the roll goes on
    assert len([c for c in world.alive() if c.stop_reason == RELOAD]) == 1


def test_removed_slots_stop_before_the_roll_restarts_the_others(world):
    master = make_master(
        world, make_config(('jobs', 'mail'), processes={'jobs': 2}),
        reload_to=make_config(('jobs',), processes={'jobs': 1}))
    start_ready(world, master)
    signal_master(master, signal.SIGHUP)

    reasons = {c.slot_key: c.stop_reason for c in world.alive()}
    assert reasons == {('jobs', 0): None, ('jobs', 1): SLOT_REMOVED,
                       ('mail', 0): QUEUE_REMOVED}
    for _ in range(3):
        master.turn()
    assert world.owners_of_store('jobs')[0].stop_reason is None

    [gone] = world.alive('jobs', 1)
    gone.exit(0)
    master.turn()  # reaped
    master.turn()  # the roll goes on
    assert world.owners_of_store('jobs')[0].stop_reason == RELOAD
    assert set(master.slots) == {('jobs', 0), ('mail', 0)}  # mail: not yet
    world.alive('mail', 0)[0].exit(0)
    master.turn()
    assert set(master.slots) == {('jobs', 0)}


def test_a_failed_reload_keeps_the_children(world, caplog):
    from pscheduler.exitcodes import ExitError
    master = make_master(world)
    [child] = start_ready(world, master)

    def broken():
        raise ExitError('bad ini', exitcodes.CONFIG)
    master.reload_config = broken
    signal_master(master, signal.SIGHUP)
    master.turn()
    assert child.signals == [] and master.generation == 1
    assert 'reload failed' in caplog.text


# --- stopping ----------------------------------------------------------------

def test_term_drains_then_kills_after_the_shutdown_timeout(world):
    master = make_master(world, make_config(('jobs', 'mail')))
    jobs, mail = start_ready(world, master)
    signal_master(master, signal.SIGTERM)
    assert jobs.signals == mail.signals == [signal.SIGTERM]
    assert jobs.stop_reason == SHUTDOWN

    mail.exit(0)
    world.clock.advance(SHUTDOWN_TIMEOUT + STOP_GRACE - 0.1)
    master.turn()
    assert jobs.signals == [signal.SIGTERM]
    assert master.next_deadline(world.clock()) == pytest.approx(
        world.clock() + 0.1)
    world.clock.advance(0.1)
    master.turn()
    assert jobs.signals == [signal.SIGTERM, signal.SIGKILL]
    assert world.alive('mail') == [] and not master.finished
    jobs.exit(-signal.SIGKILL)
    master.turn()
    assert master.finished and master.exit_code == exitcodes.OK
    assert world.alive() == []  # nothing restarted while stopping


def test_a_second_term_kills_at_once_but_not_the_same_one_twice(world):
    master = make_master(world)
    [child] = start_ready(world, master)
    signal_master(master, signal.SIGTERM)
    world.clock.advance(REPEAT_SIGNAL_AFTER / 2)
    signal_master(master, signal.SIGINT)  # the same stop, sent twice
    assert child.signals == [signal.SIGTERM]
    world.clock.advance(REPEAT_SIGNAL_AFTER)
    signal_master(master, signal.SIGTERM)
    assert child.signals == [signal.SIGTERM, signal.SIGKILL]


def test_hup_while_stopping_is_ignored(world):
    master = make_master(world)
    start_ready(world, master)
    signal_master(master, signal.SIGTERM)
    signal_master(master, signal.SIGHUP)
    assert master.generation == 1


def test_signals_are_dispatched_by_name(world):
    master = make_master(world)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                   signal.SIGCHLD):
        name = signal.Signals(signum).name[3:].lower()
        assert callable(getattr(master, f'handle_{name}'))


# --- health ------------------------------------------------------------------

def test_a_child_without_heartbeat_is_killed_and_replaced(world, caplog):
    master = make_master(world)
    [child] = start_ready(world, master)
    child.heartbeat.silent = HEARTBEAT_TIMEOUT - 1
    world.clock.advance(WATCH_INTERVAL)
    master.turn()
    assert child.signals == []
    child.heartbeat.silent = HEARTBEAT_TIMEOUT + 1
    world.clock.advance(WATCH_INTERVAL)
    master.turn()
    assert child.signals == [signal.SIGKILL] and child.stop_reason == HUNG
    assert 'sent no heartbeat' in caplog.text

    delay = crash(world, master, child)
    assert 'died (killed by SIGKILL after no heartbeat)' in caplog.text
    world.clock.advance(delay)
    master.turn()
    replacement(world, child)


def test_a_child_over_its_memory_limit_is_replaced_gracefully(world, caplog):
    master = make_master(world)
    [child] = start_ready(world, master)
    child.memory = MEMORY_LIMIT_BYTES + 1
    world.clock.advance(WATCH_INTERVAL)
    master.turn()
    assert child.signals == [signal.SIGTERM]
    assert child.stop_reason == MEMORY_LIMIT
    assert 'over scheduler.child.memory_limit (100.0MB)' in caplog.text

    child.exit(0)
    master.turn()  # reaped; a planned stop: replaced at once, no backoff
    master.turn()
    replacement(world, child)
    assert 'exited (exit code 0), as asked: memory limit' in caplog.text
