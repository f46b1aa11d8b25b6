"""The project installs for real, as a user installs it, and then works.

Everything else in the suite runs from this checkout, in a venv where every
extra is installed: a dependency missing from pyproject.toml, an import of an
optional package on the default path, or a broken console script would go
unnoticed there. These tests make venvs with Debian's own interpreter
(``/usr/bin/python3.11``, its own pip 23.0.1, nothing upgraded first), install
a wheel built from this checkout (or the checkout itself, editable), and run
jobs end to end through the installed ``pscheduler`` launcher:

- no extras: a date job and an async job on the SQLite default;
- each extra alone (``redis``, ``amqp``, ``postgres``): the same jobs through
  that broker or job store;
- ``pip install -e``: the editable launcher works (with an old pip and
  setuptools it used to be a ``setup.py develop`` script that could not find
  its dependencies);
- lower bounds: every dependency pinned to the lowest version pyproject.toml
  allows (constraints/lower-bounds.txt).

The daemon runs outside this checkout, with a clean environment: only the
test application's directory on PYTHONPATH, so what runs is what pip
installed. Venvs are made once per test session; the whole file takes a few
minutes (most of it pip). Set PSCHEDULER_TEST_SYSTEM_PYTHON to try another
interpreter (scripts/test sets it to the Python it was asked to use).
"""
import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.daemon_helpers import (
    AMQP_URL, PG_URL, REDIS_URL, REPO_ROOT, DAEMON_REDIS_DB, delete_broker_queues,
    kill_group, wait_for, write_ini)
from tests.conftest import poll
from tests.jobs import read_records

pytestmark = pytest.mark.slow

SYSTEM_PYTHON = os.environ.get('PSCHEDULER_TEST_SYSTEM_PYTHON',
                               '/usr/bin/python3.11')
LOWER_BOUNDS = REPO_ROOT / 'constraints' / 'lower-bounds.txt'
PIP_TIMEOUT = 900

# Not copied into the build directory: nothing a build needs, and building
# in the checkout itself would leave build/ and *.egg-info behind.
SOURCE_IGNORE = shutil.ignore_patterns(
    '.git', '.venv*', '.services', 'build', 'dist', '*.egg-info',
    '__pycache__', '*.sqlite*', '.pytest_cache', '*.jsonl', '*.wake')

# The user's application: it includes pyramid_scheduler and has one job.
APP = '''\
import json
import os
import time

from pyramid.config import Configurator


def main(global_config, **settings):
    config = Configurator(settings=settings)
    config.include('pyramid_scheduler')
    return config.make_wsgi_app()


def record(path, kind):
    line = json.dumps({'values': [kind], 'pid': os.getpid(),
                       'at': time.time()})
    with open(path, 'a', encoding='utf-8') as handle:
        handle.write(line + '\\n')
'''

# What a script of the user's application does to schedule jobs: load the
# app (bootstrap) and use request.scheduler. It prints where it imported
# pyramid_scheduler from, so the test can check that it is the installed one.
PRODUCER = '''\
import sys
import time

import pyramid_scheduler
from pyramid.paster import bootstrap

ini, out = sys.argv[1:3]
with bootstrap(ini) as env:
    scheduler = env['request'].scheduler
    scheduler.add_date_job('installapp:record', time.time() + 2,
                           args=[out, 'date'])
    scheduler.add_async_job('installapp:record', args=[out, 'async'])
    scheduler.shutdown()
print(pyramid_scheduler.__file__)
'''


def run(command, timeout=PIP_TIMEOUT, **kwargs):
    """Run ``command``; fail the test with its output if it fails."""
    result = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL, env=pip_env(), **kwargs)
    assert result.returncode == 0, (
        f'{" ".join(map(str, command))} exited {result.returncode}:\n'
        f'{result.stdout}\n{result.stderr}')
    return result


def pip_env():
    """This environment without what would leak this checkout in."""
    env = {key: value for key, value in os.environ.items()
           if key not in ('PYTHONPATH', 'VIRTUAL_ENV', 'PYTHONHOME')}
    env.update(PIP_NO_INPUT='1', PIP_DISABLE_PIP_VERSION_CHECK='1')
    return env


