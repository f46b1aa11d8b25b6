"""``pscheduler --run FUNC --args JSON --kwargs JSON app.ini``: one job.

The daemon tests send the job with the real command while no daemon runs,
then start one: the job was on the broker when the command exited, and runs
once with its arguments. The error cases call the command line in this
process (no daemon, no subprocess): each is exit code 2 and one line.
"""
import json
import re

import pytest

from pscheduler import cli, exitcodes
from tests import jobs
from tests.daemon_helpers import run_cli, wait_for, write_ini


@pytest.mark.slow
@pytest.mark.parametrize('broker', ['sqlite', 'redis', 'rabbitmq'])
def test_the_job_sent_before_the_daemon_starts_runs_once(
        tmp_path, broker_for, daemons, broker):
    ini = write_ini(tmp_path / 'app.ini', settings=broker_for(broker))
    records = tmp_path / 'records.jsonl'

    sent = run_cli('--run', 'tests.jobs:record',
                   '--args', json.dumps([str(records), 'x', 2]),
                   '--kwargs', '{"a": 1}', ini=ini)
    assert sent.returncode == 0, sent.stderr
    assert re.fullmatch(r'[0-9a-f]{32}\n', sent.stdout), sent.stdout

    daemon = daemons(ini)
    daemon.wait_ready({'jobs'})
    # A second job, sent once the first has run: the first ran only once.
    wait_for(lambda: jobs.read_records(records), what='the job')
    after = run_cli('--run', 'tests.jobs:record', '-q', 'jobs',
                    '--args', json.dumps([str(records), 'after']), ini=ini)
    assert after.returncode == 0, after.stderr
    ran = wait_for(lambda: len(jobs.read_records(records)) == 2
                   and jobs.read_records(records), what='the second job')
    assert [(r['values'], r['extra']) for r in ran] == [
        (['x', 2], {'a': 1}), (['after'], {})], daemon.log()


# --- in this process, without a daemon -------------------------------------

@pytest.fixture
def ini(tmp_path):
    return write_ini(tmp_path / 'app.ini', queues=('jobs', 'mail'),
                     logging=False)


def run_in_process(ini, *argv):
    return cli.main([*argv, str(ini)])


def test_a_function_of_the_applications_package_needs_no_setting(
        tmp_path, capsys):
    """The app is loaded: its package (tests.apps) may run jobs, the rest
    (tests.jobs) only if listed, as in the web app."""
    ini = write_ini(tmp_path / 'app.ini', logging=False,
                    settings={'scheduler.allowed_modules': ''})
    assert run_in_process(ini, '--run', 'tests.apps.appjobs:record',
                          '--args', '["path"]', '--id', 'job-1') == 0
    assert capsys.readouterr().out == 'job-1\n'
    assert run_in_process(ini, '--run', 'tests.jobs:record') == 2
    assert 'add its module to the setting "scheduler.allowed_modules"' in \
        capsys.readouterr().err


@pytest.mark.parametrize('argv, expected', [
    (['--args', '["x", 2'], '--args is not valid JSON'),
    (['--args', '{"a": 1}'], '--args must be a JSON list'),
    (['--kwargs', '["x"]'], '--kwargs must be a JSON object'),
    (['--kwargs', 'a=1'], '--kwargs is not valid JSON'),
    (['-q', 'nope'], "--queue nope: unknown queue 'nope'"),
    (['-q', 'jobs', '-q', 'mail'], '--run sends the job to one queue, not 2'),
    (['--id', ' '], 'job id must be a non-empty string'),
    (['--args', '[{"__type__": "datetime", "__value__": "2020-01-01"}]'],
     "do not survive the 'json' serializer"),
])
def test_bad_arguments_are_exit_code_2_with_one_line(ini, capsys, argv,
                                                     expected):
    assert run_in_process(ini, '--run', 'tests.jobs:record', *argv) == \
        exitcodes.USAGE
    captured = capsys.readouterr()
    assert captured.out == ''
    [line] = captured.err.splitlines()
    assert line.startswith('pscheduler: error: ') and expected in line, line


@pytest.mark.parametrize('func, expected', [
    ('tests.nomodule:record', "cannot import module 'tests.nomodule'"),
    ('tests.jobs:nothing', "module 'tests.jobs' has no function 'nothing'"),
    ('os:system', 'os:system is outside the modules allowed to run jobs'),
    ('record', 'is not a function reference; use "package.module:function"'),
])
def test_bad_functions_are_exit_code_2_with_one_line(ini, capsys, func,
                                                     expected):
    assert run_in_process(ini, '--run', func) == exitcodes.USAGE
    [line] = capsys.readouterr().err.splitlines()
    assert expected in line, line


def test_run_and_message_conflict(ini, capsys):
    with pytest.raises(SystemExit) as exited:
        run_in_process(ini, '--run', 'tests.jobs:record', '--message', 'ping')
    assert exited.value.code == exitcodes.USAGE
    assert 'not allowed with argument' in capsys.readouterr().err


def test_an_unreachable_broker_is_the_exit_code_of_message(tmp_path, capsys):
    ini = write_ini(tmp_path / 'app.ini', logging=False, settings={
        'scheduler.broker.url': 'redis://127.0.0.1:1/0',
        'scheduler.broker.send_timeout': '1s'})
    assert run_in_process(ini, '--run', 'tests.jobs:record') == \
        exitcodes.NO_ANSWER
    captured = capsys.readouterr()
    assert captured.out == ''
    assert 'the job was not sent' in captured.err
    assert 'could not be reached within 1s' in captured.err


@pytest.mark.parametrize('app, code, expected', [
    ('tests.apps.noscheduler:main', exitcodes.NO_SCHEDULER,
     'does not include pyramid_scheduler'),
    ('tests.apps.broken:main', exitcodes.CONFIG,
     "could not be loaded: ModuleNotFoundError: No module named "
     "'pscheduler_test_module_that_does_not_exist'"),
])
def test_an_application_that_cannot_send_jobs(tmp_path, capsys, app, code,
                                              expected):
    ini = write_ini(tmp_path / 'app.ini', app=app, logging=False)
    assert run_in_process(ini, '--run', 'tests.jobs:record') == code
    [line] = capsys.readouterr().err.splitlines()
    assert expected in line, line


def test_never_runs_jobs_even_combined_and_told_to(tmp_path, capsys,
                                                   monkeypatch):
    from pyramid_scheduler import CONSUME_ENV
    from pyramid_scheduler.scheduler import Scheduler
    started = []
    monkeypatch.setattr(Scheduler, 'start', lambda self, *a, **k:
                        started.append(self))
    monkeypatch.setenv(CONSUME_ENV, '1')
    ini = write_ini(tmp_path / 'app.ini', logging=False,
                    settings={'scheduler.combined': 'true'})
    assert run_in_process(ini, '--run', 'tests.jobs:record') == 0
    assert started == []
