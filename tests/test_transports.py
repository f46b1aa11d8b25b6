"""The seams of pyramid_scheduler.transports and pyramid_scheduler.naming.

Which transport, options and publisher a broker URL gets; the Redis restores
answering 0 elsewhere without importing Redis; queue names (persisted: they
must never change); the old import paths kept as shims; and, in-process,
the pieces the SQLite transport is built from: the wake-up handshake
(WakeFlags), the wake-up sockets (WakeBox), the lease identity and the
once-per-process database setup. Nothing here connects to Redis or
RabbitMQ.
"""
import os
import subprocess
import sys
import textwrap
import threading
import time
import types

import kombu
import pytest

from pyramid_scheduler import naming, transports
from pyramid_scheduler.settings import parse_settings
from pyramid_scheduler.transports.sqlite import database, leases, wakeups

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def settings_for(tmp_path, url=None, **conf):
    conf = {f'scheduler.{key}': value for key, value in conf.items()}
    conf['scheduler.database'] = str(tmp_path / 'db.sqlite')
    conf.setdefault('scheduler.allowed_modules', 'tests.jobs')
    if url:
        conf['scheduler.broker.url'] = url
    return parse_settings(conf)


def run_python(code):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                          env=env, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


# --- redis stays an optional extra -----------------------------------------

def test_the_sqlite_default_imports_nothing_of_redis(tmp_path):
    # A fresh interpreter, where other tests' imports cannot hide one, and
    # where redis cannot be imported at all (as without the redis extra).
    result = run_python(f'''
        import sys
        sys.modules['redis'] = None   # any "import redis" now fails
        import pyramid_scheduler, pyramid_scheduler.transports
        import pyramid_scheduler.transports.sqlite
        from pyramid_scheduler import broker, naming, producer, transports
        from pyramid_scheduler import sqlite_transport
        from pyramid_scheduler.settings import parse_settings
        settings = parse_settings({{'scheduler.database':
                                   {str(tmp_path / 'db.sqlite')!r}}})
        assert transports.direct_publisher(settings) is None
        producer.Producer(settings).close()
        with transports.connect(settings) as connection:
            channel = connection.default_channel
            assert transports.restore_orphaned_messages(channel, {{'q'}}) == 0
            assert transports.restore_fetched_messages(channel, {{'q'}}) == 0
            assert transports.restore_removed_slots(channel, {{'q': 1}}) == 0
        loaded = [name for name in sys.modules
                  if name == 'kombu.transport.redis'
                  or name.startswith('pyramid_scheduler.transports.redis')
                  or (name.split('.')[0] == 'redis'
                      and sys.modules[name] is not None)]
        print(loaded)
    ''')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '[]'


def test_a_redis_url_gets_our_transport_its_slots_and_the_direct_publisher(
        tmp_path):
    settings = settings_for(tmp_path, 'redis://127.0.0.1:6379/3')
    from pyramid_scheduler.transports.redis import channel, publish
    connection = transports.connect(settings, consumer_slot=2)
    try:
        assert connection.transport_cls is channel.Transport
        options = connection.transport_options
        assert options['unacked_key'] == 'unacked#2'
        assert options['consumer_slot'] == 2
        assert options['visibility_timeout'] == settings.visibility_timeout
    finally:
        connection.release()
    publisher = transports.direct_publisher(settings)
    assert isinstance(publisher, publish.RedisPublisher)
    publisher.close()


def test_rediss_keeps_kombus_transport_with_slots_and_no_direct_publisher(
        tmp_path):
    settings = settings_for(tmp_path, 'rediss://127.0.0.1:6380/0')
    connection = transports.connect(settings, consumer_slot=1)
    try:
        assert connection.transport_cls == 'rediss'
        assert connection.transport_options['unacked_key'] == 'unacked#1'
    finally:
        connection.release()
    assert transports.direct_publisher(settings) is None


def test_amqp_gets_kombus_transport_and_publisher_confirms(tmp_path):
    settings = settings_for(tmp_path, 'amqp://guest:guest@127.0.0.1:5672//')
    confirms = {'confirm_publish': True}  # tests/test_confirms.py
    assert transports.transport_options(settings) == confirms
    assert transports.direct_publisher(settings) is None
    connection = transports.connect(settings, consumer_slot=3)
    try:
        assert connection.transport_cls == 'amqp'
        assert connection.transport_options == confirms
    finally:
        connection.release()


def test_the_embedded_broker_gets_the_sqlite_transport_and_its_database(
        tmp_path):
    settings = settings_for(tmp_path, **{'broker.polling_interval': '0.5s'})
    with transports.connect(settings) as connection:
        assert connection.transport_cls is transports.SQLiteTransport
        assert connection.transport_options == {
            'busy_timeout': 30, 'polling_interval': 0.5,
            'visibility_timeout': settings.visibility_timeout}
        # The tables exist before the first connection uses them.
        assert os.path.exists(tmp_path / 'db.sqlite')
        assert connection.default_channel.queue_declare('q').queue == 'q'


# --- names and shims ---------------------------------------------------------

