"""The crash journal (runtime/crashes.py): a job counts as a crash only when
its process died while it ran."""
import os

from pyramid_scheduler.runtime.crashes import CrashJournal


def run_in_child(directory, job_id, finish):
    """A forked process journals ``job_id``, then exits (graceful: closes
    its journal) or dies while the job runs (``os._exit``)."""
    pid = os.fork()
    if pid == 0:
        journal = CrashJournal(directory)
        with journal.running(job_id):
            if not finish:
                os._exit(70)
        journal.close()
        os._exit(0)
    os.waitpid(pid, 0)


def test_a_job_its_process_died_with_is_counted_by_the_next(tmp_path):
    directory = str(tmp_path / 'journal')
    run_in_child(directory, 'bad', finish=False)
    run_in_child(directory, 'good', finish=True)
    run_in_child(directory, 'bad', finish=False)
    journal = CrashJournal(directory)
    assert journal.open()
    assert journal.crashes('bad', redelivered=True) == 2
    assert journal.crashes('good', redelivered=True) == 0
    # A first delivery: never a crash, and nothing read to know it.
    assert journal.crashes('bad') == 0
    # Recovered once: another process does not count them again.
    assert CrashJournal(directory).crashes('bad', redelivered=True) == 2


def test_a_live_process_journal_is_not_taken_for_a_crash(tmp_path):
    directory = str(tmp_path / 'journal')
    live = CrashJournal(directory)
    with live.running('busy'):
        other = CrashJournal(directory)
        assert other.crashes('busy', redelivered=True) == 0
        other.close()
    live.close()
    assert os.listdir(directory) == []   # both journals gone, no crash


def test_a_graceful_stop_does_not_blame_the_jobs_still_running(tmp_path):
    directory = str(tmp_path / 'journal')
    journal = CrashJournal(directory)
    with journal.running('long'):
        journal.close()
    assert CrashJournal(directory).crashes('long', redelivered=True) == 0


def test_a_slot_holds_the_last_id_whatever_came_before(tmp_path):
    # A slot is written up to the id's end, not padded: a short id after a
    # long one in the same thread must read as itself; an id with a newline
    # or past a slot is journaled as the crashes file counts it.
    directory = str(tmp_path / 'journal')
    long_id = 'L' * 200
    pid = os.fork()
    if pid == 0:
        journal = CrashJournal(directory)
        for job_id in ('x' * 120, 'short', 'two\nlines'):
            with journal.running(job_id):
                pass
        with journal.running(long_id):
            with journal.running('short'):   # the same slot, rewritten
                os._exit(70)
    os.waitpid(pid, 0)
    journal = CrashJournal(directory)
    assert journal.crashes('short', redelivered=True) == 1
    for job_id in ('x' * 120, 'two\nlines', long_id, 'shor'):
        assert journal.crashes(job_id, redelivered=True) == 0
    run_in_child(directory, 'two\nlines', finish=False)
    run_in_child(directory, long_id, finish=False)
    assert journal.crashes('two\nlines', redelivered=True) == 1
    assert journal.crashes(long_id, redelivered=True) == 1
