"""Benchmark of the embedded SQLite transport (no pytest).

    python bench/sqlite_transport.py [--dir DIR] [--stack]

Prints:

- time to receive: a consumer process waits in ``drain_events``; the
  producer (this process) publishes 1,000 single messages one after the
  other, each once the previous one has arrived; p50/p99 of publish ->
  callback (CLOCK_MONOTONIC is system-wide on Linux);
- throughput through one consumer process: 20,000 messages published by one
  producer process while the consumer runs (end to end), and 20,000 already
  queued ones drained;
- idle CPU of a consumer process waiting 10 s (psutil cpu_times);
- with ``--stack``: the same latency through the whole pyramid_scheduler
  stack (Scheduler.add_async_job -> the job runs), and its throughput.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

QUEUE = 'bench'


def connection(path):
    import kombu
    from pyramid_scheduler.sqlite_transport import SQLiteTransport
    return kombu.Connection('sqlite:///' + path, transport=SQLiteTransport)


def kombu_queue():
    import kombu
    return kombu.Queue(QUEUE, exchange=kombu.Exchange(''), routing_key=QUEUE)


# --- child processes ---------------------------------------------------------

def run_consumer(path, mode, count):
    """Consume; report on stdout as JSON lines."""
    import socket
    conn = connection(path)
    out = sys.stdout
    received = [0]
    first = [None]

    def on_message(body, message):
        now = time.monotonic()
        message.ack()
        received[0] += 1
        if first[0] is None:
            first[0] = now
        if mode == 'latency':
            out.write(json.dumps({'latency': now - body['sent']}) + '\n')
            out.flush()

    with conn:
        with conn.Consumer([kombu_queue()], callbacks=[on_message],
                           accept=['json']):
            out.write(json.dumps({'ready': True}) + '\n')
            out.flush()
            if mode == 'idle':
                deadline = time.monotonic() + count
                while time.monotonic() < deadline:
                    try:
                        conn.drain_events(timeout=deadline - time.monotonic())
                    except socket.timeout:
                        pass
                out.write(json.dumps({'statements':
                                      conn.transport.statements}) + '\n')
                return
            while received[0] < count:
                try:
                    conn.drain_events(timeout=30)
                except socket.timeout:
                    break
    out.write(json.dumps({'done': received[0], 'first': first[0],
                          'last': time.monotonic()}) + '\n')
    out.flush()


def run_producer(path, count):
    conn = connection(path)
    with conn:
        producer = conn.Producer()
        for i in range(count):
            producer.publish({'i': i, 'sent': time.monotonic()},
                             routing_key=QUEUE, exchange='',
                             declare=[kombu_queue()], serializer='json')


def spawn(*args):
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), *map(str, args)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)


def read_json(process):
    line = process.stdout.readline()
    if not line:
        raise SystemExit(f'child {process.args} died: {process.wait()}')
    return json.loads(line)


# --- measurements ------------------------------------------------------------

def percentile(values, p):
    values = sorted(values)
    return values[min(int(len(values) * p), len(values) - 1)]


def bench_latency(path, n=1000):
    consumer = spawn('--child', 'consumer', path, 'latency', n)
    assert read_json(consumer)['ready']
    conn = connection(path)
    latencies = []
    with conn:
        producer = conn.Producer()
        for i in range(n):
            producer.publish({'i': i, 'sent': time.monotonic()},
                             routing_key=QUEUE, exchange='',
                             declare=[kombu_queue()], serializer='json')
            latencies.append(read_json(consumer)['latency'])
    read_json(consumer)
    consumer.wait()
    print(f'time to receive, {n} single messages: '
          f'p50 {statistics.median(latencies) * 1000:.2f} ms, '
          f'p99 {percentile(latencies, 0.99) * 1000:.2f} ms, '
          f'max {max(latencies) * 1000:.2f} ms')


def bench_throughput(path, n=20000):
    consumer = spawn('--child', 'consumer', path, 'count', n)
    assert read_json(consumer)['ready']
    started = time.monotonic()
    producer = spawn('--child', 'producer', path, n)
    producer.wait()
    produced = time.monotonic()
    result = read_json(consumer)
    consumer.wait()
    assert result['done'] == n, result
    elapsed = result['last'] - started
    print(f'throughput, {n} messages, 1 producer process publishing while 1 '
          f'consumer process consumes: {n / elapsed:,.0f} msg/s end to end '
          f'({elapsed:.2f}s; publishing alone took {produced - started:.2f}s)')

    producer = spawn('--child', 'producer', path, n)
    producer.wait()
    consumer = spawn('--child', 'consumer', path, 'count', n)
    assert read_json(consumer)['ready']
    result = read_json(consumer)
    consumer.wait()
    assert result['done'] == n, result
    elapsed = result['last'] - result['first']
    print(f'throughput, {n} messages already queued, 1 consumer process: '
          f'{n / elapsed:,.0f} msg/s ({elapsed:.2f}s)')


def bench_idle(path, seconds=10):
    import psutil
    consumer = spawn('--child', 'consumer', path, 'idle', seconds)
    assert read_json(consumer)['ready']
    process = psutil.Process(consumer.pid)
    before = process.cpu_times()
    started = time.monotonic()
    result = read_json(consumer)
    after = process.cpu_times()
    elapsed = time.monotonic() - started
    consumer.wait()
    cpu = (after.user + after.system) - (before.user + before.system)
    print(f'idle consumer over {elapsed:.1f}s: {cpu * 1000:.1f} ms CPU = '
          f'{cpu / elapsed * 100:.3f} % of a core, '
          f'{result["statements"]} SQL statements in all')


def bench_stack(directory, n=300, burst=2000):
    """Scheduler.add_async_job -> job runs, combined mode in this process."""
    import threading
    from pyramid_scheduler.scheduler import Scheduler
    from pyramid_scheduler.settings import parse_settings
    import bench_jobs  # noqa: F401 (on sys.path below)
    settings = parse_settings({'scheduler.database':
                               os.path.join(directory, 'stack.sqlite'),
                               # No app here: the job module is named.
                               'scheduler.allowed_modules': 'bench_jobs'})
    scheduler = Scheduler(settings)
    scheduler.start()
    assert scheduler.runtime.wait_ready(10)
    done = threading.Event()
    latencies = []

    def listener(event):
        if event['type'] == 'job.executed':
            latencies.append(event['retval'])
            done.set()

    scheduler.add_listener(listener)
    try:
        for _ in range(n):
            done.clear()
            scheduler.add_async_job('bench_jobs:since',
                                    args=[time.monotonic()])
            if not done.wait(10):
                raise SystemExit('a job did not run within 10s')
        print(f'full stack, add_async_job -> job runs, {n} single jobs: '
              f'p50 {statistics.median(latencies) * 1000:.2f} ms, '
              f'p99 {percentile(latencies, 0.99) * 1000:.2f} ms')
        latencies.clear()
        started = time.monotonic()
        for _ in range(burst):
            scheduler.add_async_job('bench_jobs:since',
                                    args=[time.monotonic()])
        published = time.monotonic()
        deadline = time.monotonic() + 120
        while len(latencies) < burst and time.monotonic() < deadline:
            time.sleep(0.01)
        elapsed = time.monotonic() - started
        print(f'full stack, {burst} jobs added by one thread while the '
              f'runtime runs them: {len(latencies) / elapsed:,.0f} jobs/s '
              f'({elapsed:.2f}s; adding alone took '
              f'{published - started:.2f}s)')
    finally:
        scheduler.shutdown()


def main():
    if len(sys.argv) > 2 and sys.argv[1] == '--child':
        role = sys.argv[2]
        if role == 'consumer':
            run_consumer(sys.argv[3], sys.argv[4], float(sys.argv[5])
                         if sys.argv[4] == 'idle' else int(sys.argv[5]))
        else:
            run_producer(sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dir', help='where the database goes (default: a '
                        'new temporary directory, removed at the end)')
    parser.add_argument('--stack', action='store_true',
                        help='also measure through Scheduler/Runtime')
    options = parser.parse_args()
    directory = options.dir or tempfile.mkdtemp(prefix='bench-sqlite-')
    os.makedirs(directory, exist_ok=True)
    import sqlite3
    print(f'SQLite {sqlite3.sqlite_version}, Python '
          f'{sys.version.split()[0]}, {os.cpu_count()} CPUs, '
          f'database in {directory}')
    try:
        bench_latency(os.path.join(directory, 'latency.sqlite'))
        bench_throughput(os.path.join(directory, 'throughput.sqlite'))
        bench_idle(os.path.join(directory, 'idle.sqlite'))
        if options.stack:
            sys.path.insert(0, os.path.join(ROOT, 'bench'))
            bench_stack(directory)
    finally:
        if not options.dir:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == '__main__':
    main()
