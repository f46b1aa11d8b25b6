"""A SIGHUP reload, carried out on the master's slots.

Removed queues (and slots, when a queue's processes go down) lose their
child, added ones get one, and the others are restarted one at a time: a
slot's old child exits (releasing the job store, for slot 0) before its new
one starts. :mod:`pscheduler.slots` decides (which slots, which one next);
this module acts: it asks children to stop, and logs why.

The master keeps the generation (the count of configurations it has run),
and starts the children the slots lack on its next turn.
"""
import logging

from .handles import QUEUE_REMOVED, RELOAD, SLOT_REMOVED
from .slots import (add_wanted_slots, configured_slots, next_to_restart,
                    unwanted_slots)

log = logging.getLogger(__name__)


def apply_config(slots, old_config, new_config, grace):
    """Make ``slots`` (a dict by key) the slots ``new_config`` asks for.

    Children of unwanted slots are asked to stop (killed ``grace`` seconds
    after their drain timeout); the others are left to the roll.
    """
    old_queues = set(old_config.queues)
    new_queues = set(new_config.queues)
    wanted = configured_slots(new_config)
    for slot in unwanted_slots(slots, wanted):
        remove_slot(slots, slot, QUEUE_REMOVED
                    if slot.queue not in new_queues else SLOT_REMOVED, grace)
    add_wanted_slots(slots, wanted)
    if old_config.settings.metrics_bind != new_config.settings.metrics_bind:
        log.warning('reload: a new "scheduler.metrics.bind" takes effect '
                    'only when pscheduler restarts; metrics are still '
                    'served where they were')
    log.info('reload: queue(s) added: %s; removed: %s; restarting the '
             'others one at a time',
             ', '.join(sorted(new_queues - old_queues)) or 'none',
             ', '.join(sorted(old_queues - new_queues)) or 'none')


def remove_slot(slots, slot, reason, grace):
    """Drop ``slot`` now if it has no child, else once its child exits."""
    slot.removed = True
    if slot.child is None:
        del slots[slot.key]
    else:
        slot.child.request_stop(reason, grace)


def restart_one_outdated_child(slots, generation, served_queues, grace):
    """Restart the next child still running an older configuration
    (see slots.next_to_restart for when)."""
    slot = next_to_restart(list(slots.values()), generation, served_queues)
    if slot is not None:
        log.info('reload: restarting the child of queue %s', slot.label)
        slot.child.request_stop(RELOAD, grace)
