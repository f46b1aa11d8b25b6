"""Parse and validate the ``scheduler.*`` settings of an ini file.

Everything here works on a plain dict, so the daemon's master can validate an
ini without importing the application, and tests need no Configurator.

Every key is one ``Option`` in ``OPTIONS``, as gunicorn's ``config.py``
declares its ``Setting`` classes: the table gives each key's parser, default
and README text, and from it come the validation, ``KNOWN_KEYS`` (for the
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
import textwrap

from pyramid.exceptions import ConfigurationError

from . import extras
from .errors import InvalidQueue
from .secretsource import load_secrets
from .storesettings import (check_stores_apart, default_jobstore_options,
                            jobstore_arguments, queue_jobstore_options)
from .values import (  # noqa: F401 (the parsers were importable from here)
    DEFAULT_QUEUE, PREFIX, bad_value, parse_bool, parse_compressor,
    parse_duration, parse_grace_time, parse_list, parse_positive_int,
    parse_queues, parse_serializer, parse_size, parse_text, parse_timezone,
    redact_url, resolve_dotted)

log = logging.getLogger(__name__)

DEFAULT_ID = 'pyramid_scheduler'
# With a secret, a signed message older than this is refused (a replay);
# it only bounds time spent in the broker: stored jobs are not affected.
DEFAULT_MAX_MESSAGE_AGE = '1d'
DEFAULT_DATABASE_NAME = 'pscheduler.sqlite'
# Keys under these prefixes are handed on unchanged (queue.NAME.* is read
# per queue by _queue_fields).
PASS_THROUGH_PREFIXES = ('apscheduler.', 'jobstore.default.', 'queue.')


def parse_scheduler_id(key, value):
    # Empty means the default: queue names and tables start with the id.
    return str(value or DEFAULT_ID).strip()


@dataclasses.dataclass(frozen=True)
class Option:
    """One ``scheduler.*`` key: how it is read and how README.rst shows it."""
    key: str        # without the "scheduler." prefix
    # The SchedulerSettings field it fills by itself; None: a section of
    # parse_settings reads it together with other keys.
    field: str
    # values.parse_*(key, value); None: its section reads the raw text.
    parse: object
    # The text used when the key is absent; None: an optional key, absent or
    # empty gives None.
    default: object
    help: str       # README.rst's description (reStructuredText)
    # README.rst's "(default: ...)" when ``default`` does not say it.
    shown_default: str = None

    def read(self, conf, import_references=True):
        value = conf.get(self.key, self.default)
        if self.default is None and not value:
            return None
        parse = self.parse
        if parse is resolve_dotted and not import_references:
            # The pscheduler master must not import the application: it
            # keeps dotted names as text (the children import them).
            parse = parse_text
        return parse(self.key, value)

    @property
    def documented_default(self):
        if self.shown_default is not None:
            return self.shown_default
        return 'none' if self.default is None else f'``{self.default}``'

    def describe(self):
        """This key's entry in README.rst's Settings section."""
        body = textwrap.fill(self.help, width=79, initial_indent='    ',
                             subsequent_indent='    ', break_long_words=False,
                             break_on_hyphens=False)
        return (f'``{PREFIX}{self.key}`` (default: '
                f'{self.documented_default})\n{body}\n')


OPTIONS = (
    Option('combined', 'combined', parse_bool, 'false',
           'run jobs in the web process (development; see below)'),
    Option('queues', None, parse_queues, DEFAULT_QUEUE,
           'space-separated queue names; the first is the default'),
    Option('id', 'scheduler_id', parse_scheduler_id, DEFAULT_ID,
           'prefix of broker queue names and job store tables: two '
           'applications sharing a broker need different ids'),
    Option('database', None, None, None,
           'the embedded SQLite file (messages and job store) when no broker '
           'URL is set',
           shown_default=f'``%(here)s/{DEFAULT_DATABASE_NAME}``'),
    Option('broker.url', None, None, None,
           'a kombu URL: ``redis://127.0.0.1:6379/0``, '
           '``pyamqp://user:pw@host//``',
           shown_default='(embedded SQLite)'),
    Option('broker.serializer', 'serializer', parse_serializer, 'json',
           'any kombu serializer (``json``, ``pickle``, ``yaml``, '
           '``msgpack`` when installed)'),
    Option('broker.compressor', 'compressor', parse_compressor, None,
           '``zlib``, ``bzip2``, ... (kombu compressors)'),
    Option('broker.send_timeout', 'send_timeout', parse_duration, '2s',
           'the most a producer waits for the broker before raising '
           '``BrokerUnavailable``'),
    Option('broker.visibility_timeout', 'visibility_timeout', parse_duration,
           '1h',
           'Redis only: after this, kombu hands an unacknowledged message to '
           'a consumer again; it must be longer than the longest async job '
           '(see "Delivery guarantees")'),
    Option('broker.polling_interval', 'polling_interval', parse_duration,
           '2s',
           'embedded transport only: producers wake consumers through a unix '
           'socket beside the database; this is the poll that catches a lost '
           'wake-up (say, web app and pscheduler running as users who cannot '
           "reach each other's sockets)"),
    Option('broker.secret', None, None, None,
           'sign and verify every message (HMAC-SHA256); at least 16 '
           'characters'),
    Option('broker.secret.file', None, None, None,
           '... or read the secret from this file'),
    Option('broker.secret.env', None, None, None,
           '... or from this environment variable'),
    Option('broker.secret.previous', None, None, None,
           'older secrets still accepted (rotation)'),
    Option('broker.max_message_age', 'max_message_age', parse_duration,
           DEFAULT_MAX_MESSAGE_AGE,
           'refuse signed messages older than this (replays); ``0`` turns '
           'the check off. Messages that waited longer in the broker '
           '(pscheduler down for more than a day) go to the dead-letter queue',
           shown_default=f'``{DEFAULT_MAX_MESSAGE_AGE}`` with a secret'),
    Option('jobstore.url', None, None, None,
           'SQLAlchemy URL of the job stores, e.g. '
           '``postgresql+psycopg2://user@host/db``',
           shown_default='the embedded file'),
    Option('jobstore.default.class', 'jobstore_class', resolve_dotted, None,
           'another APScheduler job store class (dotted name); '
           '``scheduler.jobstore.default.*`` are its arguments, ``{queue}`` '
           'and ``{id}`` in them replaced by the queue\'s name and '
           '``scheduler.id``. Each queue needs a store of its own: with two '
           'or more queues, arguments that are the same for two queues are '
           'refused (see "Job stores")',
           shown_default='SQLAlchemyJobStore'),
    Option('misfire_grace_time', 'misfire_grace_time', parse_grace_time, '1h',
           'how late a deferred run may still run'),
    Option('coalesce', 'coalesce', parse_bool, 'true',
           'after downtime, run a periodic job once, not per missed run'),
    Option('timezone', 'timezone', parse_timezone, None,
           'time zone of naive datetimes and cron fields',
           shown_default='local time zone'),
    Option('executor.size', None, parse_positive_int, '4',
           'worker threads (and prefetched messages) per queue'),
    Option('processes', None, parse_positive_int, '1',
           'pscheduler children per queue. All of them run the queue\'s async '
           'jobs; the first alone owns its job store (see "Several processes '
           'per queue")'),
    Option('transactional', 'transactional', parse_bool, 'true',
           "send after the request's transaction commits"),
    Option('allowed_modules', 'allowed_modules', parse_list, '',
           'dotted module prefixes whose functions may be scheduled: the '
           'function must be defined in one of them (``myapp.jobs:os.system`` '
           'is refused); checked when adding, on receipt and again before '
           'running',
           shown_default='any'),
    Option('delegator', 'delegator', resolve_dotted, None,
           'dotted callable ``delegator(func, args, kwargs)`` that runs every '
           'job (to wrap it: error reporting, sessions)'),
    Option('housekeeping', 'housekeeping_interval', parse_duration, '24h',
           'interval of housekeeping (on the embedded SQLite file: releases '
           'leases of dead processes, deletes reply queues older than a day), '
           'then ``scheduler.housekeeping.append``; ``0`` turns it off'),
    Option('housekeeping.append', 'housekeeping_append', resolve_dotted, None,
           'dotted callable run after each housekeeping'),
    Option('shutdown_timeout', 'shutdown_timeout', parse_duration, '30s',
           'how long a stopping child lets running jobs finish'),
    Option('child.memory_limit', 'child_memory_limit', parse_size, None,
           'RSS (``512MB``, ``1GiB``) above which pscheduler replaces a child '
           'gracefully'),
    Option('child.heartbeat_timeout', 'child_heartbeat_timeout',
           parse_duration, '60s',
           'a child silent this long is killed and replaced'),
    Option('child.boot_failures', 'child_boot_failures', parse_positive_int,
           '5',
           'failed boots in a row after which pscheduler gives up'),
    Option('max_deliveries', 'max_deliveries', parse_positive_int, '3',
           'crashes of its process after which an async job is dead-lettered'),
    Option('admin.timeout', 'admin_timeout', parse_duration, '5s',
           'how long ``pscheduler --message`` waits for answers'),
)
# Every key we understand (without the prefix).
KNOWN_KEYS = tuple(option.key for option in OPTIONS)


def find_option(key):
    return next(option for option in OPTIONS if option.key == key)


def embedded_database_path(raw, here):
    """Where the embedded SQLite file lives: beside the ini by default."""
    if raw:
        return os.path.abspath(os.path.expanduser(raw))
    return os.path.join(os.path.abspath(here or os.getcwd()),
                        DEFAULT_DATABASE_NAME)


def check_installed(key, url, problem):
    """Refuse a URL whose optional extra or driver is missing."""
    if problem:
        raise ConfigurationError(
            f'setting "{PREFIX}{key}" is {redact_url(url)}: {problem}')


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
    allowed_modules: tuple
    shutdown_timeout: float
    child_memory_limit: int
    child_heartbeat_timeout: float
    child_boot_failures: int
    max_deliveries: int
    admin_timeout: float
    apscheduler_options: dict
    queue_settings: dict

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


def parse_settings(settings, here=None, import_references=True):
    """Validate ``settings`` (a Pyramid settings dict) -> SchedulerSettings.

    ``here`` is the directory of the ini file, where the embedded SQLite
    database goes when no path is configured. The pscheduler master passes
    ``import_references=False``: it must not import the application, so
    dotted names (delegator, ...) stay text there.
    """
    conf = strip_prefix(settings)
    warn_unknown_keys(conf)
    parsed = SchedulerSettings(
        **_queue_fields(conf),
        **_storage_fields(conf, here or settings.get('here')),
        **_option_fields(conf, import_references),
        secrets=load_secrets(conf),
        apscheduler_options={key: value for key, value in conf.items()
                             if key.startswith('apscheduler.')})
    check_stores_apart(parsed, conf)
    return parsed


def _option_fields(conf, import_references):
    """Every field that one key fills by itself, as OPTIONS says."""
    return {option.field: option.read(conf, import_references)
            for option in OPTIONS if option.field}


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
                        extras.missing_broker_extra(broker_url))
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
