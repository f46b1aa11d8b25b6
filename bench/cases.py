"""The cases every system runs (1-4 and 7): enqueue cost, throughput, time
to execution, date-job lateness, idle CPU.

Each function runs one repetition and returns a dict of numbers; the caller
keeps the median of the repetitions.
"""
import random
import time

from .common import BenchError, Recorder, cpu_seconds, p50_p99


def enqueue_cost(system, n, warmup):
    """µs per enqueue of a no-op job, worker stopped (queue only grows)."""
    system.stop_worker()
    samples = []
    clock = time.perf_counter
    try:
        with system.enqueue_context():
            for _ in range(warmup):
                system.enqueue_noop()
            enqueue = system.enqueue_noop
            for _ in range(n):
                t0 = clock()
                enqueue()
                samples.append((clock() - t0) * 1e6)
    finally:
        system.purge()
    return p50_p99(samples)


def throughput(system, n, max_seconds, queue_jobs=None):
    """Jobs/s: ``n`` jobs queued while the worker is stopped, then run.

    The rate is taken between the first and the last job's start (recorded
    by the jobs), so the worker's boot is not counted. A run cut at
    ``max_seconds`` reports the rate of the jobs that ran.
    ``queue_jobs(path, n)``, if given, queues the jobs instead of
    ``system.send_record`` (case 10: through the outbox).
    """
    system.stop_worker()
    system.purge()
    recorder = Recorder(system.ctx, 'tput')
    try:
        if queue_jobs is not None:
            queue_jobs(recorder.path, n)
        for _ in range(n if queue_jobs is None else 0):
            system.send_record(recorder.path, 0)
        system.start_worker()
        try:
            recorder.wait(1, system.worker_ready_timeout)
        except BenchError:
            raise BenchError(f'{system.label} worker ran nothing:\n'
                             f'{system.worker.tail()}')
        first = time.monotonic()
        partial = False
        while len(recorder) < n:
            if time.monotonic() - first > max_seconds:
                partial = True
                break
            if not system.worker.alive():
                raise BenchError(f'{system.label} worker exited:\n'
                                 f'{system.worker.tail()}')
            time.sleep(0.05)
        starts = sorted(r[0] for r in recorder.records())
        if len(starts) < 2 or starts[-1] <= starts[0]:
            raise BenchError('not enough jobs ran to measure a rate')
        result = {'rate': (len(starts) - 1) / (starts[-1] - starts[0]),
                  'ran': len(starts)}
        if partial:
            result['partial'] = True
        return result
    finally:
        system.stop_worker()
        system.purge()
        recorder.close()


def latency(system, n, max_seconds, gap):
    """ms from just before the add call to the job function's start.

    One job at a time: the next is added a random 0..``gap`` s after the
    previous one ran (random, so a polling consumer is met at a random
    phase of its poll).
    """
    system.ensure_worker()
    recorder = Recorder(system.ctx, 'lat')
    rng = random.Random(6)
    try:
        began = time.monotonic()
        for i in range(n):
            if i and time.monotonic() - began > max_seconds:
                break
            t = time.time()
            system.send_record(recorder.path, t)
            recorder.wait(i + 1, 60)
            time.sleep(rng.uniform(0, gap))
        values = [(start - tag) * 1000 for start, tag in recorder.records()]
        result = p50_p99(values)
        result['n'] = len(values)
        return result
    finally:
        recorder.close()


def lateness(system, n, delay, spacing):
    """ms between a delayed job's scheduled time and its start.

    Job i is added for ``delay`` s after its own add call; one job every
    ``spacing`` s (``n`` jobs).
    """
    system.ensure_worker()
    recorder = Recorder(system.ctx, 'late')
    try:
        for _ in range(n):
            system.send_record_at(recorder.path, time.time() + delay)
            time.sleep(spacing)
        recorder.wait(n, delay + 60)
        values = [(start - tag) * 1000 for start, tag in recorder.records()]
        return p50_p99(values)
    finally:
        recorder.close()


def idle_cpu(system, seconds, settle=2.0):
    """% of one core used by the idle worker (all its processes)."""
    system.ensure_worker()
    time.sleep(settle)
    procs = (system.child_processes() if hasattr(system, 'child_processes')
             else system.worker_processes())
    before, t0 = cpu_seconds(procs), time.monotonic()
    time.sleep(seconds)
    after, t1 = cpu_seconds(procs), time.monotonic()
    return {'cpu': 100.0 * (after - before) / (t1 - t0)}
