"""What the master does with its children's reports (pscheduler.channel):
``ready`` ends a boot (and, under ``--reload``, names the files to watch),
``failed`` says why a child is about to exit, ``waiting`` why it is not
ready yet."""
import logging

from .channel import FAILED, READY, WAITING

log = logging.getLogger('pscheduler.master')


def handle(child, reports, slots, watch_files=None):
    """Act on ``reports`` of ``child``; ``slots``: the master's, by key."""
    for report in reports:
        event = report.get('event')
        if event == READY and not child.ready:
            child.mark_ready()
            slot = slots.get(child.slot_key)
            if slot is not None and slot.child is child:
                slot.boot_failures = 0
            log.info('child %d serving queue %s (started in %.1fs)',
                     child.pid, child.label, child.uptime())
            if watch_files is not None and report.get('files'):
                watch_files(report['files'])
        elif event == FAILED:
            child.error = report.get('error')
        elif event == WAITING:  # alive, not ready: not serving yet
            log.warning('child %d for queue %s is not ready: %s; it '
                        'keeps trying', child.pid, child.label,
                        report.get('reason'))
