"""The embedded SQLite transport (pyramid_scheduler/transports/sqlite/).

Real processes on a real SQLite file in tmp_path. Consumers and producers
that must be other processes run this file as a script (see ``child_main``
at the bottom); they report on stdout, one JSON object a line. Tests wait on
conditions with deadlines, never on a bare sleep.
"""
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time

import kombu
import pytest

from tests.conftest import poll

from pyramid_scheduler.transports.sqlite import (
    MESSAGE_TABLE, QUEUE_TABLE, SQLiteTransport, wakeups)

# Not in the fast lane (pytest -m "not slow"): starts consumer subprocesses and
# waits on leases.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 20
QUEUE = 'test.jobs'


# --- helpers -----------------------------------------------------------------

def wait_until(condition, timeout=TIMEOUT, interval=0.01, message=None):
    return poll(condition, timeout, interval, message)


def connect(path, **options):
    return kombu.Connection('sqlite:///' + str(path),
                            transport=SQLiteTransport,
                            transport_options=options)


def make_queue(name=QUEUE, **kwargs):
    return kombu.Queue(name, exchange=kombu.Exchange(''), routing_key=name,
                       **kwargs)


def publish(connection, bodies, queue=QUEUE):
    producer = connection.Producer()
    for body in bodies:
        producer.publish(body, routing_key=queue, exchange='',
                         declare=[make_queue(queue)], serializer='json')


def rows(path, where='1'):
    db = sqlite3.connect(str(path))
    try:
        return db.execute(f'SELECT COUNT(*) FROM {MESSAGE_TABLE} '
                          f'WHERE {where}').fetchone()[0]
    finally:
        db.close()


class Child:
    """A child process running this file; its stdout lines as JSON."""

    def __init__(self, tmp_path, *args):
        self.name = '-'.join(str(a) for a in args[2:4])
        self.stderr_path = tmp_path / f'stderr-{args[0]}-{id(self)}.txt'
        env = dict(os.environ, PYTHONPATH=ROOT)
        with open(self.stderr_path, 'w') as stderr:
            self.process = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__),
                 *map(str, args)],
                stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
                cwd=ROOT)
        self.lines = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            with self._lock:
                self.lines.append(json.loads(line))

    def events(self, kind=None):
        with self._lock:
            return [e for e in self.lines if kind is None or e['ev'] == kind]

    def wait_for(self, kind, count=1, timeout=TIMEOUT):
        return wait_until(
            lambda: (len(self.events(kind)) >= count
                     and self.events(kind)[:count]),
            timeout, message=lambda: f'{self.name}: no {count} {kind!r} '
            f'events; got {self.lines[-5:]}; exit code '
            f'{self.process.poll()}; stderr: {self.stderr()[-2000:]}')

    def stderr(self):
        return self.stderr_path.read_text()

    def stop(self, timeout=TIMEOUT):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        return code

    def kill(self):
        self.process.kill()
        self.process.wait(TIMEOUT)


@pytest.fixture
def children(tmp_path):
    started = []

    def start(*args):
        child = Child(tmp_path, *args)
        started.append(child)
        return child
    yield start
    for child in started:
        if child.process.poll() is None:
            child.kill()


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / 'db.sqlite'


# --- one process: the AMQP-ish semantics -------------------------------------

def test_put_get_ack_is_fifo_and_ack_deletes(db_path):
    with connect(db_path) as conn:
        publish(conn, [{'n': n} for n in range(5)])
        channel = conn.default_channel
        queue = make_queue()(channel)
        assert queue.queue_declare(passive=True).message_count == 5
        got = []
        for _ in range(5):
            message = queue.get(no_ack=False)
            got.append(message.payload['n'])
            message.ack()
        assert got == [0, 1, 2, 3, 4]
        assert queue.get() is None
        assert rows(db_path) == 0  # ack deletes: nothing for housekeeping


