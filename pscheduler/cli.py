"""The ``pscheduler`` command line."""
import argparse
import functools
import logging
import signal
import sys
import time

from . import exitcodes, handles, message
from .config import (
    get_loader, get_sections, load_config, require_daemon_mode)
from .exitcodes import ExitError
from .master import Master
from .pidfile import Pidfile
from .reporting import Reporting
from .signals import SignalQueue
from .statedir import StateDir
from .stopping import STOP_GRACE

log = logging.getLogger(__name__)

# Used when the ini has no [loggers] section: a daemon should say what it
# does; the --message client only what goes wrong.
DEFAULT_LOG_FORMAT = '%(asctime)s %(levelname)-5.5s [%(name)s] %(message)s'

DESCRIPTION = """\
Run the jobs of a Pyramid application that includes pyramid_scheduler: a
master process forks one child per queue of the [app:NAME] section of
CONFIG_URI (scheduler.queues) and keeps them serving. The application must
not be in combined mode (scheduler.combined = false).
"""

EPILOG = f"""\
signals (to the master):
  SIGTERM, SIGINT  stop: children finish their running jobs (within
                   scheduler.shutdown_timeout), then the master exits 0;
                   a second signal (a second or more later) kills them at once
  SIGHUP           reload: re-read CONFIG_URI, add/remove queues, restart
                   the children one at a time with the new code and settings

admin commands (--message TEXT, TEXT = "COMMAND [key=value ...]"):
  {', '.join(message.COMMANDS)}
  e.g. --message ping, --message 'jobs offset=50 limit=10',
  --message 'failed limit=20', --message 'requeue ID' (or 'requeue id=ID')

send one job (--run FUNC, as registry.scheduler.add_async_job would):
  --run myapp.jobs:send --args '["x", 2]' --kwargs '{{"a": 1}}' [-q QUEUE]
  [--id JOBID] app.ini
  loads the application, checks the job as the web app does (allowed
  modules, arguments, queue), sends it at once and prints its id on stdout

exit codes:
{exitcodes.describe()}
"""


def build_parser():
    parser = argparse.ArgumentParser(
        prog='pscheduler', description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        '--app-name', metavar='NAME', dest='app_name', default=None,
        help='load the named application (default: the #NAME of CONFIG_URI,'
             ' else main)')
    parser.add_argument(
        '-q', '--queue', metavar='NAME', dest='queues', action='append',
        default=[],
        help='serve only this queue (repeatable; default: every queue in '
             'scheduler.queues); with --run: the job\'s queue (once; '
             'default: the first of scheduler.queues)')
    parser.add_argument(
        '--reload', action='store_true',
        help='restart when the code or CONFIG_URI changes (development)')
    parser.add_argument(
        '--reload-interval', metavar='SECONDS', type=float, default=1,
        help='seconds between checks for changed files (default: '
             '%(default)g)')
    parser.add_argument(
        '--restart', action='store_true',
        help='start again after an unexpected exit (e.g. a child that '
             'failed to start too often) instead of exiting')
    parser.add_argument(
        '--restart-interval', metavar='SECONDS', type=float, default=5,
        help='seconds to wait before such a restart (default: %(default)g)')
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument(
        '--message', metavar='TEXT',
        help='send an admin command to the running children, print their '
             'answers and exit')
    actions.add_argument(
        '--run', metavar='FUNC',
        help='send one job calling FUNC ("package.module:function"), print '
             'its id and exit; -q QUEUE (once) picks its queue')
    add_run_arguments(parser)
    parser.add_argument(
        '--json', action='store_true',
        help='with --message: print the answers as JSON')
    parser.add_argument(
        '--timeout', metavar='SECONDS', type=float, default=None,
        help='with --message: how long to wait for answers (default: '
             'scheduler.admin.timeout)')
    parser.add_argument(
        '--pidfile', metavar='PATH',
        help='write the master\'s pid to PATH; refuse to start if it names '
             'a running pscheduler')
    parser.add_argument(
        'config_uri', metavar='CONFIG_URI',
        help='the ini file (or plaster URI) of the application')
    return parser


def add_run_arguments(parser):
    parser.add_argument(
        '--args', metavar='JSON', default=None,
        help='with --run: the positional arguments, a JSON list')
    parser.add_argument(
        '--kwargs', metavar='JSON', default=None,
        help='with --run: the keyword arguments, a JSON object')
    parser.add_argument(
        '--id', metavar='JOBID', dest='job_id', default=None,
        help='with --run: the job\'s id (default: a new random one)')


