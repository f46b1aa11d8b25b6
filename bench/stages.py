"""Where the time to execution goes, stage by stage (issue 18's profile).

    python -m bench.stages [redis,amqp] [--jobs N]

For pyramid_scheduler (its Runtime in a worker process, as a pscheduler
child runs it: ``bench.psworker``) and raw kombu (``bench.kombu_raw``'s
consumer), on each broker: one job at a time, the next a random 0-10 ms
after the previous one started (as the latency case, 3.), with the moments
below written to a file by the producer and the worker (``time.time()``,
one ``write()`` each; both on this machine):

- ``add``: just before the add call (raw kombu: ``Producer.publish``);
- ``pub``: the publish's first write to the broker's socket begins (Redis:
  ``send_packed_command`` of the LPUSH; RabbitMQ: py-amqp's
  ``_basic_publish``);
- ``sent``: that write has returned;
- ``recv``: the worker's transport has read the message (Redis: the reply
  to its fetch; RabbitMQ: py-amqp's ``basic.deliver``);
- ``start``: the job function starts.

It prints the median (and p90) of each stage and of the whole. The marks
cost a few µs each, in both systems alike. Nothing here is part of the
benchmark's results (``python -m bench``): it explains them.
"""
import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

STAGES = ('add', 'pub', 'sent', 'recv', 'start')
URLS = {'redis': 'redis://127.0.0.1:6379/14',   # REDIS_DB
        'amqp': 'amqp://guest:guest@127.0.0.1:5672//'}


class Marks:
    """Appends ``"stage time"`` lines to a file, one ``write()`` each."""

    def __init__(self, path=os.devnull):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    def retarget(self, path):
        os.close(self.fd)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    def __call__(self, stage):
        os.write(self.fd, b'%s %.7f\n' % (stage.encode(), time.time()))


def wrap(owner, name, before=None, after=None, when=lambda *a: True):
    """Replace ``owner.name`` by a function marking around the original."""
    original = getattr(owner, name)

    def marked(*args, **kwargs):
        hit = when(*args)
        if hit and before:
            before()
        result = original(*args, **kwargs)
        if hit and after:
            after()
        return result
    setattr(owner, name, marked)


def _is_lpush(connection, command, *args):
    chunk = command[0] if isinstance(command, (list, tuple)) else command
    return b'LPUSH' in bytes(chunk[:32])


def mark_publish(mark):
    """The producer's marks (this process)."""
    import amqp.channel
    import redis.connection
    wrap(amqp.channel.Channel, '_basic_publish', lambda: mark('pub'),
         lambda: mark('sent'))
    # py-amqp binds basic_publish to _basic_publish at class creation.
    if amqp.channel.Channel.basic_publish is not \
            amqp.channel.Channel.basic_publish_confirm:
        amqp.channel.Channel.basic_publish = \
            amqp.channel.Channel._basic_publish
    wrap(redis.connection.Connection, 'send_packed_command',
         lambda: mark('pub'), lambda: mark('sent'), when=_is_lpush)


def mark_receive(mark):
    """The worker's ``recv`` mark (the transports of both systems)."""
    import amqp.channel
    from kombu.transport import redis as kombu_redis
    wrap(amqp.channel.Channel, '_on_basic_deliver', lambda: mark('recv'))
    wrap(kombu_redis.Channel, '_brpop_read', lambda: mark('recv'))
    from pyramid_scheduler.transports.redis import channel
    wrap(channel.Channel, '_brpop_read', lambda: mark('recv'))


def started(path, tag=0.0):
    """The job both systems run: marks its start and wakes the producer."""
    os.write(_worker_marks.fd, b'start %.7f\n' % time.time())
    os.write(_done_fd, b'x')


_worker_marks = _done_fd = None
# The producer's marks (this process), pointed at each run's file.
_producer_marks = None
REDIS_DB = 14


def run_worker(system, url, queue_or_ini, trace):
    global _worker_marks, _done_fd
    _worker_marks = Marks(trace)
    _done_fd = os.open(trace + '.done', os.O_WRONLY)
    mark_receive(_worker_marks)
    if system == 'pyramid_scheduler':
        from bench import psworker
        psworker.main([queue_or_ini])
        return
    import bench.jobs
    from bench import kombu_raw
    bench.jobs.record = started   # what kombu_raw's worker calls
    kombu_raw.worker(url, queue_or_ini)