def test_reject_with_requeue_redelivers_in_place(db_path):
    with connect(db_path) as conn:
        publish(conn, [{'n': 1}, {'n': 2}])
        queue = make_queue()(conn.default_channel)
        first = queue.get()
        assert first.payload == {'n': 1}
        assert not first.delivery_info.get('redelivered')
        first.reject(requeue=True)
        assert rows(db_path) == 2  # no copy
        again = queue.get()
        assert again.payload == {'n': 1}  # first in line again
        assert again.delivery_info.get('redelivered') is True
        again.reject(requeue=False)  # dropped
        last = queue.get()
        assert last.payload == {'n': 2}
        last.ack()
        assert queue.get() is None
        assert rows(db_path) == 0


def test_channel_close_restores_unacked_without_duplicates(db_path):
    with connect(db_path) as conn:
        publish(conn, [{'n': n} for n in range(4)])
    received = []
    with connect(db_path) as conn:
        def on_message(body, message):
            received.append(body['n'])  # never acked
        # A drain leases and delivers up to the prefetch window.
        with conn.Consumer([make_queue()], callbacks=[on_message],
                           prefetch_count=3):
            while len(received) < 3:
                conn.drain_events(timeout=5)
        assert received == [0, 1, 2]
        assert rows(db_path, 'lease_token IS NOT NULL') == 3
    # The connection is closed: its three leases are visible again.
    assert rows(db_path) == 4
    assert rows(db_path, 'lease_token IS NULL') == 4
    with connect(db_path) as conn:
        queue = make_queue()(conn.default_channel)
        again = []
        while True:
            message = queue.get()
            if message is None:
                break
            again.append(message.payload['n'])
            message.ack()
    assert sorted(again) == [0, 1, 2, 3]
    assert again[:3] == [0, 1, 2]  # restored in place: FIFO kept


def test_a_lease_past_the_visibility_timeout_goes_to_another_consumer(
        db_path):
    """A hung (live) holder loses its lease; its late ack deletes nothing."""
    with connect(db_path) as slow, connect(
            db_path, visibility_timeout=0.2, reclaim_interval=0.1) as fast:
        publish(slow, [{'n': 1}])
        held = make_queue()(slow.default_channel).get()
        assert held.payload == {'n': 1}
        got = []
        with fast.Consumer([make_queue()],
                           callbacks=[lambda b, m: got.append(m)]):
            deadline = time.monotonic() + TIMEOUT
            while not got and time.monotonic() < deadline:
                try:
                    fast.drain_events(timeout=0.5)
                except socket.timeout:
                    pass
            [again] = got
            assert again.payload == {'n': 1}
            assert again.delivery_info['redelivered'] is True
            held.ack()  # too late: the lease is the other consumer's now
            assert rows(db_path) == 1
            again.ack()
            assert rows(db_path) == 0


def test_queue_size_purge_delete_and_passive_declare(db_path):
    with connect(db_path) as conn:
        channel = conn.default_channel
        with pytest.raises(kombu.exceptions.ChannelError):
            channel.queue_declare('nobody', passive=True)
        publish(conn, [{'n': n} for n in range(3)])
        queue = make_queue()(channel)
        held = queue.get()
        assert queue.queue_declare(passive=True).message_count == 2
        assert queue.purge() == 2  # the ready ones; the leased one stays
        assert rows(db_path) == 1
        held.ack()
        reply = make_queue('reply.x', auto_delete=True, durable=False)
        reply(channel).declare()
        publish(conn, [{'r': 1}], queue='reply.x')
        reply(channel).delete()
        assert rows(db_path) == 0
        with pytest.raises(kombu.exceptions.ChannelError):
            channel.queue_declare('reply.x', passive=True)


def traced_statements(conn):
    """The SQL the connection's transport runs from now on (a live list)."""
    statements = []
    conn.transport.db.connection.set_trace_callback(statements.append)
    return statements


