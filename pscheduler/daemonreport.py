"""How ``pscheduler --message status`` (and ``ping``) show the whole
daemon: every process, from the ``daemon`` part of the children's answers
(pyramid_scheduler.daemonview).

Each queue's answer carries its daemon; a daemon serving several queues
(or several daemons, on other hosts, serving the same ones) is shown
once, by host and master pid.
"""
import time

from .sizes import format_size

COLUMNS = ('PID', 'ROLE', 'QUEUE', 'STATE', 'UP', 'RSS', 'CPU', 'RUNNING',
           'DONE/FAILED/RETRIED', 'SINCE DAEMON START', 'SCHEDULER')


def daemons_of(replies):
    """The distinct daemons the answers describe, in answer order."""
    found = {}
    for reply in replies:
        daemon = (reply.get('result') or {}).get('daemon')
        if daemon:
            found.setdefault((daemon.get('host'), daemon.get('master_pid')),
                             daemon)
    return list(found.values())


def format_daemon(daemon, format_duration, brief=False):
    """The daemon's processes as a table; ``brief`` (``ping``): which
    processes, in which state, and no figures."""
    started = daemon.get('started')
    up = format_duration(time.time() - started) if started else '?'
    head = f'daemon on {daemon.get("host")}: master {daemon.get("master_pid")}'
    if brief:
        return '\n'.join([f'{head}; processes:'] + [
            f'  {process.get("pid")} {process.get("role")} '
            f'{queue_text(process)} {process.get("state")}'
            for process in daemon.get('processes') or []])
    lines = [f'{head}, up {up}'
             + restarts_text(daemon.get('restarts') or [])]
    rows = [COLUMNS] + [process_row(process, format_duration)
                        for process in daemon.get('processes') or []]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        lines.append('  ' + '  '.join(cell.ljust(width) for cell, width
                                      in zip(row, widths)).rstrip())
    return '\n'.join(lines)


def queue_text(process):
    queue = process.get('queue') or '-'
    if process.get('slot') is not None:
        queue += f' #{process["slot"] + 1}'
    return queue


def process_row(process, format_duration):
    return (
        str(process.get('pid') or '-'), process.get('role') or '?',
        queue_text(process),
        process.get('state') or '?',
        format_duration(process['uptime'])
        if process.get('uptime') is not None else '-',
        format_size(process['rss']) if process.get('rss') else '-',
        f'{process["cpu"]:.1f}s' if process.get('cpu') is not None else '-',
        str(process.get('running', '-')),
        counts_text(process.get('since_start')),
        counts_text(process.get('since_daemon_start')),
        scheduler_text(process))


def counts_text(counts):
    if not counts:
        return '-'
    return (f'{counts.get("executed", 0)}/{counts.get("failed", 0)}/'
            f'{counts.get("retried", 0)}')


def scheduler_text(process):
    if process.get('role') != 'child':
        return '-'
    if not process.get('owns_jobstore'):
        return 'not owner'
    alive = process.get('scheduler_alive')
    return 'owner, ' + ('alive' if alive else 'DEAD' if alive is not None
                        else '?')


def restarts_text(restarts):
    if not restarts:
        return '; no child restarted'
    return '; restarts: ' + ', '.join(
        f'{entry["queue"]} #{entry["slot"] + 1} {entry["reason"]} '
        f'x{entry["count"]}' for entry in restarts)
