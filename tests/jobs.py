"""Job functions the tests schedule; they record each run in a file.

A file (not memory) because jobs run in other processes (pscheduler
children) as often as in the test process itself.
"""
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