def test_a_drain_leases_the_prefetch_window_in_one_statement(db_path):
    with connect(db_path) as conn:
        publish(conn, [{'n': n} for n in range(10)])
        got = []
        with conn.Consumer([make_queue()], prefetch_count=4,
                           callbacks=[lambda body, m: got.append(m)]):
            statements = traced_statements(conn)
            conn.drain_events(timeout=5)
            assert [m.payload['n'] for m in got] == [0, 1, 2, 3]
            writes = [s for s in statements if not s.startswith('SELECT')]
            assert len(writes) == 1, statements
            assert rows(db_path, 'lease_token IS NOT NULL') == 4
            # The window is full: nothing more until acks free room.
            with pytest.raises(socket.timeout):
                conn.drain_events(timeout=0.2)
            assert len(got) == 4
            got[0].ack()
            conn.drain_events(timeout=5)
            assert [m.payload['n'] for m in got] == [0, 1, 2, 3, 4]


def test_basic_ack_many_deletes_exactly_those_rows(db_path):
    with connect(db_path) as conn, connect(db_path) as other:
        publish(conn, [{'n': n} for n in range(6)])
        queue = make_queue()(conn.default_channel)
        mine = [queue.get() for _ in range(4)]
        theirs = make_queue()(other.default_channel).get()  # n=4
        channel = conn.default_channel
        statements = traced_statements(conn)
        channel.basic_ack_many([m.delivery_tag for m in mine[:3]])
        assert len(statements) == 1, statements
        assert rows(db_path) == 3  # n=3 (ours, unacked), 4 (theirs), 5
        assert rows(db_path, 'lease_token IS NULL') == 1
        # kombu's bookkeeping: only n=3 is still unacknowledged.
        assert list(channel.qos._delivered.keys() - channel.qos._dirty) == [
            mine[3].delivery_tag]
        # Tags we do not hold (acked already, or another consumer's) are
        # left alone.
        channel.basic_ack_many([mine[0].delivery_tag, theirs.delivery_tag])
        assert rows(db_path) == 3
        theirs.ack()
        mine[3].ack()
        assert rows(db_path) == 1


def test_a_failing_callback_gives_back_the_rest_of_its_batch(db_path):
    with connect(db_path) as conn:
        publish(conn, [{'n': n} for n in range(5)])
        got = []

        def on_message(body, message):
            got.append(body['n'])
            if body['n'] == 1:
                raise RuntimeError('boom')
            message.ack()
        with conn.Consumer([make_queue()], prefetch_count=5,
                           callbacks=[on_message]):
            with pytest.raises(RuntimeError):
                conn.drain_events(timeout=5)
            assert got == [0, 1]
            # n=1 stays ours (delivered, not acked); 2..4 are visible again.
            assert rows(db_path, 'lease_token IS NOT NULL') == 1
            assert rows(db_path, 'lease_token IS NULL') == 3
            while len(got) < 5:
                conn.drain_events(timeout=5)
            assert got == [0, 1, 2, 3, 4]  # in place: FIFO kept


def test_interrupt_before_a_drain_makes_it_return(db_path):
    """An interrupt while nobody waits is kept for the next drain."""
    with connect(db_path) as conn:
        with conn.Consumer([make_queue()], callbacks=[]):
            conn.transport.interrupt()
            started = time.monotonic()
            with pytest.raises(socket.timeout):
                conn.drain_events(timeout=10)
            assert time.monotonic() - started < 1


def test_no_ack_consumers_delete_at_delivery(db_path):
    with connect(db_path) as conn:
        publish(conn, [{'n': 1}])
        got = []
        with conn.Consumer([make_queue()], no_ack=True,
                           callbacks=[lambda body, m: got.append(body)]):
            conn.drain_events(timeout=5)
        assert got == [{'n': 1}]
    assert rows(db_path) == 0


def test_drain_events_keeps_kombus_timeout_semantics(db_path):
    with connect(db_path) as conn:
        with conn.Consumer([make_queue()], callbacks=[]):
            started = time.monotonic()
            with pytest.raises(socket.timeout):
                conn.drain_events(timeout=0.3)
            assert 0.25 <= time.monotonic() - started < 2
            with pytest.raises(socket.timeout):
                conn.drain_events(timeout=0)


