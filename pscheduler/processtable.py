"""The master's process table: which processes serve which queue, in
which state, and why children were restarted.

The master writes it into its state directory whenever it changes (the
format is pyramid_scheduler.daemonview's); the child answering ``status``
reads it, and so does the metrics server. Writing only on change keeps an
idle master from touching the disk every turn.
"""
import collections
import json
import os
import socket
import time

from pyramid_scheduler.daemonview import write_table

from . import exitcodes
from .handles import HUNG, MEMORY_LIMIT, PLANNED_STOPS, RELOAD

# Why a child was replaced, as pscheduler_child_restarts_total says it.
RESTART_REASONS = {RELOAD: 'reload', MEMORY_LIMIT: 'memory_limit',
                   HUNG: 'no_heartbeat'}


def restart_reason(child, code):
    """Why ``child`` ended with ``code``, if another takes its place;
    None for a stop that is not followed by a restart (shutdown, a queue
    or slot removed)."""
    if child.stop_reason in RESTART_REASONS:
        return RESTART_REASONS[child.stop_reason]
    if child.stop_reason in PLANNED_STOPS:
        return None
    if code == exitcodes.HARD_TIME_LIMIT:
        return 'hard_time_limit'
    if code < 0:
        return 'killed'
    return 'exited' if code == 0 else 'failed'


def child_state(child):
    if child.stop_reason is not None:
        return 'stopping'
    return 'ready' if child.ready else 'starting'


class ProcessTable:
    def __init__(self, state_dir, metrics_pid=lambda: None):
        self.state_dir = state_dir
        self.metrics_pid = metrics_pid   # () -> the metrics server's pid
        self.host = socket.gethostname()
        self.started = time.time()
        self.restarts = collections.Counter()   # (queue, slot, reason)
        self._written = None

    def child_exited(self, child, code, stopping):
        reason = None if stopping else restart_reason(child, code)
        if reason is not None:
            self.restarts[(child.queue, child.slot, reason)] += 1

    def update(self, master):
        """Write the table if it changed since the last write."""
        table = self.build(master)
        text = json.dumps(table, sort_keys=True)
        if text != self._written:
            write_table(self.state_dir, table)
            self._written = text

    def build(self, master):
        processes = [{'role': 'master', 'pid': os.getpid(), 'queue': None,
                      'slot': None, 'started': self.started,
                      'state': 'stopping' if master.stopping else 'running'}]
        for child in sorted(master.children.values(),
                            key=lambda c: (c.queue, c.slot, c.pid)):
            processes.append({
                'role': 'child', 'pid': child.pid, 'queue': child.queue,
                'slot': child.slot, 'started': child.started_wall,
                'state': child_state(child)})
        metrics_pid = self.metrics_pid()
        if metrics_pid is not None:
            processes.append({'role': 'metrics', 'pid': metrics_pid,
                              'queue': None, 'slot': None,
                              'started': None, 'state': 'serving'})
        return {'host': self.host, 'master_pid': os.getpid(),
                'started': self.started, 'processes': processes,
                'restarts': [{'queue': q, 'slot': s, 'reason': r, 'count': n}
                             for (q, s, r), n in sorted(self.restarts.items())]}