def make_venv(path):
    """A venv of the system interpreter, with the pip it ships."""
    assert Path(SYSTEM_PYTHON).exists(), (
        f'{SYSTEM_PYTHON} is missing: apt-get install python3.11 '
        'python3.11-venv (or set PSCHEDULER_TEST_SYSTEM_PYTHON)')
    run([SYSTEM_PYTHON, '-m', 'venv', path])
    return Path(path)


def pip_install(venv, *args):
    run([venv / 'bin' / 'python', '-m', 'pip', 'install', '-q', *args])
    return venv


def copy_source(destination):
    shutil.copytree(REPO_ROOT, destination, ignore=SOURCE_IGNORE)
    return Path(destination)


def has_module(venv, name):
    """Whether ``name`` imports in ``venv`` (outside this checkout)."""
    result = subprocess.run(
        [str(venv / 'bin' / 'python'), '-c',
         'import importlib.util, sys; '
         f'sys.exit(importlib.util.find_spec({name!r}) is None)'],
        env=pip_env(), cwd='/', timeout=60)
    return result.returncode == 0


# --- venvs, one of each per test session -------------------------------------

@pytest.fixture(scope='session')
def install_root(tmp_path_factory):
    return tmp_path_factory.mktemp('install')


@pytest.fixture(scope='session')
def wheel(install_root):
    """A wheel of this checkout, built by the system interpreter's pip."""
    source = copy_source(install_root / 'source')
    builder = make_venv(install_root / 'venv-build')
    dist = install_root / 'dist'
    run([builder / 'bin' / 'python', '-m', 'pip', 'wheel', '-q', '--no-deps',
         '-w', dist, source])
    wheels = list(dist.glob('pyramid_scheduler-*.whl'))
    assert len(wheels) == 1, wheels
    return wheels[0]


def installed_venv(install_root, wheel, name, extras='', constraints=None):
    venv = make_venv(install_root / f'venv-{name}')
    requirement = f'pyramid_scheduler[{extras}] @ {wheel.as_uri()}' \
        if extras else str(wheel)
    args = ['-c', constraints] if constraints else []
    return pip_install(venv, *args, requirement)


@pytest.fixture(scope='session')
def plain_venv(install_root, wheel):
    return installed_venv(install_root, wheel, 'plain')


@pytest.fixture(scope='session')
def extra_venv(install_root, wheel):
    """``extra_venv(name)``: a venv with the wheel and that extra alone."""
    made = {}

    def make(extra):
        if extra not in made:
            made[extra] = installed_venv(install_root, wheel, extra, extra)
        return made[extra]
    return make


@pytest.fixture(scope='session')
def editable_venv(install_root):
    source = copy_source(install_root / 'editable-source')
    venv = make_venv(install_root / 'venv-editable')
    return pip_install(venv, '-e', source), source


@pytest.fixture(scope='session')
def lower_bounds_venv(install_root, wheel):
    return installed_venv(install_root, wheel, 'lower-bounds',
                          'redis,amqp,postgres', constraints=LOWER_BOUNDS)


# --- running the installed launcher ------------------------------------------

@pytest.fixture
def app_dir(tmp_path):
    """The user's application module, on the daemon's PYTHONPATH only."""
    directory = tmp_path / 'app'
    directory.mkdir()
    (directory / 'installapp.py').write_text(APP, encoding='utf-8')
    (directory / 'produce.py').write_text(PRODUCER, encoding='utf-8')
    return directory


def app_env(app_dir):
    env = pip_env()
    env.pop('NOTIFY_SOCKET', None)
    env.update(PYTHONPATH=str(app_dir), PYTHONUNBUFFERED='1')
    return env