def test_interrupt_makes_a_waiting_drain_return(db_path):
    """What a runtime uses to send acks queued by its worker threads."""
    with connect(db_path) as conn:
        with conn.Consumer([make_queue()], callbacks=[]):
            timer = threading.Timer(0.2, conn.transport.interrupt)
            timer.start()
            started = time.monotonic()
            with pytest.raises(socket.timeout):
                conn.drain_events(timeout=10)
            assert time.monotonic() - started < 5
            timer.join()


def test_wake_directory_falls_back_when_paths_are_too_long(tmp_path):
    short = str(tmp_path / 'db.sqlite')
    if len(short) < 60:
        assert wakeups.wake_directory(short) == short + '.wake'
    deep = tmp_path / ('d' * 80)
    deep.mkdir()
    long_path = str(deep / 'db.sqlite')
    directory = wakeups.wake_directory(long_path)
    assert len(directory) < 80
    assert wakeups.wake_directory(long_path) == directory
    # ... and it works there.
    def send():
        with connect(long_path) as producer:
            publish(producer, [{'n': 1}])

    with connect(long_path) as conn:
        got = []
        with conn.Consumer([make_queue()],
                           callbacks=[lambda b, m: (got.append(b), m.ack())]):
            assert any(n.endswith('.sock') for n in os.listdir(directory))
            timer = threading.Timer(0.1, send)
            timer.start()
            conn.drain_events(timeout=5)
            timer.join()
        assert got == [{'n': 1}]
        # The consumer is gone: its socket too.
        assert not any(n.endswith('.sock') for n in os.listdir(directory))


def test_a_connection_used_across_fork_is_not_shared(db_path):
    conn = connect(db_path)
    publish(conn, [{'n': 1}])
    parent_db = conn.transport.db
    pid = os.fork()
    if pid == 0:  # the child: same kombu objects, its own SQLite connection
        code = 1
        try:
            publish(conn, [{'n': 2}])
            code = 0 if conn.transport.db is not parent_db else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    publish(conn, [{'n': 3}])
    assert conn.transport.db is parent_db
    queue = make_queue()(conn.default_channel)
    got = [queue.get(no_ack=True).payload['n'] for _ in range(3)]
    assert got == [1, 2, 3]
    conn.release()


def socket_names(directory):
    return {n for n in os.listdir(directory) if n.endswith('.sock')}


