"""A lone async job runs in the thread that received it (runtime/inline.py).

Real threads: a WorkerPool, and a loop whose turns are a function that the
test drives, as QueueConsumer.turn would be.
"""
import threading
import time

import pytest

from pyramid_scheduler.runtime.inline import InlineJobs
from pyramid_scheduler.runtime.workers import WorkerPool
from tests.conftest import poll


class Loop:
    """A consumer loop: its consumer thread turns it and runs kept jobs
    after each turn (as QueueConsumer.run); a turn hands on the calls the
    test queued for it, as a drain hands on messages."""

    def __init__(self, inline):
        self.inline = inline
        self.lock = threading.Lock()
        self.incoming = []        # calls the next turn submits
        self.turners = []         # the thread of each turn
        self.ended = False
        self.thread = threading.Thread(target=self.run, daemon=True)

    def turn(self):
        with self.lock:
            if self.ended:
                return False
            self.inline.turning()
            self.turners.append(threading.get_ident())
            calls, self.incoming = self.incoming, []
            for call in calls:
                self.inline.submit(call)
        time.sleep(0.002)   # a drain's wait
        return True

    def run(self):
        while self.turn():
            self.inline.after_turn(self.turn)

    def send(self, call):
        with self.lock:
            self.incoming.append(call)


@pytest.fixture
def loop():
    pool = WorkerPool(2, 'test-inline')
    pool.start()
    loop = Loop(InlineJobs(pool))
    loop.thread.start()
    yield loop
    with loop.lock:
        loop.ended = True
    loop.thread.join(5)
    pool.shutdown()


def test_a_lone_job_runs_in_the_consumer_thread(loop):
    ran_in = []
    loop.send(lambda: ran_in.append(threading.get_ident()))
    poll(lambda: ran_in, 5)
    assert ran_in == [loop.thread.ident]


def test_a_worker_turns_the_loop_while_the_consumer_thread_runs_a_job(loop):
    release = threading.Event()
    ran_in = []

    def long_job():
        ran_in.append(threading.get_ident())
        release.wait(10)
    loop.send(long_job)
    poll(lambda: ran_in, 5)
    turns_before = len(loop.turners)
    # Turns go on meanwhile, in another thread, and hand new jobs to the
    # pool's other worker at once.
    quick = []
    loop.send(lambda: quick.append(threading.get_ident()))
    poll(lambda: quick, 5)
    assert len(loop.turners) > turns_before
    stand_ins = set(loop.turners[turns_before:])
    assert loop.thread.ident not in stand_ins
    assert quick[0] not in (loop.thread.ident, *stand_ins)
    release.set()
    # The consumer thread takes the loop back once its job has ended.
    poll(lambda: loop.turners[-1] == loop.thread.ident, 5)


def test_no_more_jobs_run_at_once_than_the_pool_has_threads(loop):
    running, most = [0], [0]
    lock = threading.Lock()
    done = []

    def job():
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        done.append(1)
    for _ in range(40):
        loop.send(job)
        time.sleep(0.001)
    poll(lambda: len(done) == 40, 10)
    assert most[0] <= 2


def test_a_job_kept_in_the_stand_ins_last_turn_runs(loop):
    # A stream of lone jobs, each sent as the one before ends: each is
    # kept by whichever thread turns, and none is left behind.
    ran = []
    for number in range(30):
        loop.send(lambda number=number: ran.append(number))
        poll(lambda: len(ran) == number + 1, 5)
    assert ran == list(range(30))


def test_the_stand_in_stops_when_the_loop_ends(loop):
    release = threading.Event()
    loop.send(lambda: release.wait(10))
    poll(lambda: len(set(loop.turners)) > 1, 5)   # a stand-in turns
    with loop.lock:
        loop.ended = True
    release.set()
    loop.thread.join(5)
    assert not loop.thread.is_alive()
    assert loop.inline.pool.idle()


def test_nothing_is_kept_outside_a_turn_or_while_the_pool_is_busy():
    pool = WorkerPool(1, 'test-inline')
    pool.start()
    inline = InlineJobs(pool)
    try:
        ran_in = []
        # Not in a turn (another thread's dispatch, a test's): the pool.
        inline.submit(lambda: ran_in.append(threading.get_ident()))
        poll(lambda: ran_in, 5)
        assert ran_in[0] != threading.get_ident()
        # In a turn, but the pool has a job queued or running: the pool.
        release = threading.Event()
        inline.submit(release.wait, 10)
        inline.turning()
        inline.submit(lambda: ran_in.append(threading.get_ident()))
        release.set()
        # Kept, it would wait for an after_turn that never comes.
        poll(lambda: len(ran_in) == 2, 5)
        assert ran_in[1] != threading.get_ident()
    finally:
        pool.shutdown()


# --- a real daemon ----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize('broker', ('sqlite', 'redis', 'rabbitmq'))
def test_a_lone_job_longer_than_the_heartbeat_timeout_keeps_the_queue_served(
        tmp_path, daemons, broker_for, broker):
    """The consumer thread runs the lone job; a worker stands in for it:
    the child beats (it is not killed as hung), and a job sent meanwhile
    runs at once; each runs once."""
    from tests import jobs
    from tests.daemon_helpers import producer, wait_for, write_ini
    settings = broker_for(broker, **{
        'scheduler.child.heartbeat_timeout': '1.5s',
        'scheduler.executor.size': '2'})
    ini = write_ini(tmp_path / 'app.ini', settings=settings)
    daemon = daemons(ini)
    child = daemon.wait_ready(['jobs'])['jobs']
    records = tmp_path / 'records.jsonl'
    with producer(ini) as scheduler:
        scheduler.add_async_job(jobs.sleep_then_record,
                                args=(str(records), 4, 'long'))
        time.sleep(0.5)   # the long one has started: the pool was idle
        sent = time.time()
        scheduler.add_async_job(jobs.record, args=(str(records), 'quick'))
        wait_for(lambda: len(jobs.read_records(records)) == 2, timeout=30,
                 what='both jobs')
    quick, long = jobs.read_records(records)
    assert (quick['values'], long['values']) == (['quick'], ['long'])
    assert quick['at'] - sent < 2          # not behind the long job
    assert daemon.child_pids() == {'jobs': child}
    assert 'sent no heartbeat' not in daemon.log()
    time.sleep(0.5)
    assert len(jobs.read_records(records)) == 2


def test_jobs_received_in_one_turn_go_to_the_pool_in_order():
    # One worker: a job kept for the consumer thread while the next one of
    # the same turn waits in the pool would make two run at once, and
    # maybe in the wrong order.
    pool = WorkerPool(1, 'test-inline')
    pool.start()
    inline = InlineJobs(pool)
    try:
        ran, running, most = [], [0], [0]

        def job(number):
            running[0] += 1
            most[0] = max(most[0], running[0])
            time.sleep(0.02)
            ran.append(number)
            running[0] -= 1
        inline.turning()
        for number in range(3):
            inline.submit(job, number)
        inline.after_turn(lambda: False)   # nothing kept: returns at once
        poll(lambda: len(ran) == 3, 5)
        assert ran == [0, 1, 2]
        assert most[0] == 1
    finally:
        pool.shutdown()
