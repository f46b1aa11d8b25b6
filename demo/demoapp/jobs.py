"""The demo's jobs. Each appends one line to the runs file (JSON lines).

They run in the pscheduler child (or in the web process in combined mode),
so they share nothing with the web process but the file.
"""
import json
import os
import time


def record_run(runs_file, kind, label):
    """Append ``{at, kind, label, pid}`` to ``runs_file``."""
    line = json.dumps({'at': time.time(), 'kind': kind, 'label': label,
                       'pid': os.getpid()})
    with open(runs_file, 'a', encoding='utf-8') as handle:
        handle.write(line + '\n')


def slow_job(runs_file, label, seconds=2):
    """An asynchronous job that takes a while (the request does not wait)."""
    time.sleep(seconds)
    record_run(runs_file, 'async', label)


def failing_job(label):
    """A job that raises: pscheduler logs the traceback and carries on."""
    raise RuntimeError(f'the demo job {label!r} failed on purpose')


def read_runs(runs_file, limit=20):
    """The last ``limit`` runs, newest first."""
    try:
        with open(runs_file, encoding='utf-8') as handle:
            lines = handle.readlines()
    except FileNotFoundError:
        return []
    runs = []
    for line in lines[-limit:]:
        try:
            runs.append(json.loads(line))
        except ValueError:
            continue
    return runs[::-1]