def exit_code_of_a_forked_child(function):
    """Run ``function()`` in a forked child: 0 if it returned True."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 1
        try:
            code = 0 if function() else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_forked_child_closes_nothing_of_its_parents(db_path):
    # The child remakes its Queues and Waiter: the same consumers, its own
    # lease token and sockets; closing its connection (at once, or after
    # using it) gives back neither the parent's leases nor its sockets.
    directory = wakeups.wake_directory(str(db_path))
    with connect(db_path) as conn:
        publish(conn, [{'n': 1}, {'n': 2}])
        leased = make_queue()(conn.default_channel).get()
        got = []
        with conn.Consumer([make_queue()],
                           callbacks=[lambda b, m: (got.append(b), m.ack())]):
            transport = conn.transport
            parent_token = transport.queues.token
            parent_sockets = socket_names(directory)

            def remade_then_closed():
                mine = (transport.waiter.listening == {QUEUE: 1}
                        and transport.queues.token != parent_token
                        and socket_names(directory) > parent_sockets)
                conn.release()
                return mine

            def closed_at_once():
                conn.release()
                return True

            assert exit_code_of_a_forked_child(remade_then_closed) == 0
            assert exit_code_of_a_forked_child(closed_at_once) == 0
            assert socket_names(directory) == parent_sockets
            assert rows(db_path, 'lease_token IS NOT NULL') == 1
            leased.ack()
            conn.drain_events(timeout=5)
        assert got == [{'n': 2}]


# --- several processes -------------------------------------------------------

def test_killed_consumer_message_goes_to_another_consumer(db_path, children):
    """At least once: a consumer SIGKILLed before its ack loses nothing."""
    with connect(db_path) as conn:
        publish(conn, [{'n': 0}])
    holder = children('consume', db_path, 'hold')
    [got] = holder.wait_for('got')
    assert got['body'] == {'n': 0}
    assert rows(db_path, 'lease_token IS NOT NULL') == 1
    # Another consumer, already running, acks all it gets; more messages.
    other = children('consume', db_path, 'ack', '--reclaim-interval', '0.3')
    other.wait_for('ready')
    with connect(db_path) as conn:
        publish(conn, [{'n': n} for n in range(1, 6)])
    other.wait_for('got', 5)
    holder.kill()  # SIGKILL: no chance to give its message back
    # The other consumer notices the dead owner and gets message 0.
    events = other.wait_for('got', 6)
    assert sorted(e['body']['n'] for e in events) == [0, 1, 2, 3, 4, 5]
    assert events[-1]['body'] == {'n': 0}
    assert events[-1]['redelivered'] is True
    wait_until(lambda: rows(db_path) == 0)
    assert other.stop() == 0
    # A consumer that starts after a death reclaims at once, too.
    holder = children('consume', db_path, 'hold')
    with connect(db_path) as conn:
        publish(conn, [{'n': 6}])
    holder.wait_for('got')
    holder.kill()
    late = children('consume', db_path, 'ack')
    [event] = late.wait_for('got')
    assert event['body'] == {'n': 6}
    assert late.stop() == 0
    assert rows(db_path) == 0
    assert 'database is locked' not in other.stderr() + late.stderr()


def test_a_killed_consumer_loses_nothing_of_its_leased_batch(
        db_path, children):
    """SIGKILL with a batch leased, partly delivered: all of it comes back."""
    with connect(db_path) as conn:
        publish(conn, [{'n': n} for n in range(8)])
    holder = children('consume', db_path, 'stall', '--prefetch', '5')
    [got] = holder.wait_for('got')
    assert got['body'] == {'n': 0}
    assert rows(db_path, 'lease_token IS NOT NULL') == 5  # one lease
    holder.kill()
    other = children('consume', db_path, 'ack')
    events = other.wait_for('got', 8)
    assert [e['body']['n'] for e in events] == list(range(8))  # in place
    assert [e['redelivered'] for e in events] == [True] * 5 + [False] * 3
    wait_until(lambda: rows(db_path) == 0)
    assert other.stop() == 0
    assert len(other.events('got')) == 8, 'a message was delivered twice'


def test_many_producers_and_two_consumers_on_a_new_file(db_path, children):
    """Hammer one file: all delivered exactly once, no locking errors."""
    producers, per_producer = 4, 400
    # Everyone starts at once on a file that does not exist yet.
    consumers = [children('consume', db_path, 'ack') for _ in range(2)]
    makers = [children('produce', db_path, p, per_producer)
              for p in range(producers)]
    expected = {f'{p}-{i}' for p in range(producers)
                for i in range(per_producer)}

    def received():
        return [e['body']['id'] for c in consumers for e in c.events('got')]
    started = time.monotonic()
    wait_until(lambda: len(received()) >= len(expected), timeout=60,
               message=lambda: f'received {len(received())} of '
               f'{len(expected)}')
    print(f'\n{len(expected)} messages from {producers} producer processes '
          f'through 2 consumer processes in '
          f'{time.monotonic() - started:.2f}s (process start-up included)')
    for maker in makers:
        assert maker.process.wait(TIMEOUT) == 0, maker.stderr()
    wait_until(lambda: rows(db_path) == 0)
    for consumer in consumers:
        assert consumer.stop() == 0, consumer.stderr()
    got = received()
    assert set(got) == expected
    assert len(got) == len(expected), 'a message was delivered twice'
    # Both consumed from the new file without an error; which got how many
    # depends on which started first (on a loaded machine one consumer
    # started after the other had taken all 1,600).
    assert all(c.events('ready') for c in consumers), 'a consumer never ran'
    # FIFO per producer within each consumer's share.
    for consumer in consumers:
        seen = {}
        for event in consumer.events('got'):
            p, i = map(int, event['body']['id'].split('-'))
            assert i > seen.get(p, -1)
            seen[p] = i
    for child in consumers + makers:
        errors = child.stderr()
        assert 'database is locked' not in errors, errors
        assert 'already exists' not in errors, errors
        assert 'Traceback' not in errors, errors


def test_a_waiting_consumer_is_woken_not_polling(db_path, children):
    """A publish wakes a consumer in drain_events(timeout=5) at once."""
    consumer = children('consume', db_path, 'latency')
    consumer.wait_for('ready')
    latencies = []
    with connect(db_path) as conn:
        for n in range(30):
            time.sleep(0.02)  # let the consumer go back to sleep
            publish(conn, [{'n': n, 'sent': time.monotonic()}])
            [*_, event] = consumer.wait_for('got', n + 1)
            latencies.append(event['latency'])
    assert consumer.stop() == 0
    p50 = statistics.median(latencies)
    print(f'\nwake-up latency over {len(latencies)} messages: p50 '
          f'{p50 * 1000:.2f} ms, max {max(latencies) * 1000:.2f} ms '
          f'(fallback poll: {SQLiteTransport.polling_interval}s)')
    # The fallback poll is 2 s: every message well under it was woken.
    assert max(latencies) < 0.5, latencies


def test_an_idle_consumer_hardly_queries(db_path):
    """Idle CPU, structurally: a consumer waiting 3 s runs few statements."""
    with connect(db_path) as conn:
        with conn.Consumer([make_queue()], callbacks=[]):
            try:
                conn.drain_events(timeout=0)  # first poll and reclaim
            except socket.timeout:
                pass
            statements = traced_statements(conn)
            started = time.monotonic()
            with pytest.raises(socket.timeout):
                conn.drain_events(timeout=3)
            assert time.monotonic() - started >= 2.9
            statements = list(statements)
    print(f'\nstatements while idle for 3 s: {len(statements)}: '
          f'{statements}')
    # One fallback poll (every 2 s) and maybe a reclaim (every 5 s).
    assert 1 <= len(statements) <= 4, statements


# --- the whole stack ---------------------------------------------------------

def test_scheduler_runs_an_async_job_on_the_embedded_transport(tmp_path):
    from pyramid_scheduler.scheduler import Scheduler
    from pyramid_scheduler.settings import parse_settings
    from tests.jobs import read_records
    database = tmp_path / 'db.sqlite'
    settings = parse_settings({'scheduler.database': str(database),
                               'scheduler.allowed_modules': 'tests.jobs'})
    assert settings.broker_url == 'sqlite:///' + str(database)
    scheduler = Scheduler(settings)
    scheduler.start()
    try:
        out = str(tmp_path / 'out')
        scheduler.add_async_job('tests.jobs:record', args=[out, 'async'])
        [run] = wait_until(lambda: read_records(out))
        assert run['values'] == ['async']
        wait_until(lambda: rows(database) == 0)  # acked: deleted
    finally:
        scheduler.shutdown()


def test_a_runtime_leases_and_acks_in_batches(tmp_path):
    """Two statements per message before; a few per hundred now."""
    from pyramid_scheduler.scheduler import Scheduler
    from pyramid_scheduler.settings import parse_settings
    database = tmp_path / 'db.sqlite'
    scheduler = Scheduler(parse_settings({
        'scheduler.database': str(database),
        'scheduler.allowed_modules': 'tests.jobs'}))
    count = 300
    for _ in range(count):
        scheduler.add_async_job('tests.jobs:noop')
    scheduler.start()
    try:
        runtime = scheduler.runtime
        wait_until(lambda: runtime.stats.snapshot()['executed'] == count)
        wait_until(lambda: rows(database) == 0)  # all acked: deleted
        statements = runtime.consumer.channel.connection.statements
        print(f'\n{count} jobs: {statements} statements')
        assert statements < count / 2
    finally:
        scheduler.shutdown()


def test_an_idle_runtime_on_the_embedded_transport_stops_at_once(tmp_path):
    """Its consumer waits long between turns (idle CPU), but stop wakes it."""
    from pyramid_scheduler.scheduler import Scheduler
    from pyramid_scheduler.settings import parse_settings
    settings = parse_settings({
        'scheduler.database': str(tmp_path / 'db.sqlite')})
    scheduler = Scheduler(settings)
    scheduler.start()
    runtime = scheduler.runtime
    assert runtime.wait_ready(TIMEOUT)
    assert runtime.consumer.drain_timeout() == 1.0
    time.sleep(0.2)  # in the middle of a one-second wait
    started = time.monotonic()
    scheduler.shutdown()
    assert time.monotonic() - started < 0.6
    assert not runtime.running


def test_housekeeping_reclaims_dead_leases_and_drops_stale_replies(
        db_path, children):
    from pyramid_scheduler.runtime.introspection import (
        delete_consumed_messages)
    from pyramid_scheduler.settings import parse_settings
    settings = parse_settings({'scheduler.database': str(db_path)})
    with connect(db_path) as conn:
        publish(conn, [{'n': 1}])
        reply = make_queue('pyramid_scheduler.reply.old', auto_delete=True,
                           durable=False)
        reply(conn.default_channel).declare()
        publish(conn, [{'late': 'reply'}], queue=reply.name)
    db = sqlite3.connect(str(db_path))
    with db:
        db.execute(f'UPDATE {QUEUE_TABLE} SET created = created - 2 * 86400'
                   ' WHERE name = ?', (reply.name,))
    db.close()
    holder = children('consume', db_path, 'hold')
    holder.wait_for('got')
    holder.kill()
    assert rows(db_path, 'lease_token IS NOT NULL') == 1
    wake = wakeups.wake_directory(str(db_path))
    assert any(n.endswith('.sock') for n in os.listdir(wake))  # the dead's
    assert delete_consumed_messages(settings) == 1  # the stale reply
    assert rows(db_path) == 1
    assert rows(db_path, 'lease_token IS NULL') == 1  # visible again
    assert not any(n.endswith('.sock') for n in os.listdir(wake))
    assert delete_consumed_messages(settings) == 0


# --- child processes ---------------------------------------------------------

def child_main(argv):
    role, path = argv[0], argv[1]
    out = sys.stdout

    def emit(**event):
        out.write(json.dumps(event) + '\n')
        out.flush()

    if role == 'produce':
        producer, count = argv[2], int(argv[3])
        with connect(path) as conn:
            publish(conn, [{'id': f'{producer}-{i}'} for i in range(count)])
        return 0

    mode = argv[2]  # ack, hold, stall, latency
    options = {}
    if '--reclaim-interval' in argv:
        options['reclaim_interval'] = float(
            argv[argv.index('--reclaim-interval') + 1])
    # A holder takes one message and no more (prefetch 1, never acked).
    prefetch = 1 if mode == 'hold' else None
    if '--prefetch' in argv:
        prefetch = int(argv[argv.index('--prefetch') + 1])
    stopping = []

    def on_message(body, message):
        event = {'body': body, 'pid': os.getpid(),
                 'redelivered': bool(message.delivery_info.get(
                     'redelivered'))}
        if mode == 'latency':
            event['latency'] = time.monotonic() - body['sent']
        if mode not in ('hold', 'stall'):
            message.ack()
        emit(ev='got', **event)
        if mode == 'stall':  # stuck in the first message of its batch
            time.sleep(3600)

    with connect(path, **options) as conn:
        def stop(*args):
            stopping.append(True)
            conn.transport.interrupt()  # leave drain_events now
        signal.signal(signal.SIGTERM, stop)
        with conn.Consumer([make_queue()], callbacks=[on_message],
                           prefetch_count=prefetch):
            emit(ev='ready')
            while not stopping:
                try:
                    conn.drain_events(timeout=5 if mode == 'latency' else 1)
                except socket.timeout:
                    pass
    emit(ev='bye')
    return 0


if __name__ == '__main__':
    sys.exit(child_main(sys.argv[1:]))
