"""pyramid_scheduler: background, deferred and periodic jobs for Pyramid.

``config.include('pyramid_scheduler')`` puts a :class:`Scheduler` on
``registry.scheduler`` and ``request.scheduler``. Nothing connects or starts a
thread at include time.
"""
import inspect
import logging
import os

from pyramid.events import NewRequest

from .scheduler import Scheduler
from .settings import parse_settings

__all__ = ['Scheduler', 'includeme']

log = logging.getLogger(__name__)

# Set to "0" to keep a process from running jobs in combined mode, or to "1"
# to let a script that never serves a request (bootstrap) run them anyway.
CONSUME_ENV = 'PYRAMID_SCHEDULER_CONSUME'


def includeme(config):
    scheduler = Scheduler(registry=config.registry)
    config.registry.scheduler = scheduler
    config.add_request_method(lambda request: request.registry.scheduler,
                              'scheduler', reify=True)
    here = _ini_directory()

    def configure():
        # Settings are read in an action, as pyramid_tm does, so that values
        # set after the include (config.add_settings) are seen too.
        settings = parse_settings(config.registry.settings, here=here)
        scheduler.configure(settings)
        if settings.combined:
            _setup_combined_mode(config, scheduler)

    config.action(('pyramid_scheduler', 'configure'), configure,
                  order=-100)


def _setup_combined_mode(config, scheduler):
    """Run jobs in the web process, started by its first real request.

    Starting on the first request (not at ApplicationCreated) is what keeps
    scripts that load the app from consuming: pshell, bootstrap() and
    ``pscheduler --message`` never route a request, and ``prequest`` marks its
    one with ``paste.command_request``. It also keeps threads out of a
    pre-forking server's master (``gunicorn --preload``): the first request
    is served after the fork.
    """
    setting = os.environ.get(CONSUME_ENV, '').strip()
    if setting == '0':
        log.info('%s=0: this process does not run jobs', CONSUME_ENV)
        return
    if setting == '1':
        config.add_subscriber(_start_on_created(scheduler),
                              'pyramid.events.ApplicationCreated')
        return
    config.add_subscriber(_start_on_first_request(scheduler), NewRequest)


def _start_on_created(scheduler):
    def subscriber(event):
        scheduler.start()
    return subscriber


def _start_on_first_request(scheduler):
    def subscriber(event):
        if scheduler.runtime is not None or \
                event.request.environ.get('paste.command_request'):
            return
        scheduler.start()
    return subscriber


def _ini_directory():
    """The directory of the ini file being loaded, for the SQLite default.

    PasteDeploy passes ``here`` to the app factory in ``global_config`` but
    not in the settings that reach a Configurator, so we look for its loader
    context up the stack. Failing that, ``scheduler.database`` or the current
    directory decide (see README.rst).
    """
    for frame_info in inspect.stack(context=0)[2:40]:
        context = frame_info.frame.f_locals.get('context')
        global_conf = getattr(context, 'global_conf', None)
        if isinstance(global_conf, dict) and global_conf.get('here'):
            return global_conf['here']
    return None