def test_queue_names_are_the_persisted_ones():
    settings = types.SimpleNamespace(scheduler_id='app')
    assert naming.queue_name(settings, 'jobs') == 'app.jobs'
    assert naming.admin_queue_name(settings, 'jobs') == 'app.jobs.admin'
    assert naming.store_queue_name(settings, 'jobs') == 'app.jobs.store'
    assert naming.dead_letter_queue_name(settings, 'jobs') == 'app.jobs.dead'
    assert naming.reply_queue_name(settings, 'r1') == 'app.reply.r1'
    queue = naming.job_queue(settings, 'jobs')
    assert (queue.name, queue.routing_key, queue.exchange.name) == (
        'app.jobs', 'app.jobs', '')
    assert queue.durable and not queue.auto_delete
    reply = naming.reply_queue('app.reply.r1')
    assert reply.auto_delete and not reply.durable


def test_the_old_import_paths_name_the_same_objects():
    from pyramid_scheduler import broker, sqlite_transport
    from pyramid_scheduler.transports import sqlite
    assert sqlite_transport.SQLiteTransport is sqlite.SQLiteTransport
    assert sqlite_transport.Transport is sqlite.SQLiteTransport
    assert sqlite_transport.housekeeping is leases.housekeeping
    assert sqlite_transport.MESSAGE_TABLE == 'pscheduler_message'
    assert sqlite_transport.QUEUE_TABLE == 'pscheduler_queue'
    assert broker.connect is transports.connect
    assert broker.job_queue is naming.job_queue
    assert broker.EmbeddedTransport is sqlite.SQLiteTransport
    assert broker.SQLITE_BUSY_TIMEOUT == transports.SQLITE_BUSY_TIMEOUT == 30
    assert broker.redact_url('redis://u:pw@h/0') == 'redis://u:***@h/0'
    from pyramid_scheduler import redis_publish, redis_transport
    from pyramid_scheduler.transports.redis import channel, publish, restore
    assert redis_transport.Transport is channel.Transport
    assert redis_transport.restore_fetched is restore.restore_fetched
    assert redis_publish.RedisPublisher is publish.RedisPublisher


def test_kombu_finds_the_transport_by_its_documented_name(tmp_path):
    url = 'sqlite:///' + str(tmp_path / 'db.sqlite')
    for name in ('pyramid_scheduler.sqlite_transport:Transport',
                 'pyramid_scheduler.transports.sqlite:Transport'):
        with kombu.Connection(url, transport=name) as connection:
            assert connection.transport.driver_type == 'sqlite'


# --- WakeFlags: the handshake with a sleeping drain_events ----------------

class Bell:
    def __init__(self):
        self.rings = 0

    def __call__(self):
        self.rings += 1


def test_a_busy_consumer_is_woken_by_flags_without_a_ring():
    bell = Bell()
    flags = wakeups.WakeFlags(bell)
    assert flags.take_dirty()          # a new consumer looks first
    assert not flags.take_dirty()
    flags.capacity_freed()
    flags.interrupt()
    assert bell.rings == 0             # nobody asleep: no system call
    assert flags.take_dirty() and flags.take_interrupt()
    assert not flags.take_interrupt()  # once per interrupt()


def test_a_dirty_consumer_does_not_go_to_sleep():
    flags = wakeups.WakeFlags(Bell())
    flags.capacity_freed()
    flags.sleep(lambda timeout: pytest.fail('slept although dirty'), 10)
    assert flags.dirty and not flags.waiting


def test_a_waker_that_finds_the_consumer_asleep_rings_once():
    bell = Bell()
    flags = wakeups.WakeFlags(bell)
    flags.take_dirty()

    def wait(timeout):
        assert flags.waiting
        flags.interrupt()   # as another thread would, mid-sleep
        return False        # (the ring would have woken a real wait)

    flags.sleep(wait, 10)
    assert bell.rings == 1
    assert flags.dirty and not flags.waiting and flags.take_interrupt()


def test_a_wake_up_is_never_lost_whenever_it_comes():
    # However the waker's and the sleeper's steps interleave, the sleeper
    # returns at once: it sees dirty, or the waker sees it waiting.
    box = wakeups.WakeBox(os.devnull)   # the pipe only: no socket here
    try:
        for attempt in range(200):
            flags = wakeups.WakeFlags(box.interrupt)
            flags.take_dirty()
            sleeper = threading.Thread(target=flags.sleep,
                                       args=(box.wait, 30))
            sleeper.start()
            if attempt % 2:
                time.sleep(0.0005)
            started = time.monotonic()
            flags.capacity_freed()
            sleeper.join(10)
            assert not sleeper.is_alive(), f'lost on attempt {attempt}'
            assert time.monotonic() - started < 5
            assert flags.dirty
            box.wait(0)   # drain a ring the sleeper did not need
    finally:
        box.close()


# --- WakeBox: the sockets between processes ----------------------------------

