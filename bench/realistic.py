"""Case 8: realistic jobs, with 1, 2 and 4 processes per queue.

Each system gets a burst of ``n`` jobs that wait 5 ms as on I/O
(``time.sleep``), then a burst of ``n`` jobs that burn 5 ms of CPU
(``time.thread_time``: the same work however busy the machine is), added
as fast as the producer can to a running worker. Jobs/s is taken from the
first to the last job's start; the time to execution (from just before the
add call to the job's start) includes the wait behind the rest of the
burst: it is how long a job of a burst waits with that many processes.

Processes per queue: pscheduler ``scheduler.processes`` (each child with
``scheduler.executor.size`` 4 threads), Celery ``-P prefork -c N``, Huey
``-w N -k process``. Raw kombu has no pool of processes: not run.
"""
import time

from .common import BenchError, Recorder, percentile

KINDS = ('io', 'cpu')
SYSTEMS = ('pyramid_scheduler', 'celery', 'huey')


def make_system(classes, key, ctx, broker, processes):
    cls = classes[key]
    if key == 'pyramid_scheduler':
        system = cls(ctx, broker, processes=processes)
        system.queue += '_real'
        system.scheduler_id += '_real'
        system.settings['scheduler.id'] = system.scheduler_id
        system.database = system.database.replace('.sqlite', '_real.sqlite')
        system.settings['scheduler.database'] = system.database
        return system
    system = cls(ctx, broker)
    system.queue += f'_real{processes}'
    system.set_processes(processes)
    return system


def burst(system, kind, n, timeout):
    """One burst on a running worker: {'rate', 'p50', 'p99'}."""
    recorder = Recorder(system.ctx, f'real-{kind}')
    try:
        for _ in range(n):
            system.send_work(kind, recorder.path, time.time())
        try:
            recorder.wait(n, timeout)
        except BenchError as exc:
            raise BenchError(f'{system.label}, {kind}: {exc}:\n'
                             f'{system.worker.tail()}')
        records = recorder.records()
    finally:
        recorder.close()
    starts = sorted(start for start, _ in records)
    waits = [(start - tag) * 1000 for start, tag in records]
    return {'rate': (n - 1) / (starts[-1] - starts[0]),
            'p50': percentile(waits, 50), 'p99': percentile(waits, 99)}


def run_system(system, n, timeout):
    """Both kinds on one worker: {kind: result}."""
    system.setup()
    try:
        system.ensure_worker()
        return {kind: burst(system, kind, n, timeout) for kind in KINDS}
    finally:
        system.stop_worker()
        system.purge()
        system.teardown()


def realistic_case(ctx, classes, systems, processes, n, broker='redis',
                   errors=None, timeout=300):
    """{'system|kind|processes': result} for every system and count."""
    out = {}
    for key in SYSTEMS:
        if key not in systems:
            continue
        for count in processes:
            system = make_system(classes, key, ctx, broker, count)
            ctx.log(f'realistic: {system.label}, {count} process(es), '
                    f'{n:,} I/O then {n:,} CPU jobs')
            try:
                results = run_system(system, n, timeout)
            except Exception as exc:
                if errors is not None:
                    errors.append(f'realistic, {key}, {count}: {exc}')
                results = {kind: {'error': str(exc)} for kind in KINDS}
            for kind, result in results.items():
                out[f'{key}|{kind}|{count}'] = result
    out['jobs'] = n
    return out
