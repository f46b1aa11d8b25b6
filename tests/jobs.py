"""Job functions the tests schedule; they record each run in a file.

A file (not memory) because jobs run in other processes (pscheduler
children) as often as in the test process itself.
"""
import builtins
import json
import os
import time


def record(path, *values, **extra):
    line = json.dumps({'values': list(values), 'extra': extra,
                       'pid': os.getpid(), 'at': time.time()})
    with open(path, 'a', encoding='utf-8') as handle:
        handle.write(line + '\n')


def sleep_then_record(path, seconds, *values):
    time.sleep(seconds)
    record(path, *values)


def fail(message):
    raise RuntimeError(message)


def noop():
    pass


def read_records(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding='utf-8') as handle:
        return [json.loads(line) for line in handle if line.strip()]


# --- added for the combined-mode / wire tests (tests/test_combined.py etc.) --

def record_types(path, *values, **kwargs):
    """Record each argument's type and repr (for values JSON cannot hold)."""
    record(path, *[[type(v).__name__, repr(v)] for v in values],
           **{k: [type(v).__name__, repr(v)] for k, v in kwargs.items()})


def echo(path, value):
    """Record ``value`` and return it (JOB_EXECUTED's ``retval``)."""
    record(path, value)
    return value


def record_registry(path, *values):
    """Record the threadlocal registry's settings key ``test.name``."""
    from pyramid.threadlocal import get_current_registry
    record(path, get_current_registry().settings.get('test.name'), *values)


def delegator(func, args, kwargs):
    """A ``scheduler.delegator``: records that it wrapped the job, runs it."""
    record(args[0], 'delegated', func.__name__)
    return func(*args, **kwargs)


def housekeeping_append():
    """A ``scheduler.housekeeping.append`` that records it was called."""
    from pyramid.threadlocal import get_current_registry
    record(get_current_registry().settings['test.housekeeping_path'],
           'housekeeping')


def record_then_sleep(path, seconds, *values):
    record(path, *values)
    time.sleep(seconds)


# --- used by the pscheduler daemon tests (tests/test_daemon.py) --------------

def record_setting(path, key):
    """Record the value of ``key`` in the settings of the app running us."""
    from pyramid.threadlocal import get_current_registry
    record(path, key, get_current_registry().settings.get(key))


def record_around_sleep(path, seconds, label):
    """Record ``start``, sleep, record ``end``: shows a job cut or finished."""
    record(path, label, 'start')
    time.sleep(seconds)
    record(path, label, 'end')


_hoard = []


def hoard_memory(path, megabytes):
    """Keep ``megabytes`` of memory (touched, so resident) until exit."""
    _hoard.append(b'\x01' * int(megabytes * 1_000_000))
    record(path, 'hoarded', megabytes)


# --- used by the fault tests (tests/test_durability.py) ----------------------

def append_id(path, job_id, seconds=0):
    """Append ``job_id pid time`` to ``path`` (one O_APPEND write), then
    sleep ``seconds``: a run that is cut short still shows it ran."""
    line = f'{job_id} {os.getpid()} {time.time():.6f}\n'.encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    if seconds:
        time.sleep(seconds)


def read_ids(path):
    """``[(job_id, pid, at)]`` written by :func:`append_id`, in order."""
    if not os.path.exists(path):
        return []
    runs = []
    with open(path, encoding='utf-8') as handle:
        for line in handle:
            parts = line.split()
            if len(parts) == 3:  # a line being written is skipped
                runs.append((parts[0], int(parts[1]), float(parts[2])))
    return runs


# --- used by the job status tests (tests/test_status.py) ---------------------

def record_when_released(path, gate, value, timeout=60):
    """Record ``value`` once the file ``gate`` exists, and return it: a job
    that stays running until the test lets it end."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f'{gate} never appeared')
        time.sleep(0.02)
    record(path, value)
    return value


# --- used by the time limit tests (tests/test_time_limits.py) ----------------

def busy(path, job_id, seconds):
    """Append ``job_id`` (as :func:`append_id`), then run Python bytecode
    for ``seconds``: a job the soft time limit can interrupt."""
    append_id(path, job_id)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return job_id


# --- used by the retry tests (tests/test_retries.py) -------------------------

class Flaky(Exception):
    """What :func:`fail_times` raises: a class retry_on can name."""


def count_run(counter):
    """Append this run's time to the file ``counter`` (one O_APPEND write);
    the number of runs so far, this one included."""
    fd = os.open(counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f'{time.time():.6f} {os.getpid()}\n'.encode())
    finally:
        os.close(fd)
    return len(run_times(counter))


def run_times(counter):
    """The times of the runs :func:`count_run` counted, in order."""
    return [float(line.split()[0]) for line in _lines(counter)]


def run_pids(counter):
    return [int(line.split()[1]) for line in _lines(counter)]


def _lines(counter):
    if not os.path.exists(counter):
        return []
    with open(counter, encoding='utf-8') as handle:
        return [line for line in handle if line.endswith('\n')]


def fail_times(counter, times, value, error='Flaky', pause=0):
    """Fail the first ``times`` runs (raising ``error``: ``'Flaky'`` or a
    builtin exception's name, after ``pause`` seconds), then return
    ``value``."""
    runs = count_run(counter)
    if runs <= times:
        time.sleep(pause)
        cls = Flaky if error == 'Flaky' else getattr(builtins, error)
        raise cls(f'run {runs} of {times} failing')
    return value


def retry_once(counter, countdown, value):
    """Raise Retry(countdown) at the first run; return ``value`` after."""
    from pyramid_scheduler.api import Retry
    if count_run(counter) == 1:
        raise Retry(countdown=countdown, reason='not yet')
    return value


# --- used by the failed-job registry tests (tests/test_failed_jobs.py) -------

def fail_unless_exists(flag, value):
    """Fail while the file ``flag`` is absent, else return ``value``: a
    job that a requeue runs again once the test has "fixed" it."""
    if not os.path.exists(flag):
        raise RuntimeError(f'{os.path.basename(flag)} is absent')
    return value


# --- used by the tests of several hosts (tests/test_netns_hosts.py) ----------

def append_run(path, job_id, seconds=0):
    """Append ``job_id host time`` to ``path`` (one O_APPEND write), then
    sleep ``seconds``: which host ran it, each host its own host name."""
    import socket
    line = f'{job_id} {socket.gethostname()} {time.time():.6f}\n'.encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    if seconds:
        time.sleep(seconds)


def read_runs(path):
    """``[(job_id, host, at)]`` written by :func:`append_run`, in order."""
    if not os.path.exists(path):
        return []
    with open(path, encoding='utf-8') as handle:
        return [(parts[0], parts[1], float(parts[2]))
                for parts in map(str.split, handle) if len(parts) == 3]