def check_combinations(parser, args):
    if (args.json or args.timeout is not None) and args.message is None:
        parser.error('--json and --timeout go with --message')
    if args.run is None and (args.args, args.kwargs, args.job_id) != (
            None, None, None):
        parser.error('--args, --kwargs and --id go with --run')


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    check_combinations(parser, args)
    client = args.message is not None or args.run is not None
    try:
        args.loader = get_loader(args.config_uri)
        setup_logging(args.loader,
                      logging.WARNING if client else logging.INFO)
        if args.message is not None:
            return send_message(args)
        if args.run is not None:
            return send_job(args)
        # Checked before --reload and --pidfile: a mistake is reported on
        # stderr at once, whatever the logging configuration says.
        config = load_daemon_config(args)
        watch_files = start_reloader(args, config) if args.reload else None
        return run_daemon(args, config, watch_files)
    except ExitError as exc:
        print(f'pscheduler: error: {exc}', file=sys.stderr)
        return exc.code


def setup_logging(loader, default_level=logging.INFO):
    """The ini's logging sections if it has them, else stderr at a level."""
    if 'loggers' not in get_sections(loader):
        logging.basicConfig(level=default_level, format=DEFAULT_LOG_FORMAT)
        return
    try:
        loader.setup_logging()
    except Exception as exc:  # fileConfig raises anything from KeyError on
        raise ExitError(f'the logging configuration in {loader.uri} is '
                        f'invalid: {type(exc).__name__}: {exc}',
                        exitcodes.CONFIG) from exc


def send_message(args):
    config = load_config(args.config_uri, args.app_name, args.queues,
                         args.loader)
    return message.run(config, args.message, timeout=args.timeout,
                       as_json=args.json)


def send_job(args):
    # Imported here: the daemon's master must not import the job machinery
    # (nor the application, which --run loads).
    from . import enqueue
    return enqueue.run(args, sys.stdout)


def load_daemon_config(args):
    config = load_config(args.config_uri, args.app_name, args.queues,
                         args.loader)
    require_daemon_mode(config)
    return config


# --- --reload ----------------------------------------------------------------

def start_reloader(args, config):
    """Run under hupper, as pserve does; returns in hupper's worker only.

    The first call starts hupper's monitor, which re-runs this command in a
    worker process and never returns. In the worker, it watches the ini file
    and returns the function the master gives the source files each child
    reports once it has loaded the application (the master itself never
    imports it).
    """
    import hupper
    if not hupper.is_active():
        # hupper's SIGTERM to its worker is followed by a SIGKILL after
        # shutdown_interval: leave the children their time to drain.
        hupper.start_reloader(
            'pscheduler.cli.main', reload_interval=args.reload_interval,
            shutdown_interval=config.settings.shutdown_timeout + STOP_GRACE
            + 5)
        return  # not reached: the monitor exits when it is done
    reloader = hupper.get_reloader()
    reloader.watch_files([config.ini_path])
    return reloader.watch_files


# --- the daemon --------------------------------------------------------------

def run_daemon(args, config, watch_files=None):
    """Run the master (again and again with --restart); exit code."""
    pidfile = Pidfile(args.pidfile) if args.pidfile else None
    if pidfile is not None:
        pidfile.create()
    try:
        while True:
            code = run_master(args, config, watch_files)
            if code == exitcodes.OK or not args.restart:
                return code
            log.error('pscheduler stopped with exit code %d; --restart: '
                      'starting again in %gs', code, args.restart_interval)
            if not sleep_unless_stopped(args.restart_interval):
                return exitcodes.OK
            config = None  # read the ini again: it may have been fixed
    finally:
        if pidfile is not None:
            pidfile.remove()


def run_master(args, config=None, watch_files=None):
    def reload_config():
        setup_logging(args.loader)
        return load_daemon_config(args)

    if config is None:
        try:
            config = reload_config()
        except ExitError as exc:
            log.error('%s', exc)
            return exc.code
    with StateDir() as state:
        reporting = Reporting(state, config.settings.metrics_bind)
        try:
            spawn = functools.partial(handles.spawn, state_dir=state.path)
            return Master(config, reload_config, watch_files, spawn=spawn,
                          reporting=reporting).run()
        finally:
            reporting.close()


def sleep_unless_stopped(seconds):
    """Sleep; False if SIGTERM or SIGINT came meanwhile (SIGHUP: wake)."""
    deadline = time.monotonic() + seconds
    with SignalQueue((signal.SIGTERM, signal.SIGINT,
                      signal.SIGHUP)) as signals:
        while time.monotonic() < deadline:
            signals.wait(deadline - time.monotonic())
            received = set(signals.pop_all())
            if received - {signal.SIGHUP}:
                log.info('stop signal during the --restart wait: exiting')
                return False
            if received:
                log.info('SIGHUP during the --restart wait: starting now')
                return True
    return True
