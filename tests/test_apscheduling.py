"""The APScheduler adaptations: when a due run may start, when a pass runs."""
import datetime
import threading
import time

import pytest
from apscheduler.jobstores.memory import MemoryJobStore

from pyramid_scheduler.runtime.apscheduling import (
    FENCED_RETRY, HandingOverJobStore, HandOvers, NotOwner, RuntimeExecutor,
    SafeStopScheduler)

UTC = datetime.timezone.utc


def job_func():
    pass


class CountingScheduler(SafeStopScheduler):
    def __init__(self, *args, **kwargs):
        self.passes = 0
        super().__init__(*args, **kwargs)

    def _process_jobs(self):
        self.passes += 1
        return super()._process_jobs()


class StubDeferredJobs:
    """What RuntimeExecutor needs of DeferredJobs; runs in a thread each."""

    def __init__(self, on_run):
        self.on_run = on_run
        self.submitted = threading.Event()

    def keep_due_run(self, aps_job, run_times, last_run):
        return None

    def submit_run(self, fn, *args):
        self.submitted.set()
        threading.Thread(target=fn, args=args, daemon=True).start()

    def run_stored_job(self, aps_job, run_times, last_run, due, out_of_store):
        out_of_store.wait(10)
        self.on_run(aps_job)


def in_seconds(seconds):
    return datetime.datetime.now(UTC) + datetime.timedelta(seconds=seconds)


@pytest.mark.slow
def test_a_job_due_after_the_next_pass_does_not_wake_the_scheduler():
    scheduler = CountingScheduler(HandOvers(),
                                  jobstores={'default': MemoryJobStore()},
                                  timezone=UTC)
    scheduler.add_job(job_func, 'date', run_date=in_seconds(60))
    scheduler.start()
    try:
        time.sleep(0.3)   # the passes of start(): the next one is at +60s
        planned = scheduler.passes
        assert planned >= 1
        for n in range(20):
            scheduler.add_job(job_func, 'date', run_date=in_seconds(61 + n))
        time.sleep(0.2)
        assert scheduler.passes == planned
        # Due before the planned pass: it must wake the scheduler, and run.
        ran = threading.Event()
        scheduler.add_job(ran.set, 'date', run_date=in_seconds(0.1))
        assert ran.wait(5)
        assert scheduler.passes > planned
    finally:
        scheduler.shutdown()


@pytest.mark.slow
def test_a_due_run_starts_once_out_of_the_store_not_at_the_pass_end(
        tmp_path):
    """The worker starts the run when its job has left the store (never
    before), while the pass still holds the job stores lock."""
    hand_overs = HandOvers()
    worker_ran = threading.Event()
    seen = {}

    def on_run(job):
        seen['still stored'] = store.lookup_job(job.id) is not None
        worker_ran.set()

    deferred = StubDeferredJobs(on_run)

    class SlowEndStore(HandingOverJobStore):
        def get_next_run_time(self):
            # The end of the pass that hands the run over waits for the
            # worker: had the worker waited for the end of the pass,
            # neither would go on.
            if deferred.submitted.is_set():
                worker_ran.wait(10)
            return super().get_next_run_time()

    store = SlowEndStore(hand_overs, url=f'sqlite:///{tmp_path}/jobs.sqlite')

    scheduler = SafeStopScheduler(
        hand_overs, jobstores={'default': store},
        executors={'default': RuntimeExecutor(deferred, hand_overs)},
        timezone=UTC)
    scheduler.add_job('tests.test_apscheduling:job_func', 'date',
                      run_date=in_seconds(0.3), id='soon')
    scheduler.start()
    try:
        assert worker_ran.wait(5)
        assert seen == {'still stored': False}
    finally:
        scheduler.shutdown()


def test_hand_overs_end_with_the_pass():
    """Runs whose store says nothing (another store, a failed write) are
    released when the pass ends."""
    hand_overs = HandOvers()
    told, untold = hand_overs.expect('told'), hand_overs.expect('untold')
    hand_overs.out_of_store('told')
    hand_overs.out_of_store('not expected')
    assert told.is_set() and not untold.is_set()
    hand_overs.pass_done()
    assert untold.is_set()


