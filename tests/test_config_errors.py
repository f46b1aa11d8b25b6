"""Bad ini values and bad --message arguments against the real ``pscheduler``:
each ends at once with its exit code (README's table) and names the key.

Three kinds of configuration error, each stopping at once:

- found by the master before it forks (a URL that cannot work, a SQLite file
  that cannot be written): exit 3 on stderr, no child started;
- found by a child, which must import the application to see them (a
  dotted name that does not import) or ask the server (a broker or job store
  refusing the password or database): exit 3 after one boot, not five;
- a --message argument the command does not take: exit 2.

A broker that is down at boot is not one: pscheduler keeps trying, and does
not say "ready" (nor systemd READY=1) until the broker answers.
"""
import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from pscheduler import exitcodes
from pscheduler.message import parse_message
from tests.daemon_helpers import (AMQP_URL, PG_URL, REDIS_URL, NotifySocket,
                                  child_env, run_cli, wait_for, write_ini)
from tests.forwarding import Forwarder

REPO_ROOT = Path(__file__).resolve().parent.parent
REDIS_BASE = REDIS_URL.rsplit('/', 1)[0]
AMQP_WRONG_PASSWORD = AMQP_URL.replace('guest:guest@', 'guest:wrong@')
# Every case must end within this: the point is "at once".
AT_ONCE = 30


def regular_file(tmp_path):
    path = tmp_path / 'a-file'
    path.write_text('not a directory\n')
    return path


# (id, settings (a function of tmp_path), key named, text in the output)
MASTER_CASES = [
    ('broker not a url',
     lambda tmp: {'scheduler.broker.url': 'not a url'},
     'scheduler.broker.url', 'not a URL'),
    ('broker scheme without transport',
     lambda tmp: {'scheduler.broker.url': 'foo://host/'},
     'scheduler.broker.url', "no transport for 'foo'"),
    ('redis database not a number',
     lambda tmp: {'scheduler.broker.url': f'{REDIS_BASE}/abc'},
     'scheduler.broker.url', 'must be a number'),
    ('database under a regular file',
     lambda tmp: {'scheduler.database':
                  f'{regular_file(tmp)}/pscheduler.sqlite'},
     'scheduler.database', 'is not a directory'),
    ('database is a directory',
     lambda tmp: {'scheduler.database': str(tmp)},
     'scheduler.database', 'is a directory'),
    ('sqlite job store under a regular file',
     lambda tmp: {'scheduler.jobstore.url':
                  f'sqlite:///{regular_file(tmp)}/jobs.sqlite'},
     'scheduler.jobstore.url', 'is not a directory'),
    ('job store without a dialect',
     lambda tmp: {'scheduler.jobstore.url': 'nosuchdialect://host/db'},
     'scheduler.jobstore.url', 'no dialect'),
    ('executor size zero',
     lambda tmp: {'scheduler.executor.size': '0'},
     'scheduler.executor.size', ''),
]

# (settings, key named, text in the output), by id.
CHILD_CASES = [
    pytest.param(
        {'scheduler.delegator': 'pscheduler_no_such_module:delegate'},
        'scheduler.delegator', 'pscheduler_no_such_module',
        id='delegator does not import'),
    pytest.param(
        {'scheduler.jobstore.default.class':
         'pscheduler_no_such_module:Store'},
        'scheduler.jobstore.default.class', 'pscheduler_no_such_module',
        id='job store class does not import'),
    pytest.param(
        {'scheduler.broker.url': f'{REDIS_BASE}/99'},
        'scheduler.broker.url', 'DB index is out of range',
        id='redis database out of range'),
    pytest.param(
        {'scheduler.broker.url': AMQP_WRONG_PASSWORD},
        'scheduler.broker.url', 'ACCESS_REFUSED',
        id='amqp wrong password'),
    pytest.param(
        {'scheduler.jobstore.url':
         PG_URL.rsplit('/', 1)[0] + '/pscheduler_no_such_db'},
        'scheduler.jobstore.url', 'does not exist',
        id='postgresql database does not exist'),
]


