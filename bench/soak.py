"""Case 9: many async jobs through one pscheduler child (a leak shows as
growth).

pscheduler on Redis, one queue, one child. The jobs go in rounds of
``every``: the child is paused (SIGSTOP) while the round is added, so
that the producer's speed is not measured, then resumed (SIGCONT); the
round's rate is taken from its first to its last job's start, and the
child's RSS once the round ran. The same child runs every round (a new
one would hide a leak): the case fails if it was replaced.
"""
import os
import signal

from .common import BenchError, Recorder, rss
from .daemon import CASE5_DB, Daemon

SETTINGS = {
    # The pauses are the benchmark's: not a silent child to replace.
    'scheduler.child.heartbeat_timeout': '10m',
}


def soak_case(ctx, total, every, timeout=600):
    """{'jobs', 'every', 'rates': [...], 'rss_mb': [empty, ...]}."""
    d = Daemon(ctx, 'redis', CASE5_DB, tag='soak', extra_settings=SETTINGS)
    d.setup()
    try:
        d.ensure_worker()
        child = d.the_child()
        out = {'jobs': total, 'every': every, 'rates': [],
               'rss_mb': [rss(child) / 1e6]}
        done = 0
        while done < total:
            batch = min(every, total - done)
            out['rates'].append(one_round(d, child, batch, timeout))
            done += batch
            if d.child_pids() != [child]:
                raise BenchError(f'the child {child} was replaced after '
                                 f'{done:,} jobs: {d.master.tail()}')
            out['rss_mb'].append(rss(child) / 1e6)
            ctx.log(f'soak: {done:,} jobs, {out["rates"][-1]:,.0f} jobs/s, '
                    f'child RSS {out["rss_mb"][-1]:.1f} MB')
        return out
    finally:
        d.stop_worker()
        d.teardown()


def one_round(d, child, batch, timeout):
    """Add ``batch`` jobs to the paused child, resume it: its jobs/s."""
    recorder = Recorder(d.ctx, 'soak')
    try:
        os.kill(child, signal.SIGSTOP)
        try:
            for _ in range(batch):
                d.send_record(recorder.path, 0)
        finally:
            os.kill(child, signal.SIGCONT)
        recorder.wait(batch, timeout)
        starts = sorted(start for start, _ in recorder.records())
    finally:
        recorder.close()
    if starts[-1] <= starts[0]:
        raise BenchError('not enough jobs ran to measure a rate')
    return (batch - 1) / (starts[-1] - starts[0])
