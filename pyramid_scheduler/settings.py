"""Parse and validate the ``scheduler.*`` settings of an ini file.

Everything here works on a plain dict, so the daemon's master can validate an
ini without importing the application, and tests need no Configurator.

Every key is one ``Option`` in ``options.OPTIONS`` (its parser, default
and README text); from it come the validation, ``KNOWN_KEYS`` (for the
unknown-key warning) and the check that README.rst documents every key
(tests/test_readme_settings.py). Keys that only make sense together (the
storage URLs, the secret sources, the queues and their per-queue keys) are
read by the short sections of ``parse_settings``; each queue's job store
arguments, and the check that no two queues share a store, by storesettings.
"""
import dataclasses
import difflib
import logging
import os

from pyramid.exceptions import ConfigurationError

from . import extras
from .errors import InvalidQueue
from .options import (  # noqa: F401 (OPTIONS was importable from here)
    DEFAULT_DATABASE_NAME, KNOWN_KEYS, OPTIONS, Option, find_option)
from .references import AllowedModules, valid_module_entry
from .secretsource import load_secrets
from .storesettings import (check_stores_apart, default_jobstore_options,
                            jobstore_arguments, queue_jobstore_options)
from .values import (  # noqa: F401 (the parsers were importable from here)
    DEFAULT_QUEUE, PREFIX, bad_value, parse_bool, parse_compressor,
    parse_duration, parse_grace_time, parse_list, parse_positive_int,
    parse_queues, parse_serializer, parse_size, parse_text, parse_timezone,
    check_installed, redact_url, resolve_dotted)

log = logging.getLogger(__name__)

# Keys under these prefixes are handed on unchanged (queue.NAME.* is read
# per queue by _queue_fields).
PASS_THROUGH_PREFIXES = ('apscheduler.', 'jobstore.default.', 'queue.')


def embedded_database_path(raw, here):
    """Where the embedded SQLite file lives: beside the ini by default."""
    if raw:
        return os.path.abspath(os.path.expanduser(raw))
    return os.path.join(os.path.abspath(here or os.getcwd()),
                        DEFAULT_DATABASE_NAME)


def warn_unknown_keys(conf):
    for key in conf:
        if key in KNOWN_KEYS or key.startswith(PASS_THROUGH_PREFIXES):
            continue
        close = difflib.get_close_matches(key, KNOWN_KEYS, n=1, cutoff=0.5)
        hint = f'; did you mean "{PREFIX}{close[0]}"?' if close else ''
        log.warning('unknown setting "%s%s" is ignored%s', PREFIX, key, hint)


def strip_prefix(settings, prefix=PREFIX):
    return {key[len(prefix):]: value for key, value in settings.items()
            if key.startswith(prefix)}


@dataclasses.dataclass(frozen=True)
class QueueSettings:
    name: str
    executor_size: int
    # pscheduler children serving the queue: all take its async jobs; the
    # first alone owns its job store (deferred jobs, cancels, admin).
    processes: int = 1
    # ``queue.NAME.jobstore.*``: arguments of jobstore.default.class for this
    # queue only, over ``jobstore.default.*``; (name, value) pairs.
    jobstore_options: tuple = ()


@dataclasses.dataclass(frozen=True)
class SchedulerSettings:
    """The validated ``scheduler.*`` settings; see OPTIONS for each."""
    combined: bool
    queues: tuple
    scheduler_id: str
    database_path: str
    broker_url: str
    embedded: bool
    serializer: str
    compressor: object
    send_timeout: float
    polling_interval: float
    visibility_timeout: float
    secrets: tuple = dataclasses.field(repr=False)
    max_message_age: float
    housekeeping_interval: float
    housekeeping_append: object
    jobstore_url: str
    jobstore_class: object
    jobstore_options: dict
    misfire_grace_time: float
    coalesce: bool
    timezone: object
    delegator: object
    transactional: bool
    outbox_path: str
    outbox_retry_for: float
    allowed_modules: object  # references.AllowedModules
    shutdown_timeout: float
    child_memory_limit: int
    child_heartbeat_timeout: float
    child_boot_failures: int
    max_deliveries: int
    time_limit: float
    hard_time_limit: float
    retries: int
    retry_backoff: float
    retry_backoff_max: float
    results_ttl: float
    admin_timeout: float
    metrics_bind: tuple     # (host, port), or None
    apscheduler_options: dict
    queue_settings: dict
    failover: float = 5.0

    def __repr__(self):
        # Reprs end up in logs and tracebacks: never the secrets (repr=False
        # above) nor a password in a URL.
        shown = []
        for field in dataclasses.fields(self):
            if field.repr:
                value = getattr(self, field.name)
                if field.name in ('broker_url', 'jobstore_url'):
                    value = redact_url(value)
                shown.append(f'{field.name}={value!r}')
        return f'{type(self).__name__}({", ".join(shown)})'

    @property
    def default_queue(self):
        return self.queues[0]

    def executor_size(self, queue):
        return self.queue_settings[queue].executor_size

    def processes(self, queue):
        return self.queue_settings[queue].processes

    def jobstore_arguments(self, queue):
        """The arguments of ``queue``'s instance of ``jobstore_class``:
        ``jobstore.default.*``, then ``queue.NAME.jobstore.*``, with
        ``{queue}`` and ``{id}`` in text values replaced."""
        return jobstore_arguments(
            self.jobstore_options, self.queue_settings[queue].jobstore_options,
            queue, self.scheduler_id)

    def check_queue(self, queue):
        """Return the queue name to use, or raise InvalidQueue."""
        if queue is None:
            return self.default_queue
        if queue not in self.queues:
            raise InvalidQueue(
                f'unknown queue {queue!r}: the configured queues are '
                f'{", ".join(self.queues)} (setting "{PREFIX}queues")')
        return queue


