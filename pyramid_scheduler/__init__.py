"""pyramid_scheduler: background, deferred and periodic jobs for Pyramid.

``config.include('pyramid_scheduler')`` puts a :class:`Scheduler` on
``registry.scheduler`` and ``request.scheduler``. Nothing connects or starts a
thread at include time.

Where things are (README, "Architecture", has the map and four paths):

- ``scheduler``: the public facade (``add_*_job``, ``cancel_job``,
  ``send_message``, listeners, ``start`` / ``shutdown``, ``make_runtime``);
- ``combined``: combined mode (who starts the runtime in a web process,
  standing by for the job store lock, ``PYRAMID_SCHEDULER_CONSUME``);
- ``settings`` (the ``scheduler.*`` keys, one table in ``options``) on
  ``values`` (ini value parsers), ``secretsource`` (where signing secrets
  come from), ``storesettings`` (each queue's job store) and ``extras``
  (which optional extra a URL needs);
- ``jobs`` (a job spec at add time), ``references`` (job functions by name,
  and which may run: the app's package and ``scheduler.allowed_modules``),
  ``triggers`` (wall-clock interval and cron triggers);
- ``wire`` (the envelope), ``codec`` (every encode and decode, with
  ``signing``), ``naming`` (queue names), ``producer`` (sending),
  ``transports`` (kombu connections; the embedded SQLite and Redis
  transports);
- ``runtime`` (consuming and running jobs: the pscheduler child's, or this
  process's in combined mode), ``admin`` (both ends of admin commands) and
  ``exposure`` (the warning about an unsigned network broker).
"""
from .combined import (  # noqa: F401 (CONSUME_ENV is public here)
    CONSUME_ENV, ini_directory, setup_combined_mode)
from .exposure import warn_if_unsigned_network_broker
from .scheduler import Scheduler
from .settings import parse_settings

__all__ = ['Scheduler', 'includeme']


def includeme(config):
    """Add ``registry.scheduler`` and ``request.scheduler``.

    The scheduler is usable once the configuration is committed
    (``config.commit()`` or ``make_wsgi_app()``): its ``scheduler.*``
    settings are read and validated in a configuration action, as pyramid_tm
    reads its own, so values set after the include (``config.add_settings``)
    count, and a bad value fails the commit with a ``ConfigurationError``
    naming the key. With ``scheduler.combined = true`` the action also sets
    up the start of the runtime in this process (see ``combined``); nothing
    connects, creates a file or starts a thread before that.

    The embedded SQLite file defaults to the ini file's directory:
    ``scheduler.database = %(here)s/pscheduler.sqlite`` says so explicitly;
    without it, the directory is looked up in PasteDeploy's loader.
    """
    scheduler = Scheduler(registry=config.registry)
    # Set at once (not in the action): code between the include and the
    # commit may hold it, and is told to commit first if it uses it.
    config.registry.scheduler = scheduler
    config.add_request_method(request_scheduler, 'scheduler', reify=True)
    here = None if _database_is_set(config) else ini_directory()

    def configure():
        # The package of the app's Configurator (root_package: the
        # included one is pyramid_scheduler) is the application's own: its
        # functions may run as jobs without being listed (see
        # references.AllowedModules).
        settings = parse_settings(config.registry.settings, here=here,
                                  app_package=getattr(
                                      config.root_package, '__name__', None))
        warn_if_unsigned_network_broker(settings)
        scheduler.configure(settings)
        if settings.combined:
            setup_combined_mode(config, scheduler)

    config.action(('pyramid_scheduler', 'configure'), configure,
                  order=-100)


def request_scheduler(request):
    """``request.scheduler``: the application's scheduler."""
    return request.registry.scheduler


def _database_is_set(config):
    # The stack walk (ini_directory) is only a fallback for the default
    # database path: an explicit path needs no directory.
    return bool((config.get_settings() or {}).get('scheduler.database'))