def measure(system, broker, jobs):
    """The stages of ``jobs`` jobs: ``[{stage: time}]``."""
    tmp = tempfile.mkdtemp(prefix='bench-stages-')
    trace = os.path.join(tmp, 'trace')
    open(trace, 'w').close()
    os.mkfifo(trace + '.done')
    _producer_marks.retarget(trace)
    send, target, close = _producer(system, broker, tmp)
    worker = subprocess.Popen(
        [sys.executable, '-m', 'bench.stages', '--worker', system,
         URLS[broker], target, trace], start_new_session=True,
        stderr=subprocess.DEVNULL)
    done = os.open(trace + '.done', os.O_RDONLY)
    marks = _producer_marks
    try:
        send()
        os.read(done, 1)              # warm: connected, imported
        time.sleep(0.5)
        open(trace, 'w').close()
        rng = random.Random(6)
        for _ in range(jobs):
            marks('add')
            send()
            os.read(done, 1)
            time.sleep(rng.uniform(0, 0.01))
    finally:
        os.killpg(worker.pid, 9)
        worker.wait()
        close()
    return _read_jobs(trace)


def _producer(system, broker, tmp):
    """``(send(), what the worker consumes, close())``."""
    if system == 'pyramid_scheduler':
        from bench.ps import write_ini
        settings = {'scheduler.queues': 'jobs',
                    'scheduler.id': f'stages{uuid.uuid4().hex[:8]}',
                    'scheduler.database': os.path.join(tmp, 'db.sqlite'),
                    'scheduler.broker.url': URLS[broker]}
        ini = write_ini(_Ctx(tmp), 'stages', settings)
        from bench.app import make_app
        scheduler = make_app(dict(settings)).registry.scheduler

        def close():
            scheduler.shutdown(timeout=1)
            _delete(broker, settings['scheduler.id'])
        # By name: this module runs as __main__ here.
        return (lambda: scheduler.add_async_job('bench.stages:started',
                                                args=('', 0.0)),
                ini, close)
    import kombu
    from bench.kombu_raw import queue_for
    name = f'stages{uuid.uuid4().hex[:8]}'
    kqueue = queue_for(name)
    connection = kombu.Connection(URLS[broker])
    kqueue(connection.default_channel).declare()
    producer = connection.Producer(serializer='json')
    body = {'job': 'record', 'path': '', 'tag': 0.0}

    def close():
        kqueue(connection.default_channel).delete()
        connection.release()
    return (lambda: producer.publish(body, exchange=kqueue.exchange,
                                     routing_key=name, delivery_mode=2),
            name, close)


def _delete(broker, scheduler_id):
    from bench.base import amqp_delete, redis_delete_matching
    if broker == 'redis':
        redis_delete_matching(REDIS_DB, f'*{scheduler_id}*')
    else:
        amqp_delete([f'{scheduler_id}.jobs', f'{scheduler_id}.jobs.admin',
                     f'{scheduler_id}.jobs.dead'])


class _Ctx:
    def __init__(self, tmp):
        self.tmp = tmp

    def path(self, name):
        return os.path.join(self.tmp, name)


def _read_jobs(trace):
    jobs, current = [], {}
    with open(trace) as lines:
        for line in lines:
            stage, at = line.split()
            if stage == 'add':
                current = {}
            current.setdefault(stage, float(at))
            if stage == 'start':
                jobs.append(current)
    return jobs


def summary(jobs):
    """``[(stage, p50 ms, p90 ms)]`` from one stage to the next, and the
    whole."""
    rows = []
    for first, then in zip(STAGES, STAGES[1:]):
        rows.append((f'{first} → {then}',) + _cuts(jobs, first, then))
    rows.append(('add → start (time to execution)',)
                + _cuts(jobs, 'add', 'start'))
    return rows


def _cuts(jobs, first, then):
    values = sorted((job[then] - job[first]) * 1000 for job in jobs
                    if first in job and then in job)
    if not values:
        return None, None
    return statistics.median(values), values[int(len(values) * 0.9)]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    # This module's globals, not __main__'s: the job, bench.stages:started,
    # is found by name in the worker.
    from bench import stages
    if argv[:1] == ['--worker']:
        stages.run_worker(*argv[1:])
        return
    stages.run(argv)


def run(argv):
    parser = argparse.ArgumentParser(prog='python -m bench.stages')
    parser.add_argument('brokers', nargs='?', default='redis,amqp')
    parser.add_argument('--jobs', type=int, default=300)
    args = parser.parse_args(argv)
    global _producer_marks
    _producer_marks = Marks()
    mark_publish(lambda stage: _producer_marks(stage))
    for broker in args.brokers.split(','):
        results = {}
        for system in ('pyramid_scheduler', 'kombu'):
            results[system] = summary(measure(system, broker, args.jobs))
        print(f'\n{broker}: ms, p50 (p90), {args.jobs} jobs one at a time')
        print(f'{"stage":<34}{"pyramid_scheduler":>20}{"raw kombu":>20}')
        for ours, theirs in zip(results['pyramid_scheduler'],
                                results['kombu']):
            print(f'{ours[0]:<34}{_cell(ours):>20}{_cell(theirs):>20}')


def _cell(row):
    _, p50, p90 = row
    return '—' if p50 is None else f'{p50:.3f} ({p90:.3f})'


if __name__ == '__main__':
    main()