def test_the_prepared_job_store_behaves_as_apschedulers(tmp_path):
    from apscheduler.job import Job
    from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
    from apscheduler.triggers.date import DateTrigger
    import pytest
    from pyramid_scheduler.runtime.apscheduling import PreparedJobStore

    scheduler = SafeStopScheduler(HandOvers(), timezone=UTC)
    store = PreparedJobStore(url=f'sqlite:///{tmp_path}/jobs.sqlite')
    store.start(scheduler, 'default')

    def job(job_id, seconds):
        run_date = in_seconds(seconds)
        return Job(scheduler, id=job_id, func=job_func,
                   trigger=DateTrigger(run_date), executor='default',
                   args=(), kwargs={}, next_run_time=run_date, name=job_id,
                   misfire_grace_time=1, coalesce=True, max_instances=1)

    assert store.get_next_run_time() is None
    for job_id, seconds in [('later', 60), ('due', -1), ('due first', -2)]:
        store.add_job(job(job_id, seconds))
    with pytest.raises(ConflictingIdError):
        store.add_job(job('due', 5))
    assert [j.id for j in store.get_due_jobs(in_seconds(0))] == [
        'due first', 'due']
    assert store.get_next_run_time() == store.lookup_job(
        'due first').next_run_time
    store.remove_job('due first')
    store.remove_job('due')
    with pytest.raises(JobLookupError):
        store.remove_job('due')
    assert store.get_due_jobs(in_seconds(0)) == []
    assert store.get_next_run_time() == store.lookup_job('later').next_run_time

    # A job that no longer loads is dropped, as APScheduler does.
    with store.engine.begin() as connection:
        connection.execute(store.jobs_t.update().values(
            job_state=b'not a pickle', next_run_time=0))
    assert store.get_due_jobs(in_seconds(0)) == []
    assert store.get_all_jobs() == []


@pytest.mark.slow
def test_a_store_not_ours_fires_nothing_until_it_is_ours_again(tmp_path):
    """While the job store's ownership has lapsed (storelock: a keep-alive
    late, or lost) its due run is not read, nor fired; the scheduler looks
    again every FENCED_RETRY seconds, not in a loop; the run fires once
    the store is ours again, once."""
    ours = threading.Event()
    hand_overs = HandOvers(lambda queue: ours.is_set())
    ran = []
    deferred = StubDeferredJobs(lambda job: ran.append(job.id))
    store = HandingOverJobStore(hand_overs,
                                url=f'sqlite:///{tmp_path}/jobs.sqlite')
    scheduler = CountingScheduler(
        hand_overs, jobstores={'default': store},
        executors={'default': RuntimeExecutor(deferred, hand_overs)},
        timezone=UTC)
    scheduler.add_job('tests.test_apscheduling:job_func', 'date',
                      run_date=in_seconds(0.1), id='due')
    scheduler.start()
    try:
        time.sleep(1.2)
        assert ran == [] and store.lookup_job('due') is not None
        assert 2 <= scheduler.passes <= 1.2 / FENCED_RETRY + 3
        ours.set()
        deadline = time.monotonic() + 5
        while not ran and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert ran == ['due'] and store.lookup_job('due') is None
    finally:
        scheduler.shutdown()


def test_a_write_to_a_store_not_ours_is_refused(tmp_path):
    """Ownership lapsing in the middle of a pass: the store keeps the run
    (for the new owner) rather than taking it out unfired."""
    hand_overs = HandOvers(lambda queue: False)
    store = HandingOverJobStore(hand_overs,
                                url=f'sqlite:///{tmp_path}/jobs.sqlite')
    store._alias = 'jobs'
    with pytest.raises(NotOwner, match='queue jobs'):
        store.remove_job('any')
    assert store.get_due_jobs(in_seconds(60)) == []
