"""The dashboard: ``config.include('pyramid_scheduler.dashboard')``.

Server-rendered pages inside the application, under
``scheduler.dashboard.prefix`` (default ``/scheduler``): the overview
(queues, the daemon's processes, depth, dead letters, failures), the
deferred jobs with search and paging, a job's page, the failed jobs and the
dead letters with their actions. Plain HTML and one inline style sheet: no
build step, no external asset, readable on a phone.

Where things are: ``settings`` (its two keys), ``guard`` (permission and
CSRF), ``data`` (what each page reads: admin commands over the broker, the
status table), ``html`` (escaping and the layout), ``pages`` (each page's
body), ``views`` (the view callables and their routes).
"""
from .settings import read_dashboard_settings
from .views import add_routes_and_views

__all__ = ['includeme']


def includeme(config):
    """Mount the dashboard; includes ``pyramid_scheduler`` if not yet.

    Its settings are read in a configuration action, as pyramid_tm reads
    its own, so values set after the include count and a bad value fails
    the commit with a ``ConfigurationError`` naming the key.
    """
    if getattr(config.registry, 'scheduler', None) is None:
        config.include('pyramid_scheduler')

    def register():
        options = read_dashboard_settings(config.registry.settings or {})
        add_routes_and_views(config, options)

    # Before the default order (0): the routes and views it adds run in
    # this same commit.
    config.action(('pyramid_scheduler', 'dashboard'), register, order=-50)
