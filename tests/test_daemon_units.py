"""The files in etc/ work as shipped, with only their paths edited.

- the daemontools run files, under a real svscan/supervise/multilog;
- the systemd unit, checked by ``systemd-analyze verify``;
- the example production ini, whose scheduler.* settings must validate.

No skips: CI installs daemontools and systemd (scripts/services.sh); a
missing tool fails these tests with a message saying what to install.

The daemontools test runs the service as the current user (root in CI):
``setuidgid www-data`` is replaced by the test's own user, because the
service must read this checkout and write the temporary directory, which
www-data or nobody may not.
"""
import contextlib
import getpass
import logging
import shutil
import subprocess

import psutil
import pytest

from tests.daemon_helpers import (
    REPO_ROOT, is_gone, kill_group, pscheduler_executable, title, wait_for,
    write_ini)

# Not in the fast lane (pytest -m "not slow"): runs the etc/ services under
# svscan and systemd-analyze.
pytestmark = pytest.mark.slow

ETC = REPO_ROOT / 'etc'


def require_tool(name, package):
    path = shutil.which(name)
    assert path, (f'{name} is not installed: apt-get install {package} '
                  '(scripts/services.sh start does it)')
    return path


# --- systemd -----------------------------------------------------------------

def test_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = require_tool('systemd-analyze', 'systemd')
    unit = (ETC / 'systemd' / 'pscheduler.service').read_text()
    shipped_exec = '/srv/myapp/venv/bin/pscheduler'
    assert f'ExecStart={shipped_exec} ' in unit
    # verify checks that ExecStart's program exists: point it at a real one.
    unit = unit.replace(shipped_exec, str(pscheduler_executable(tmp_path)))
    unit = unit.replace('WorkingDirectory=/srv/myapp',
                        f'WorkingDirectory={tmp_path}')
    path = tmp_path / 'pscheduler.service'
    path.write_text(unit)

    result = subprocess.run([analyze, 'verify', str(path)],
                            capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Warnings about other units of the host are not ours; ours must be none.
    assert 'pscheduler.service' not in output, output

    for line in ('Type=notify', 'ExecReload=/bin/kill -HUP $MAINPID',
                 'User=www-data', 'KillMode=mixed'):
        assert line in unit
    stop_timeout = int(unit.split('TimeoutStopSec=')[1].split()[0])
    assert stop_timeout > 30 + 5  # shutdown_timeout default + STOP_GRACE


# --- daemontools -------------------------------------------------------------

@pytest.fixture
def scan_dir(tmp_path):
    """A service directory for svscan, torn down with every process after."""
    directory = tmp_path / 'service'
    directory.mkdir()
    processes = []
    yield directory, processes
    svc = shutil.which('svc')
    service = directory / 'pscheduler'
    if svc and service.exists():
        subprocess.run([svc, '-dx', str(service), str(service / 'log')],
                       capture_output=True, timeout=10)
    for process in processes:
        kill_group(process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if str(tmp_path) in ' '.join(process.cmdline()):
                process.kill()


def make_service(service, tmp_path, ini, log_dir):
    run = (ETC / 'daemontools' / 'run').read_text()
    for shipped, local in (
            ('/path/to/virtualenv/bin/pscheduler',
             str(pscheduler_executable(tmp_path))),
            ('/path/to/config.ini', str(ini)),
            ('setuidgid www-data', f'setuidgid {getpass.getuser()}')):
        assert shipped in run
        run = run.replace(shipped, local)
    log_run = (ETC / 'daemontools' / 'log' / 'run').read_text()
    assert '/var/log/pscheduler' in log_run
    log_run = log_run.replace('/var/log/pscheduler', str(log_dir))
    (service / 'log').mkdir(parents=True)
    for path, text in ((service / 'run', run),
                       (service / 'log' / 'run', log_run)):
        path.write_text(text)
        path.chmod(0o755)


def test_daemontools_run_file_under_supervise(tmp_path, scan_dir):
    svscan = require_tool('svscan', 'daemontools')
    svc = require_tool('svc', 'daemontools')
    require_tool('setuidgid', 'daemontools')
    require_tool('multilog', 'daemontools')
    directory, processes = scan_dir
    ini = write_ini(tmp_path / 'app.ini', queues=('jobs', 'mail'))
    log_dir = tmp_path / 'log'
    service = directory / 'pscheduler'
    make_service(service, tmp_path, ini, log_dir)

    processes.append(subprocess.Popen(
        [svscan, str(directory)], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True))
    current = log_dir / 'current'

    def log():
        return current.read_text(errors='replace') if current.exists() else ''

    def wait_log(text, count=1, timeout=30):
        wait_for(lambda: log().count(text) >= count, timeout,
                 what=f'{count} x {text!r} in the multilog output:\n{log()}')

    wait_log('pscheduler ready')
    master = master_of(svscan_pid=processes[0].pid)
    queues = wait_for(lambda: queues_of(master) == {'jobs', 'mail'}
                      and queues_of(master), what='the children')

    # svc -h: SIGHUP to the master, which restarts its children.
    old_children = children_pids(master)
    subprocess.run([svc, '-h', str(service)], check=True, timeout=10)
    wait_log('SIGHUP: reloading')
    wait_log('pscheduler ready', count=2)
    assert master.is_running()
    new_children = children_pids(master)
    assert new_children and not new_children & old_children

    # svc -d: SIGTERM (and SIGCONT); a clean stop, nobody left behind.
    subprocess.run([svc, '-d', str(service)], check=True, timeout=10)
    wait_log(f'pscheduler master {master.pid} stopped (exit code 0)')
    wait_for(lambda: is_gone(master.pid), what='the master to exit')
    wait_for(lambda: all(is_gone(pid) for pid in new_children),
             what='the children to exit')
    svstat = subprocess.run(['svstat', str(service)], capture_output=True,
                            text=True, timeout=10)
    assert ': down ' in svstat.stdout, svstat.stdout
    assert queues


def master_of(svscan_pid):
    """The pscheduler master that a supervise under svscan runs."""
    def find():
        for process in psutil.Process(svscan_pid).children(recursive=True):
            if title(process).startswith('pscheduler: master'):
                return process
        return None
    return wait_for(find, what='the pscheduler master under supervise')


CHILD_TITLE = 'pscheduler: queue '


def live_children(master):
    return [p for p in master.children()
            if title(p).startswith(CHILD_TITLE) and not is_gone(p.pid)]


def children_pids(master):
    return {p.pid for p in live_children(master)}


def queues_of(master):
    return {title(p)[len(CHILD_TITLE):] for p in live_children(master)}


# --- the example production ini ----------------------------------------------

def test_example_production_ini_validates(tmp_path, caplog):
    from pscheduler.config import load_config
    secret = tmp_path / 'scheduler.secret'
    secret.write_text('s3cret-for-the-test\n')
    text = (ETC / 'production.ini').read_text()
    assert 'scheduler.combined = false' in text
    ini = tmp_path / 'production.ini'
    ini.write_text(text.replace('/etc/myapp/scheduler.secret', str(secret)))

    with caplog.at_level(logging.WARNING):
        config = load_config(str(ini))
    assert caplog.records == []  # no unknown or misspelt setting
    settings = config.settings
    assert config.queues == ('jobs', 'reports')
    assert not settings.combined and not settings.embedded
    assert settings.child_memory_limit == 512_000_000
    assert settings.shutdown_timeout + 5 < 60  # the unit's TimeoutStopSec