def run_daemon(ini, timeout=AT_ONCE):
    """Run pscheduler on ``ini`` to its end -> (exit code, its output)."""
    result = run_cli(ini=ini, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize('case, settings, key, text', MASTER_CASES,
                         ids=[case[0] for case in MASTER_CASES])
def test_the_master_refuses_before_forking(tmp_path, case, settings, key,
                                           text):
    ini = write_ini(tmp_path / 'app.ini', settings=settings(tmp_path))
    code, output = run_daemon(ini)
    assert code == exitcodes.CONFIG == 3, output
    assert f'"{key}"' in output and text in output, output
    assert 'pscheduler: error:' in output
    assert 'started child' not in output  # found before any fork


@pytest.mark.parametrize('settings, key, text', CHILD_CASES)
def test_a_child_configuration_error_stops_the_master_at_once(
        tmp_path, settings, key, text):
    ini = write_ini(tmp_path / 'app.ini', settings={
        'scheduler.id': f'pst-cfg-{os.getpid()}', **settings})
    code, output = run_daemon(ini)
    assert code == exitcodes.CONFIG == 3, output
    assert output.count('started child') == 1, output  # one boot, not five
    stop_line = [line for line in output.splitlines()
                 if 'stopping pscheduler (exit code 3)' in line]
    assert len(stop_line) == 1, output
    # The master's own line names the key and the cause, on one line.
    assert key in stop_line[0] and text in stop_line[0], output
    assert 'pscheduler ready' not in output


def test_a_directory_as_the_ini_is_said_to_be_one(tmp_path):
    for directory in (tmp_path / 'conf', tmp_path / 'app.ini'):
        directory.mkdir()
        code, output = run_daemon(directory)
        assert code == exitcodes.CONFIG, output
        assert f'{directory} is a directory' in output, output


def test_a_child_exit_3_gives_up_at_once_with_its_reason():
    """The master's rule, in-process: a child's exit code 3 is fatal, as 10
    and 11 are; any other failure before ready counts toward the limit."""
    import types

    from pscheduler import restarts
    from pscheduler.slots import Slot

    def failed_child(error):
        settings = types.SimpleNamespace(child_boot_failures=5)
        return types.SimpleNamespace(
            ready=False, stop_reason=None, error=error, pid=123,
            config=types.SimpleNamespace(settings=settings))

    slot = Slot('jobs')
    give_up = restarts.after_unexpected_exit(
        slot, failed_child('setting "scheduler.delegator": nope'),
        exitcodes.CONFIG, now=0.0)
    assert give_up == restarts.GiveUp(
        exitcodes.CONFIG, 'queue jobs: setting "scheduler.delegator": nope')
    assert slot.boot_failures == 0

    assert restarts.after_unexpected_exit(
        slot, failed_child('boom'), exitcodes.BOOT_FAILED, now=0.0) is None
    assert slot.boot_failures == 1


# --- a broker down at boot: keep trying, never claim ready -----------------

def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def late_redis():
    """A port where nothing listens, until ``open()`` forwards it to the
    test Redis: a broker that is down when pscheduler starts."""
    host, port = REDIS_BASE.split('//', 1)[1].rsplit(':', 1)
    return Forwarder(('127.0.0.1', free_port()), (host, int(port)))


def test_a_broker_down_at_boot_is_waited_for_and_ready_comes_after(
        tmp_path, daemons):
    broker = late_redis()
    notify = NotifySocket()
    scheduler_id = f'pst-late-{os.getpid()}'
    ini = write_ini(tmp_path / 'app.ini', settings={
        'scheduler.broker.url': f'redis://127.0.0.1:{broker.listen[1]}/11',
        'scheduler.id': scheduler_id})
    try:
        daemon = daemons(ini, env=child_env(NOTIFY_SOCKET=notify.path))
        daemon.wait_log('is not ready: cannot reach the broker')
        time.sleep(1)
        assert daemon.process.poll() is None, daemon.log()  # not an error
        assert 'pscheduler ready' not in daemon.log()
        assert 'READY' not in notify.keys()

        broker.open()
        daemon.wait_log('pscheduler ready', timeout=20)
        wait_for(lambda: 'READY' in notify.keys(), what='READY=1')
        daemon.send_signal(15)
        assert daemon.wait_exit() == exitcodes.OK
    finally:
        broker.close()
        notify.close()


# --- which broker and job store errors are refusals (no retry helps) --------

def test_refusals_are_told_from_outages():
    import amqp.exceptions
    import redis.exceptions

    from pyramid_scheduler import refusals
    assert refusals.broker_refusal(amqp.exceptions.AccessRefused(
        'ACCESS_REFUSED - Login was refused'))
    assert refusals.broker_refusal(redis.exceptions.AuthenticationError(
        'invalid username-password pair'))
    assert refusals.broker_refusal(redis.exceptions.ResponseError(
        'DB index is out of range'))
    assert refusals.broker_refusal(redis.exceptions.ResponseError(
        'WRONGTYPE Operation against a key')) is None
    assert refusals.broker_refusal(redis.exceptions.ConnectionError(
        'Error 111 connecting to 127.0.0.1:1. Connection refused.')) is None
    assert refusals.broker_refusal(ConnectionRefusedError(111, 'refused')) \
        is None
    assert refusals.store_refusal(Exception(
        'FATAL:  database "x" does not exist\n(Background on this error '
        'at: https://sqlalche.me/e/20/e3q8)')) == (
        'FATAL:  database "x" does not exist')
    assert refusals.store_refusal(Exception(
        'connection to server at "127.0.0.1", port 1 failed: Connection '
        'refused\n\tIs the server running on that host?')) is None


# --- --message arguments -----------------------------------------------------

MESSAGE_CASES = [
    ('print-jobs limit=-1', 'limit=-1'),
    ('print-jobs limit=0', 'limit=0'),
    ('jobs limit=abc', 'limit=abc'),
    ('jobs limit=5000', 'from 1 to 1000'),
    ('jobs offset=-3', 'offset=-3'),
    ('ping foo=1', "no argument 'foo'"),
    ('jobs offset=1 offst=2', "no argument 'offst'"),
    ('jobs limit=5 limit=6', 'given twice'),
    ('status verbose', 'not key=value'),
    ('', 'needs a command'),
]


@pytest.mark.parametrize('text, reason', MESSAGE_CASES,
                         ids=[case[0] or 'empty' for case in MESSAGE_CASES])
def test_message_argument_errors_are_refused(text, reason):
    with pytest.raises(ValueError, match=reason.replace('(', r'\(')):
        parse_message(text)


def test_message_arguments_in_range_and_unknown_commands_pass():
    assert parse_message('jobs offset=50 limit=10') == (
        'jobs', {'offset': 50, 'limit': 10})
    assert parse_message('print-jobs limit=3') == ('print-jobs', {'limit': 3})
    # Any other command is for the children's listeners, arguments and all.
    assert parse_message('fly to=moon n=-1') == (
        'fly', {'to': 'moon', 'n': -1})


@pytest.mark.parametrize('text, reason', [
    ('print-jobs limit=-1', 'limit=-1'),
    ('jobs limit=abc', 'limit=abc'),
    ('ping foo=1', "no argument 'foo'"),
])
def test_message_argument_errors_exit_2_before_sending(tmp_path, text,
                                                       reason):
    ini = write_ini(tmp_path / 'app.ini')
    result = run_cli('--message', text, '--timeout', '1', ini=ini)
    assert result.returncode == exitcodes.USAGE == 2, result.stderr
    assert reason in result.stderr
    assert not (tmp_path / 'pscheduler.sqlite').exists()  # nothing sent


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MB tmpfs (root only), for a disk that fills up."""
    mount_point = tmp_path / 'full'
    mount_point.mkdir()
    mounted = subprocess.run(
        ['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(mount_point)],
        capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f'cannot mount a tmpfs: {mounted.stderr!r}')
    try:
        yield mount_point
    finally:
        subprocess.run(['umount', '-l', str(mount_point)], check=False)


def fill(directory):
    with contextlib.suppress(OSError), open(directory / 'filler', 'wb') as f:
        while True:
            f.write(b'\0' * 65536)
            f.flush()


def test_message_on_a_full_disk_says_the_disk_is_full(full_disk):
    ini = write_ini(full_disk / 'app.ini')
    first = run_cli('--message', 'ping', '--timeout', '0.2', ini=ini)
    assert first.returncode == exitcodes.NO_ANSWER, first.stderr
    fill(full_disk)

    result = run_cli('--message', 'ping', '--timeout', '1', ini=ini)
    assert result.returncode == exitcodes.NO_ANSWER == 4, result.stderr
    assert 'disk' in result.stderr and 'is full' in result.stderr, \
        result.stderr
    assert 'Traceback' not in result.stderr
    assert 'send_timeout' not in result.stderr


# --- the README's table is the one --help shows and these tests check -------

def readme_exit_codes():
    """The codes in the first column of README.rst's exit-code table."""
    readme = (REPO_ROOT / 'README.rst').read_text(encoding='utf-8')
    lines = readme[readme.index('\nExit codes:\n'):].splitlines()
    borders = [i for i, line in enumerate(lines) if line.startswith('====  ')]
    body = lines[borders[0] + 1:borders[1]]
    return [int(line.split()[0]) for line in body if line[:1].isdigit()]


def test_readme_exit_code_table_is_the_one_of_help():
    assert readme_exit_codes() == [code for code, _ in exitcodes.MEANINGS]
    assert exitcodes.CONFIG in exitcodes.FATAL_CHILD_CODES