@contextlib.contextmanager
def running_daemon(venv, ini, app_dir):
    """``venv/bin/pscheduler ini`` until it is ready; stopped with SIGTERM."""
    log_path = ini.with_suffix('.log')
    with open(log_path, 'ab') as log:
        process = subprocess.Popen(
            [str(venv / 'bin' / 'pscheduler'), str(ini)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=str(ini.parent), env=app_env(app_dir),
            start_new_session=True)

    def output():
        return log_path.read_text(encoding='utf-8', errors='replace')

    try:
        wait_for(lambda: 'pscheduler ready' in output()
                 or process.poll() is not None, timeout=60,
                 what='pscheduler ready')
        assert process.poll() is None, (
            f'pscheduler exited {process.returncode}:\n{output()}')
        yield output
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, output()
    finally:
        kill_group(process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)


def run_jobs_end_to_end(venv, app_dir, settings=None, installed_at=None):
    """A date job and an async job, sent by a script of the app and run by
    the installed pscheduler; both must run, once, in the daemon.

    ``installed_at``: where pyramid_scheduler must be imported from (the
    venv, or the source of an editable install)."""
    ini = write_ini(app_dir.parent / 'app.ini', app='installapp:main',
                    settings=settings)
    out = app_dir.parent / 'runs.jsonl'
    with running_daemon(venv, ini, app_dir) as output:
        produced = subprocess.run(
            [str(venv / 'bin' / 'python'), str(app_dir / 'produce.py'),
             str(ini), str(out)],
            capture_output=True, text=True, timeout=120,
            cwd=str(app_dir.parent), env=app_env(app_dir),
            stdin=subprocess.DEVNULL)
        assert produced.returncode == 0, produced.stdout + produced.stderr
        assert produced.stdout.strip().startswith(
                str(installed_at or venv)), (
            'the script did not use the installed pyramid_scheduler: '
            f'{produced.stdout}')
        ran = poll(lambda: len(read_records(out)) >= 2 and read_records(out),
                   timeout=30, message=lambda: (
                       f'both jobs did not run within 30s; ran: '
                       f'{read_records(out)}; pscheduler log:\n{output()}'))
        time.sleep(0.5)  # let a (wrong) second run show up
    runs = read_records(out)
    assert sorted(run['values'][0] for run in runs) == ['async', 'date']
    assert all(run['pid'] != os.getpid() for run in ran)
    return runs


def unique_id():
    return f'install_{uuid.uuid4().hex[:12]}'


# --- the tests ---------------------------------------------------------------

def test_no_extras_runs_jobs_on_the_sqlite_default(plain_venv, app_dir):
    # Only the default's dependencies: no Redis client, no database driver.
    assert not has_module(plain_venv, 'redis')
    assert not has_module(plain_venv, 'psycopg2')
    run_jobs_end_to_end(plain_venv, app_dir,
                        settings={'scheduler.id': unique_id()})


def test_no_extras_names_the_missing_extra(plain_venv, app_dir, tmp_path):
    ini = write_ini(tmp_path / 'redis.ini', app='installapp:main',
                    settings={'scheduler.broker.url': REDIS_URL})
    result = subprocess.run(
        [str(plain_venv / 'bin' / 'pscheduler'), str(ini)],
        capture_output=True, text=True, timeout=60, cwd=str(tmp_path),
        env=app_env(app_dir), stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    assert "pip install 'pyramid_scheduler[redis]'" in result.stderr, \
        result.stderr


@pytest.fixture
def shared_broker_settings():
    """Settings with a unique scheduler.id, whose queues and tables are
    removed from the shared servers afterwards."""
    made = []

    def make(**settings):
        settings['scheduler.id'] = unique_id()
        made.append(settings)
        return settings

    yield make
    for settings in made:
        delete_broker_queues(settings)
        if 'scheduler.jobstore.url' in settings:
            drop_tables(settings['scheduler.jobstore.url'],
                        settings['scheduler.id'])


def drop_tables(url, prefix):
    import sqlalchemy
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            names = sqlalchemy.inspect(connection).get_table_names()
            for name in names:
                if name.startswith(prefix):
                    connection.execute(sqlalchemy.text(
                        f'DROP TABLE IF EXISTS "{name}"'))
    finally:
        engine.dispose()


def redis_url():
    return f'{REDIS_URL.rsplit("/", 1)[0]}/{DAEMON_REDIS_DB}'


def test_redis_extra_alone(extra_venv, app_dir, shared_broker_settings):
    venv = extra_venv('redis')
    assert not has_module(venv, 'psycopg2')
    run_jobs_end_to_end(venv, app_dir, shared_broker_settings(
        **{'scheduler.broker.url': redis_url()}))


def test_amqp_extra_alone(extra_venv, app_dir, shared_broker_settings):
    venv = extra_venv('amqp')
    assert not has_module(venv, 'redis')
    run_jobs_end_to_end(venv, app_dir, shared_broker_settings(
        **{'scheduler.broker.url': AMQP_URL}))


def test_postgres_extra_alone(extra_venv, app_dir, shared_broker_settings):
    venv = extra_venv('postgres')
    assert not has_module(venv, 'redis')
    # The date job waits in the PostgreSQL job store; messages use SQLite.
    run_jobs_end_to_end(venv, app_dir, shared_broker_settings(
        **{'scheduler.jobstore.url': PG_URL}))


def test_editable_install_launcher(editable_venv, app_dir):
    venv, source = editable_venv
    launcher = (venv / 'bin' / 'pscheduler').read_text()
    # The old `setup.py develop` launcher looked itself up in pkg_resources.
    assert 'pkg_resources' not in launcher, launcher
    run_jobs_end_to_end(venv, app_dir, settings={'scheduler.id': unique_id()},
                        installed_at=source)


def lower_bounds():
    """``{name: version}`` of constraints/lower-bounds.txt."""
    pins = {}
    for line in LOWER_BOUNDS.read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            name, _, version = line.partition('==')
            pins[name.strip().lower().replace('_', '-')] = version.strip()
    return pins


def test_lower_bounds_file_pins_every_dependency():
    """Each ``>=`` of pyproject.toml's dependencies and extras (but the
    test and bench tools) is pinned in the constraints file, at that bound."""
    import tomllib
    project = tomllib.loads(
        (REPO_ROOT / 'pyproject.toml').read_text())['project']
    requirements = list(project['dependencies'])
    for extra in ('redis', 'amqp', 'postgres'):
        requirements += project['optional-dependencies'][extra]
    expected = {}
    for requirement in requirements:
        name, _, rest = requirement.partition('>=')
        expected[name.strip().lower().replace('_', '-')] = \
            rest.split(',')[0].strip()
    pins = lower_bounds()
    for name, bound in expected.items():
        assert name in pins, f'{name} is not in {LOWER_BOUNDS}'
        assert _release(pins[name]) == _release(bound), (name, pins[name])


def _release(version):
    parts = [int(part) for part in version.split('.')]
    while parts and parts[-1] == 0:
        parts.pop()
    return parts


def test_lower_bounds_run_jobs(lower_bounds_venv, app_dir,
                               shared_broker_settings):
    installed = run([lower_bounds_venv / 'bin' / 'python', '-m', 'pip',
                     'list', '--format=freeze']).stdout
    versions = dict(line.lower().replace('_', '-').split('==', 1)
                    for line in installed.splitlines() if '==' in line)
    for name, version in lower_bounds().items():
        assert _release(versions.get(name, '0')) == _release(version), (
            name, versions.get(name))
    run_jobs_end_to_end(lower_bounds_venv, app_dir,
                        settings={'scheduler.id': unique_id()})


def test_lower_bounds_redis_and_postgres(lower_bounds_venv, app_dir,
                                         shared_broker_settings):
    run_jobs_end_to_end(lower_bounds_venv, app_dir, shared_broker_settings(
        **{'scheduler.broker.url': redis_url(),
           'scheduler.jobstore.url': PG_URL}))


def test_lower_bounds_amqp(lower_bounds_venv, app_dir,
                           shared_broker_settings):
    run_jobs_end_to_end(lower_bounds_venv, app_dir, shared_broker_settings(
        **{'scheduler.broker.url': AMQP_URL}))
