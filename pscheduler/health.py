"""The master's health check of one child: alive (heartbeat) and not too
big (RSS), as ``scheduler.child.heartbeat_timeout`` and
``scheduler.child.memory_limit`` ask.

A hung child is killed at once (it cannot drain); one over its memory limit
is asked to stop gracefully, its running jobs finish first. Either way the
master's loop starts its replacement when it has exited.
"""
import logging

from .handles import HUNG, MEMORY_LIMIT
from .sizes import format_size

log = logging.getLogger(__name__)


def check(child, grace):
    """Kill ``child`` if silent too long; stop it if over its memory."""
    settings = child.config.settings
    silent = child.seconds_since_heartbeat()
    if silent > settings.child_heartbeat_timeout:
        log.error('child %d (queue %s) sent no heartbeat for %.1fs '
                  '(scheduler.child.heartbeat_timeout = %gs): killing '
                  'it', child.pid, child.label, silent,
                  settings.child_heartbeat_timeout)
        child.kill(HUNG)
        return
    limit = settings.child_memory_limit
    if limit and child.ready:
        rss = child.rss()
        if rss is not None and rss > limit:
            log.warning('child %d (queue %s) uses %s of memory, over '
                        'scheduler.child.memory_limit (%s): replacing '
                        'it once its running jobs are done',
                        child.pid, child.label, format_size(rss),
                        format_size(limit))
            child.request_stop(MEMORY_LIMIT, grace)
