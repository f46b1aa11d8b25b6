"""What the master does when a child exits that it did not ask to stop:
when the slot's next child starts, and when to give up.

- A child that dies after it reported ``ready`` crashed: its replacement
  starts after the slot's exponential backoff (0.1s first), a fresh one
  once a child has served (been ready) ``STABLE_AFTER`` seconds.
- One that fails on its own before ``ready`` (an error exit, a crash
  signal, no heartbeat while starting) is a boot failure, retried after
  the backoff; ``scheduler.child.boot_failures`` of them in a row give up
  with exit code 20, and a child that says the application lacks the
  scheduler (10) or runs combined (11), or finds a configuration error (3:
  a dotted name that does not import, a broker or job store refusing the
  password or database) gives up at once with its code and one-line
  reason: retrying cannot help.
- One that ends itself with exit code 12 (a job ran longer than its
  ``hard_time_limit``: pyramid_scheduler.runtime.timelimits) is replaced
  at once, and counts toward no limit.
- One stopped from outside before ``ready`` (SIGKILL, SIGTERM or SIGINT
  from someone else: an operator, the OOM killer, a test) did not fail:
  it is replaced after the backoff and counts toward no limit. Killing
  children as they boot must not stop the master and the queues it serves.

No fork, signal or clock here: the master passes ``now`` and halts on the
``GiveUp`` it gets back.
"""
import dataclasses
import logging
import signal

from . import exitcodes
from .handles import HUNG, describe_exit

log = logging.getLogger(__name__)

STABLE_AFTER = 30.0   # a child ready this long starts a fresh backoff
# How a child ends when someone else stops it: killed, or its handler ran
# and it gave up its boot on purpose (exit 0, see Child.run).
STOPPED_FROM_OUTSIDE = (-signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT,
                        exitcodes.OK)


@dataclasses.dataclass(frozen=True)
class GiveUp:
    """Stop pscheduler: retrying cannot help."""
    code: int
    message: str


def after_unexpected_exit(slot, child, code, now):
    """Schedule ``slot``'s next child after ``child`` exited with ``code``
    unasked; a GiveUp if there must be none."""
    outcome = describe_exit(code)
    if code == exitcodes.HARD_TIME_LIMIT and child.stop_reason is None:
        return after_hard_time_limit(slot, child, now)
    if child.ready:
        return after_crash(slot, child, outcome, now)
    if stopped_from_outside(child, code):
        return after_outside_stop(slot, child, outcome, now)
    return after_boot_failure(slot, child, code, outcome, now)


def stopped_from_outside(child, code):
    """Someone else than the master stopped ``child`` (the master's own
    kill of a silent child is that child's failure)."""
    return child.stop_reason is None and code in STOPPED_FROM_OUTSIDE


def after_hard_time_limit(slot, child, now):
    """The child ended itself: a job ran past its hard time limit. Not a
    crash of the child, nor a boot failure: its replacement starts now."""
    slot.start_after = now
    log.error('child %d serving queue %s ended itself: %s (exit code %d); '
              'starting a new one now', child.pid, slot.label,
              child.error or 'a job ran longer than its hard_time_limit',
              exitcodes.HARD_TIME_LIMIT)


def after_crash(slot, child, outcome, now):
    delay = slot.restart_later(now,
                               fresh=child.served_for() >= STABLE_AFTER)
    why = f'{outcome} after {HUNG}' if child.stop_reason == HUNG \
        else outcome
    log.error('child %d serving queue %s died (%s); starting a new one '
              'in %.1fs', child.pid, slot.label, why, delay)


def after_outside_stop(slot, child, outcome, now):
    delay = slot.restart_later(now)
    log.warning('child %d for queue %s was stopped from outside while '
                'starting (%s); not a boot failure; starting a new one in '
                '%.1fs', child.pid, slot.label, outcome, delay)


def after_boot_failure(slot, child, code, outcome, now):
    error = child.error or outcome
    if child.stop_reason == HUNG:
        error = f'no heartbeat while starting; {error}'
    if code in exitcodes.FATAL_CHILD_CODES:
        return GiveUp(code, f'queue {slot.label}: {error}')
    slot.boot_failures += 1
    limit = child.config.settings.child_boot_failures
    if slot.boot_failures >= limit:
        return GiveUp(exitcodes.BOOT_FAILED,
                      f'the child for queue {slot.label} failed to start '
                      f'{slot.boot_failures} times in a row '
                      f'(scheduler.child.boot_failures = {limit}); last '
                      f'error: {error}')
    delay = slot.restart_later(now)
    log.error('child %d for queue %s failed to start (%s); attempt %d '
              'of %d; trying again in %.1fs', child.pid, slot.label,
              error, slot.boot_failures, limit, delay)
    return None
