"""Which due runs are written down: those that wait for a worker."""
import time

import pytest

from pyramid_scheduler.runtime import dueruns
from pyramid_scheduler.runtime.dueruns import DeferredWorkers
from tests.conftest import poll


def test_a_run_starts_at_once_while_the_pool_has_a_worker_for_each():
    workers = DeferredWorkers(2)
    assert workers.run_added() and workers.run_added()
    assert not workers.run_added()      # waits for one of the first two
    workers.run_done()                  # the third one has a worker now
    assert not workers.run_added()      # the fourth waits
    workers.run_done()
    workers.run_done()
    assert workers.run_added()          # the fifth, with the fourth


@pytest.mark.slow
def test_only_the_due_runs_waiting_for_a_worker_are_written_down(
        make_harness, monkeypatch):
    written = []
    add = dueruns.DueRuns.add

    def spy(self, run):
        written.append(run['job_id'])
        return add(self, run)
    monkeypatch.setattr(dueruns.DueRuns, 'add', spy)
    harness = make_harness(**{'scheduler.executor.size': '2'})
    runtime = harness.start()

    # Alone: a worker takes it at once, nothing is written down.
    harness.schedule('date', 0, 'alone', date=time.time() + 0.3,
                     func='sleep_then_record')
    harness.wait_records(1)
    assert written == []

    # Five due together on two workers: three wait, written down.
    due = time.time() + 0.5
    ids = [harness.schedule('date', 0.3, n, date=due,
                            func='sleep_then_record') for n in range(5)]
    harness.wait_records(6)
    assert len(written) == 3 and set(written) < set(ids)
    due_runs = runtime.deferred.due_runs('jobs')
    poll(lambda: due_runs.left() == [], message='due runs left in the table')
