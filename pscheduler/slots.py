"""The master's slots, and the rules of a reload roll, as functions over them.

Each queue has ``scheduler.processes`` slots (one by default), and each slot
at most one child: the child of slot 0 owns the queue's job store, the
others run only its async jobs (see pyramid_scheduler.runtime). A slot
outlives its children: it carries their restart bookkeeping (backoff, boot
failures, when the next one may start).

Nothing here forks, signals or reads a clock: the master asks these
functions what to do and does it, so the rules are plain to test.
"""
from .backoff import Backoff
from .titles import slot_label


class Slot:
    """One process of a served queue: its child (if any) and its restart
    bookkeeping. Slot 0 is the one whose child owns the queue's job store."""

    def __init__(self, queue, index=0, processes=1):
        self.queue = queue
        self.index = index
        self.processes = processes   # of its queue; only names it
        self.child = None
        self.backoff = Backoff()
        self.boot_failures = 0
        self.start_after = 0.0   # monotonic time the next child may start
        self.removed = False     # by a reload; the slot goes with its child

    @property
    def key(self):
        return (self.queue, self.index)

    @property
    def label(self):
        """How logs name it: ``jobs``, or ``jobs #2`` of several."""
        return slot_label(self.queue, self.index, self.processes)

    def restart_later(self, now, fresh=False):
        """Let the next child start after the backoff (a ``fresh`` one if
        the last child lived long enough); return the delay."""
        if fresh:
            self.backoff.reset()
        delay = self.backoff.next_delay()
        self.start_after = now + delay
        return delay

    @property
    def serving(self):
        """Its child is ready and not on its way out."""
        return (self.child is not None and self.child.ready
                and self.child.stop_reason is None)


def configured_slots(config):
    """``{(queue, index): processes}`` for every slot ``config`` asks for."""
    settings = config.settings
    return {(queue, index): settings.processes(queue)
            for queue in config.queues
            for index in range(settings.processes(queue))}


def unwanted_slots(slots, wanted):
    """The slots of ``slots`` (a dict by key) a new configuration drops."""
    return [slot for key, slot in slots.items() if key not in wanted]


def add_wanted_slots(slots, wanted):
    """Give ``slots`` every slot ``wanted`` (from configured_slots) names.

    A slot kept across a reload keeps its child (restarted by the roll) and
    its backoff; one removed by an earlier reload and wanted again is
    simply kept.
    """
    for key, processes in wanted.items():
        slot = slots.get(key)
        if slot is None:
            slots[key] = Slot(*key, processes)
        else:
            slot.removed = False
            slot.processes = processes


def due_to_start(slots, now):
    """The slots that have no child and may start one at ``now``."""
    return [slot for slot in slots
            if slot.child is None and not slot.removed
            and now >= slot.start_after]


def next_to_restart(slots, generation, served_queues):
    """The slot whose child the reload roll restarts now, or None.

    Only when every slot has a ready child: so one child restarts at a
    time, and a new child that fails to start stops the roll. And only
    once the slots removed from a queue still served have no child: the
    queue's new job store owner takes back, when it starts, what those
    leave behind (Redis, see Runtime._restore_removed_slots).
    """
    if any(slot.removed and slot.queue in served_queues for slot in slots):
        return None
    active = [slot for slot in slots if not slot.removed]
    if not all(slot.serving for slot in active):
        return None
    return next((slot for slot in active
                 if slot.child.generation < generation), None)


def all_current(slots, generation):
    """Every slot serves with a child of the latest configuration, and no
    removed slot is left: what the master announces as ready."""
    return all(not slot.removed and slot.serving
               and slot.child.generation == generation for slot in slots)


def status_text(slots):
    """``serving jobs (pid 12), mail (starting)``: for logs and systemd;
    a child standing by says whose job store it waits for."""
    return 'serving ' + ', '.join(map(slot_status, (
        slot for slot in slots if not slot.removed)))


def slot_status(slot):
    child = slot.child
    if child is None:
        return f'{slot.label} (starting)'
    if child.standby:
        return (f'{slot.label} (pid {child.pid}, standing by: job store '
                f'owned by {child.standby})')
    return f'{slot.label} (pid {child.pid})'