def test_a_notify_wakes_the_listeners_of_its_queue_only(tmp_path):
    directory = str(tmp_path / 'wake')
    consumer, producer = wakeups.WakeBox(directory), wakeups.WakeBox(directory)
    try:
        consumer.listen('a')
        producer.notify('b')
        assert not consumer.wait(0.05)
        producer.notify('a')
        assert consumer.wait(5)
        assert not consumer.wait(0)   # drained
        consumer.unlisten('a')
        assert not [n for n in os.listdir(directory) if n.endswith('.sock')]
    finally:
        consumer.close()
        producer.close()


def test_sockets_nobody_listens_on_are_removed(tmp_path):
    directory = str(tmp_path / 'wake')
    live = wakeups.WakeBox(directory)
    dead = wakeups.WakeBox(directory)
    try:
        live.listen('a')
        dead.listen('a')
        for sock, _, _ in dead._sockets.values():
            sock.close()       # gone without unlinking, as after SIGKILL
        dead._sockets.clear()
        assert wakeups.remove_stale_sockets(directory) == 1
        assert len(os.listdir(directory)) == 1
        assert live.wait(5)    # the live one got a spurious wake-up
    finally:
        live.close()
        dead.close()


# --- leases and setup, per process -------------------------------------------

def in_a_forked_child(function):
    """``function()``'s repr, as computed in a forked child."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 0
        try:
            os.write(write, repr(function()).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as reader:
        text = reader.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return text


def test_the_lease_identity_is_remade_after_a_fork():
    identity = leases.LeaseIdentity()
    node, pid, started = identity()
    assert (node, pid) == (leases.current_node(), os.getpid())
    assert identity() == (node, pid, started)
    assert leases.owner_alive(node, pid, started) is True
    assert leases.owner_alive(node, pid, started + 5) is False  # reused pid
    assert leases.owner_alive('elsewhere/ns', pid, started) is None
    child = in_a_forked_child(identity)
    assert child != repr((node, pid, started))
    assert str(os.getpid()) not in child.split(',')[1]


def test_the_database_is_set_up_once_per_process(tmp_path):
    calls = []
    once = database.OncePerProcess()
    once.do('a', lambda: calls.append('a'))
    once.do('a', lambda: calls.append('again'))
    once.do('b', lambda: calls.append('b'))
    assert calls == ['a', 'b']

    def in_child():
        done = []
        once.do('a', lambda: done.append('a'))
        return done
    assert in_a_forked_child(in_child) == repr(['a'])   # not the parent's
    # And ensure_database creates the tables, where nothing existed.
    path = str(tmp_path / 'new' / 'db.sqlite')
    database.ensure_database(path)
    db = database.Database(path)
    try:
        tables = {name for (name,) in db.run(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        db.close()
    assert {database.MESSAGE_TABLE, database.QUEUE_TABLE} <= tables


def test_transports_and_naming_import_nothing_above_them():
    # The direction the redesign keeps (review section 5.1): the runtime,
    # the facade, admin and the producer use transports, never the reverse.
    package = os.path.join(ROOT, 'pyramid_scheduler')
    above = {'runtime', 'scheduler', 'admin', 'producer', 'broker',
             'consumer', 'acks', 'settings'}
    files = [os.path.join(package, 'naming.py')] + [
        os.path.join(folder, name)
        for folder, _, names in os.walk(os.path.join(package, 'transports'))
        for name in names if name.endswith('.py')]
    found = [f'{os.path.relpath(path, ROOT)}: {name}'
             for path in files for name in _our_imports(path)
             if set(name.split('.')) & above]
    assert found == []


def _our_imports(path):
    """The dotted names ``path`` imports from pyramid_scheduler."""
    import ast
    with open(path) as source:
        tree = ast.parse(source.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names
                        if alias.name.startswith('pyramid_scheduler.'))
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ''
            if node.level or module.startswith('pyramid_scheduler'):
                yield module
                yield from (f'{module}.{alias.name}' for alias in node.names)


@pytest.mark.parametrize('take', ['batch', 'one_without_returning'])
def test_leasing_takes_the_oldest_visible_rows_once(tmp_path, take):
    # The second form serves SQLite before 3.35 (no RETURNING); both must
    # lease in FIFO order and never hand out a leased row again.
    path = str(tmp_path / 'db.sqlite')
    database.ensure_database(path)
    db = database.Database(path)
    try:
        for number in range(3):
            db.run(f'INSERT INTO {database.MESSAGE_TABLE} '
                   '(queue, payload, created) VALUES (?, ?, ?)',
                   ('q', f'"{number}"', time.time()))
        owner = ('token', *leases.LeaseIdentity()(), time.time())

        def lease(limit):
            if take == 'batch':
                return leases.lease_batch(db, 'q', limit, lambda: owner)
            return leases.lease_one_without_returning(db, 'q',
                                                      lambda: owner)

        assert leases.has_ready(db, 'q')
        first = lease(2)
        assert [payload for _, payload, _ in first] == (
            ['"0"', '"1"'] if take == 'batch' else ['"0"'])
        assert all(deliveries == 1 for _, _, deliveries in first)
        rest = lease(5)
        assert rest and not {row for row, _, _ in rest} & {
            row for row, _, _ in first}
        while lease(5):
            pass
        assert not leases.has_ready(db, 'q')
        assert lease(5) == []
    finally:
        db.close()