def parse_settings(settings, here=None, import_references=True,
                   app_package=None):
    """Validate ``settings`` (a Pyramid settings dict) -> SchedulerSettings.

    ``here`` is the directory of the ini file, where the embedded SQLite
    database goes when no path is configured. The pscheduler master passes
    ``import_references=False``: it must not import the application, so
    dotted names (delegator, ...) stay text there. ``app_package``: the
    app's Configurator package, whose functions may run (AllowedModules).
    """
    conf = strip_prefix(settings)
    warn_unknown_keys(conf)
    parsed = SchedulerSettings(
        **_queue_fields(conf),
        **_storage_fields(conf, here or settings.get('here')),
        **_option_fields(conf, import_references),
        allowed_modules=_allowed_modules(conf, app_package),
        secrets=load_secrets(conf),
        apscheduler_options={key: value for key, value in conf.items()
                             if key.startswith('apscheduler.')})
    check_stores_apart(parsed, conf)
    check_time_limit_defaults(parsed)
    return parsed


def check_time_limit_defaults(parsed):
    soft, hard = parsed.time_limit, parsed.hard_time_limit
    if soft is not None and hard is not None and hard <= soft:
        raise bad_value('hard_time_limit', f'{hard:g}s',
                        f'a duration above scheduler.time_limit ({soft:g}s): '
                        'the soft limit comes first')


def _option_fields(conf, import_references):
    """Every field that one key fills by itself, as OPTIONS says."""
    return {option.field: option.read(conf, import_references)
            for option in OPTIONS if option.field}


def _allowed_modules(conf, app_package):
    """The application's package and ``allowed_modules``: what may run."""
    entries = find_option('allowed_modules').read(conf)
    if not all(map(valid_module_entry, entries)):
        raise bad_value('allowed_modules', ' '.join(entries),
                        'dotted module names, or *')
    return AllowedModules(modules=entries, app_package=app_package)


def _queue_fields(conf):
    """The queues, and each one's ``queue.NAME.executor.size`` and
    ``queue.NAME.processes`` (by default the global keys)."""
    queues = find_option('queues').read(conf)
    default_size = find_option('executor.size').read(conf)
    default_processes = find_option('processes').read(conf)
    queue_settings = {
        name: QueueSettings(
            name,
            executor_size=_per_queue(conf, name, 'executor.size',
                                     default_size),
            processes=_per_queue(conf, name, 'processes', default_processes),
            jobstore_options=queue_jobstore_options(conf, name))
        for name in queues}
    for key in conf:
        if key.startswith('queue.') and key.split('.')[1] not in queues:
            log.warning('setting "%s%s" names a queue that is not in '
                        '"%squeues" (%s)', PREFIX, key, PREFIX,
                        ' '.join(queues))
    return {'queues': queues, 'queue_settings': queue_settings}


def _per_queue(conf, queue, name, default):
    key = f'queue.{queue}.{name}'
    return parse_positive_int(key, conf.get(key, default))


def _storage_fields(conf, here):
    """Where messages and jobs are kept: the embedded SQLite file unless
    ``broker.url`` / ``jobstore.url`` say otherwise. A URL whose extra or
    driver is not installed is refused here, before anything runs."""
    database_path = embedded_database_path(conf.get('database'), here)
    sqlite_url = 'sqlite:///' + database_path
    broker_url = (conf.get('broker.url') or '').strip()
    if broker_url:
        check_installed('broker.url', broker_url,
                        extras.broker_url_problem(broker_url))
    jobstore_url = (conf.get('jobstore.url') or sqlite_url).strip()
    check_installed('jobstore.url', jobstore_url,
                    extras.missing_database_driver(jobstore_url))
    return {
        'database_path': database_path,
        'broker_url': broker_url or sqlite_url,
        'embedded': not broker_url,
        'jobstore_url': jobstore_url,
        'jobstore_options': default_jobstore_options(conf),
    }
