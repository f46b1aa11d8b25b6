"""What the master does with each report of a child (see channel.py).

``ready``: the child serves; ``standby``: it is ready to take its queue's
job store over from the process that owns it (on this host or another),
and counts as ready, for systemd too, whose STATUS says it stands by, until
its ``ready`` says it took the store over; ``failed``: its error, for the
master's log when it exits; ``waiting``: alive, not ready (its broker does
not answer), and why.
"""
import logging

from . import systemd
from .channel import FAILED, READY, STANDBY, WAITING

log = logging.getLogger(__name__)


def handle(master, child, report):
    event = report.get('event')
    if event == STANDBY and not child.ready:
        child.standby = report.get('owner') or 'another process'
        child_ready(master, child, report, 'standing by for')
    elif event == READY and child.standby:   # it took the store over
        child.standby = None
        log.info('child %d took over the job store of queue %s',
                 child.pid, child.label)
        watch_reported_files(master, report)
        systemd.status(master.status_text())
    elif event == READY and not child.ready:
        child_ready(master, child, report, 'serving')
    elif event == FAILED:
        child.error = report.get('error')
    elif event == WAITING:
        log.warning('child %d for queue %s is not ready: %s; it keeps '
                    'trying', child.pid, child.label, report.get('reason'))


def child_ready(master, child, report, doing):
    child.mark_ready()
    slot = master.slots.get(child.slot_key)
    if slot is not None and slot.child is child:
        slot.boot_failures = 0
    log.info('child %d %s queue %s (started in %.1fs)',
             child.pid, doing, child.label, child.uptime())
    watch_reported_files(master, report)


def watch_reported_files(master, report):
    """``--reload``: the files the child's application was loaded from."""
    if master.watch_files is not None and report.get('files'):
        master.watch_files(report['files'])
