"""Units of the thread watch (runtime/state.py) and of the backoff of a
failed scheduler pass (runtime/apscheduling.py); the real daemon's side is
in tests/test_scheduler_liveness.py."""
from pyramid_scheduler.runtime.apscheduling import (
    FIRST_RETRY, HandOvers, SafeStopScheduler)
from pyramid_scheduler.runtime.state import ThreadWatch


def test_the_watch_reports_every_thread_and_the_first_problem():
    watch = ThreadWatch()
    watch.watch('consumer', lambda: None)
    watch.watch('scheduler', lambda: 'its thread has died')
    watch.watch('broken', lambda: 1 / 0)
    report = watch.report()
    assert report['consumer'] == 'alive'
    assert report['scheduler'] == 'its thread has died'
    assert report['broken'].startswith('cannot tell (ZeroDivisionError')
    assert watch.problem() == 'the scheduler thread: its thread has died'


def test_failed_passes_back_off_up_to_the_retry_interval():
    scheduler = SafeStopScheduler(HandOvers(), jobstore_retry_interval=5)
    waits = [scheduler._retry_after_failure() for _ in range(6)]
    assert waits == [FIRST_RETRY * 2 ** n for n in range(4)] + [5, 5]


def test_a_scheduler_not_started_is_not_a_problem():
    scheduler = SafeStopScheduler(HandOvers())
    assert scheduler.liveness(60) is None
