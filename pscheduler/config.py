"""Read and validate the ini file for the daemon, without the application.

The master must never import the application: whatever it imports or opens
(threads, sockets, database engines) would cross the fork into every child.
So it reads the raw ``[app:NAME]`` section through plaster and validates the
``scheduler.*`` settings with pyramid_scheduler's parser; only the children
load the application itself.
"""
import dataclasses
import os

import plaster
import plaster_pastedeploy
from pyramid.exceptions import ConfigurationError
from pyramid_scheduler.errors import InvalidQueue
from pyramid_scheduler.settings import SchedulerSettings, parse_settings

from . import exitcodes
from .exitcodes import ExitError


@dataclasses.dataclass(frozen=True)
class DaemonConfig:
    """What the master knows: where the app is, its settings, our queues."""
    config_uri: str
    app_name: str           # of the [app:NAME] section the children load
    ini_path: str
    settings: SchedulerSettings
    queues: tuple

    @property
    def here(self):
        return os.path.dirname(self.ini_path)


def load_config(config_uri, app_name=None, only_queues=(), loader=None):
    """Read ``config_uri`` -> DaemonConfig, or raise ExitError saying why.

    ``app_name`` defaults to the URI's ``#fragment``, then ``main``;
    ``only_queues`` (``--queue``) restricts the queues served. ``loader``:
    the URI's plaster loader, if the caller has it already.
    """
    loader = loader or get_loader(config_uri)
    app_name = app_name or loader.uri.fragment or 'main'
    section = app_section(loader, app_name)
    raw = loader.get_settings(section)
    ini_path = os.path.abspath(loader.uri.path)
    here = raw.global_conf.get('here') or os.path.dirname(ini_path)
    try:
        # Settings that name application code (delegator, ...) are imported
        # and checked by the children, which load the application anyway.
        settings = parse_settings(raw, here=here, import_references=False)
    except ConfigurationError as exc:
        raise ExitError(f'{ini_path} [{section}]: {exc}',
                        exitcodes.CONFIG) from exc
    check_storage_paths(settings, f'{ini_path} [{section}]')
    # The children load the [app:...] section itself: a pipeline's filters
    # would hide the application's registry.
    return DaemonConfig(config_uri=config_uri,
                        app_name=section[len('app:'):], ini_path=ini_path,
                        settings=settings,
                        queues=select_queues(settings, only_queues))


def check_storage_paths(settings, where):
    """Refuse SQLite files pscheduler could not create or write.

    Found here, the mistake is one line naming the key and exit code 3; in
    a child it would be a traceback from deep inside SQLite, five times.
    """
    paths = []
    if settings.embedded or settings.jobstore_url == (
            'sqlite:///' + settings.database_path):
        paths.append(('database', settings.database_path))
    jobstore_file = sqlite_file(settings.jobstore_url)
    if jobstore_file and jobstore_file != settings.database_path:
        paths.append(('jobstore.url', jobstore_file))
    for key, path in paths:
        problem = unwritable_file(path)
        if problem:
            raise ExitError(f'{where}: setting "scheduler.{key}" is {path}: '
                            f'{problem}', exitcodes.CONFIG)


def sqlite_file(url):
    """The file of a ``sqlite:///PATH`` URL; None for others and memory."""
    prefix = 'sqlite:///'
    if not url.lower().startswith(prefix):
        return None
    path = url[len(prefix):].split('?', 1)[0]
    if not path or path == ':memory:':
        return None
    return os.path.abspath(path)


def unwritable_file(path):
    """Why ``path`` cannot be created or written, or None.

    Its missing directories are created when it is first opened: the
    nearest one that exists must be a directory we may write in.
    """
    if os.path.isdir(path):
        return 'it is a directory'
    if os.path.exists(path):
        return None if os.access(path, os.W_OK) else 'it is not writable'
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f'{parent} is not a directory'
    if not os.access(parent, os.W_OK | os.X_OK):
        return f'the directory {parent} is not writable'
    return None


# The plaster schemes of a plain ini file, which PasteDeploy reads.
INI_SCHEMES = ('file+ini', 'pastedeploy+ini')


def get_loader(config_uri):
    """plaster's loader of ``config_uri``.

    An ini file gets plaster_pastedeploy's loader straight away: plaster's
    search for a loader reads the metadata of every installed distribution
    (0.15 to 0.3 s here, with a few hundred), which every ``pscheduler
    --message`` would pay. Other URIs are looked up by plaster. A loader
    reads its file again at every call, so one serves every reload.
    """
    _not_a_directory(config_uri.split('#', 1)[0])
    try:
        uri = plaster.parse_uri(config_uri)
        if uri.scheme in INI_SCHEMES:
            return _existing_file(plaster_pastedeploy.Loader(uri))
        loader = plaster.get_loader(uri, protocols=['wsgi'])
    except plaster.PlasterError as exc:
        raise ExitError(f'cannot read {config_uri}: {exc}',
                        exitcodes.CONFIG) from exc
    return _existing_file(loader)


def _not_a_directory(path):
    if path and os.path.isdir(path):
        raise ExitError(f'configuration file {path} is a directory, not '
                        'an ini file', exitcodes.CONFIG)


def _existing_file(loader):
    path = loader.uri.path
    _not_a_directory(path)
    if path and not os.path.isfile(path):
        raise ExitError(f'configuration file {path} not found',
                        exitcodes.CONFIG)
    return loader


def get_sections(loader):
    try:
        return loader.get_sections()
    except Exception as exc:  # configparser's many errors
        raise ExitError(f'cannot parse {loader.uri.path}: {exc}',
                        exitcodes.CONFIG) from exc


def app_section(loader, app_name):
    """The ``[app:NAME]`` section; a ``[pipeline:NAME]`` leads to its app."""
    sections = get_sections(loader)
    if f'app:{app_name}' in sections:
        return f'app:{app_name}'
    if f'pipeline:{app_name}' in sections:
        pipeline = loader.get_settings(f'pipeline:{app_name}')
        last = (pipeline.get('pipeline') or '').split()[-1:]
        if last and f'app:{last[0]}' in sections:
            return f'app:{last[0]}'
    apps = ', '.join(s[4:] for s in sections if s.startswith('app:'))
    raise ExitError(
        f'{loader.uri.path} has no [app:{app_name}] section (nor a '
        f'[pipeline:{app_name}] ending in an app of this file); '
        f'applications in it: {apps or "none"}. Use --app-name NAME.',
        exitcodes.CONFIG)


def select_queues(settings, only_queues):
    if not only_queues:
        return settings.queues
    for queue in only_queues:
        try:
            settings.check_queue(queue)
        except InvalidQueue as exc:
            raise ExitError(f'--queue {queue}: {exc}', exitcodes.USAGE) \
                from exc
    # Keep the ini's order, so children start in a predictable order.
    return tuple(q for q in settings.queues if q in only_queues)


def require_daemon_mode(config):
    """pscheduler must not run jobs an app already runs in-process."""
    if config.settings.combined:
        raise ExitError(
            f'the application in {config.ini_path} is configured '
            '"scheduler.combined = true": its web processes run the jobs '
            'themselves, so pscheduler must not. Set it to false to use '
            'pscheduler.', exitcodes.COMBINED)
