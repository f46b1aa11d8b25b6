"""Parse and validate the ``scheduler.*`` settings of an ini file.

Everything here works on a plain dict, so the daemon's master can validate an
ini without importing the application, and tests need no Configurator.
"""
import dataclasses
import difflib
import logging
import os
import re

from kombu import compression, serialization
from pyramid.exceptions import ConfigurationError
from pyramid.path import DottedNameResolver
from pyramid.settings import asbool, aslist

from . import extras
from .errors import InvalidQueue

log = logging.getLogger(__name__)

PREFIX = 'scheduler.'
DEFAULT_QUEUE = 'jobs'
# With a secret, a signed message older than this is refused (a replay);
# it only bounds time spent in the broker: stored jobs are not affected.
DEFAULT_MAX_MESSAGE_AGE = '1d'
DEFAULT_DATABASE_NAME = 'pscheduler.sqlite'

# Every key we understand (without the prefix). Keys under the pass-through
# prefixes below are handed on unchanged.
KNOWN_KEYS = (
    'combined', 'queues', 'id', 'database',
    'broker.url', 'broker.serializer', 'broker.compressor',
    'broker.send_timeout', 'broker.polling_interval',
    'broker.visibility_timeout',
    'broker.secret', 'broker.secret.previous', 'broker.secret.file',
    'broker.secret.env', 'broker.max_message_age',
    'housekeeping', 'housekeeping.append',
    'jobstore.url', 'jobstore.default.class',
    'misfire_grace_time', 'coalesce', 'timezone', 'delegator',
    'executor.size', 'processes', 'transactional', 'allowed_modules',
    'shutdown_timeout', 'child.memory_limit', 'child.heartbeat_timeout',
    'child.boot_failures', 'admin.timeout',
)
PASS_THROUGH_PREFIXES = ('apscheduler.', 'jobstore.default.', 'queue.')

_DURATION_RE = re.compile(
    r'^\s*(?:(?P<d>\d+(?:\.\d+)?)\s*d)?\s*(?:(?P<h>\d+(?:\.\d+)?)\s*h)?'
    r'\s*(?:(?P<m>\d+(?:\.\d+)?)\s*m)?\s*(?:(?P<s>\d+(?:\.\d+)?)\s*s?)?\s*$')
_SIZE_RE = re.compile(r'^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$', re.I)
_QUEUE_NAME_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.-]*$')


def bad_value(key, value, allowed):
    return ConfigurationError(
        f'invalid value {value!r} for setting "{PREFIX}{key}": '
        f'expected {allowed}')


def parse_duration(key, value):
    """``'24h'``, ``'30m'``, ``'1d 12h'``, ``'90'`` (seconds) -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION_RE.match(str(value))
        if not match or not any(match.groupdict().values()):
            raise bad_value(key, value,
                            'a duration such as "90", "30s", "15m", "24h", '
                            '"1d" or "1h 30m"')
        parts = {k: float(v) for k, v in match.groupdict().items() if v}
        seconds = (parts.get('d', 0) * 86400 + parts.get('h', 0) * 3600
                   + parts.get('m', 0) * 60 + parts.get('s', 0))
    if seconds < 0:
        raise bad_value(key, value, 'a duration that is not negative')
    return seconds


def parse_grace_time(key, value):
    """A duration in whole seconds, at least 1 (what APScheduler takes)."""
    seconds = parse_duration(key, value)
    if seconds < 1 or seconds != int(seconds):
        raise bad_value(key, value, 'a whole number of seconds, at least 1 '
                                    '(such as "30", "15m" or "1h")')
    return int(seconds)


def parse_size(key, value):
    """``'512MB'``, ``'1GiB'``, ``'1048576'`` -> bytes."""
    match = _SIZE_RE.match(str(value))
    if not match:
        raise bad_value(key, value,
                        'a size such as "512MB", "1GB", "1GiB" or a byte count')
    number, unit = float(match.group(1)), (match.group(2) or '').lower()
    base = 1024 if 'i' in unit else 1000
    power = {'': 0, 'b': 0, 'k': 1, 'm': 2, 'g': 3, 't': 4}[unit[:1]]
    return int(number * base ** power)


def parse_bool(key, value):
    text = str(value).strip().lower()
    if text not in ('true', 'yes', 'on', 'y', 't', '1',
                    'false', 'no', 'off', 'n', 'f', '0'):
        raise bad_value(key, value, 'a boolean: true or false')
    return asbool(text)


def parse_positive_int(key, value):
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number < 1:
        raise bad_value(key, value, 'a whole number of at least 1')
    return number


def resolve_dotted(key, value):
    try:
        return DottedNameResolver().resolve(str(value).strip())
    except Exception as exc:
        raise bad_value(key, value, f'an importable dotted name ({exc})')


def parse_queues(key, value):
    queues = aslist(value) if value is not None else [DEFAULT_QUEUE]
    if not queues:
        raise bad_value(key, value, 'at least one queue name')
    for name in queues:
        if not _QUEUE_NAME_RE.match(name):
            raise bad_value(key, name, 'queue names of letters, digits, '
                                       '"_", "-" and "."')
    if len(set(queues)) != len(queues):
        raise bad_value(key, value, 'queue names without duplicates')
    return tuple(queues)


def parse_serializer(key, value):
    name = str(value).strip()
    try:
        serialization.registry._encoders[name]
    except KeyError:
        known = ', '.join(sorted(serialization.registry._encoders))
        raise bad_value(key, value, f'one of the kombu serializers: {known}')
    return name


def parse_compressor(key, value):
    name = str(value).strip()
    if not name or name.lower() == 'none':
        return None
    try:
        compression.get_encoder(name)
    except Exception:
        known = ', '.join(sorted(compression.encoders()))
        raise bad_value(key, value, f'none or one of: {known}')
    return name


def parse_timezone(key, value):
    from apscheduler.util import astimezone
    try:
        return astimezone(str(value).strip())
    except Exception:
        raise bad_value(key, value, 'an IANA time zone name such as '
                                    '"Europe/Paris" or "UTC"')


def embedded_database_path(raw, here):
    """Where the embedded SQLite file lives: beside the ini by default."""
    if raw:
        return os.path.abspath(os.path.expanduser(raw))
    return os.path.join(os.path.abspath(here or os.getcwd()),
                        DEFAULT_DATABASE_NAME)


def check_installed(key, url, problem):
    """Refuse a URL whose optional extra or driver is missing."""
    if problem:
        from .broker import redact_url
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


@dataclasses.dataclass(frozen=True)
class SchedulerSettings:
    """The validated ``scheduler.*`` settings; see README.rst for each."""
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
    admin_timeout: float
    apscheduler_options: dict
    queue_settings: dict

    def __repr__(self):
        # Reprs end up in logs and tracebacks: never the secrets (repr=False
        # above) nor a password in a URL.
        from .broker import redact_url
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
    database goes when no path is configured.
    """
    def reference(key, value):
        # The pscheduler master must not import the application: it passes
        # import_references=False and keeps the dotted names as text.
        if not value:
            return None
        if import_references:
            return resolve_dotted(key, value)
        return str(value).strip()

    conf = strip_prefix(settings)
    warn_unknown_keys(conf)
    here = here or settings.get('here')
    get = conf.get

    queues = parse_queues('queues', get('queues'))
    database_path = embedded_database_path(get('database'), here)
    sqlite_url = 'sqlite:///' + database_path
    broker_url = (get('broker.url') or '').strip()
    embedded = not broker_url
    default_size = parse_positive_int('executor.size', get('executor.size', 4))
    default_processes = parse_positive_int('processes', get('processes', 1))
    queue_settings = {
        name: QueueSettings(
            name,
            executor_size=parse_positive_int(
                f'queue.{name}.executor.size',
                get(f'queue.{name}.executor.size', default_size)),
            processes=parse_positive_int(
                f'queue.{name}.processes',
                get(f'queue.{name}.processes', default_processes)))
        for name in queues}
    for key in conf:
        if key.startswith('queue.') and key.split('.')[1] not in queues:
            log.warning('setting "%s%s" names a queue that is not in '
                        '"%squeues" (%s)', PREFIX, key, PREFIX,
                        ' '.join(queues))

    if not embedded:
        check_installed('broker.url', broker_url,
                        extras.missing_broker_extra(broker_url))
    jobstore_url = (get('jobstore.url') or sqlite_url).strip()
    check_installed('jobstore.url', jobstore_url,
                    extras.missing_database_driver(jobstore_url))

    jobstore_class = get('jobstore.default.class')
    housekeeping_append = get('housekeeping.append')
    delegator = get('delegator')

    from .signing import load_secrets
    return SchedulerSettings(
        combined=parse_bool('combined', get('combined', 'false')),
        queues=queues,
        scheduler_id=str(get('id') or 'pyramid_scheduler').strip(),
        database_path=database_path,
        broker_url=broker_url or sqlite_url,
        embedded=embedded,
        serializer=parse_serializer('broker.serializer',
                                    get('broker.serializer', 'json')),
        compressor=parse_compressor('broker.compressor',
                                    get('broker.compressor', 'none')),
        send_timeout=parse_duration('broker.send_timeout',
                                    get('broker.send_timeout', '2s')),
        polling_interval=parse_duration(
            'broker.polling_interval', get('broker.polling_interval', '2s')),
        visibility_timeout=parse_duration(
            'broker.visibility_timeout',
            get('broker.visibility_timeout', '1h')),
        secrets=load_secrets(conf, bad_value),
        max_message_age=parse_duration(
            'broker.max_message_age',
            get('broker.max_message_age', DEFAULT_MAX_MESSAGE_AGE)),
        housekeeping_interval=parse_duration('housekeeping',
                                             get('housekeeping', '24h')),
        housekeeping_append=reference('housekeeping.append',
                                      housekeeping_append),
        jobstore_url=jobstore_url,
        jobstore_class=reference('jobstore.default.class', jobstore_class),
        jobstore_options={k[len('jobstore.default.'):]: v
                          for k, v in conf.items()
                          if k.startswith('jobstore.default.')
                          and k != 'jobstore.default.class'},
        misfire_grace_time=parse_grace_time('misfire_grace_time',
                                            get('misfire_grace_time', '1h')),
        coalesce=parse_bool('coalesce', get('coalesce', 'true')),
        timezone=parse_timezone('timezone', get('timezone', 'local'))
        if get('timezone') else None,
        delegator=reference('delegator', delegator),
        transactional=parse_bool('transactional', get('transactional', 'true')),
        allowed_modules=tuple(aslist(get('allowed_modules', ''))),
        shutdown_timeout=parse_duration('shutdown_timeout',
                                        get('shutdown_timeout', '30s')),
        child_memory_limit=(parse_size('child.memory_limit',
                                       get('child.memory_limit'))
                            if get('child.memory_limit') else None),
        child_heartbeat_timeout=parse_duration(
            'child.heartbeat_timeout', get('child.heartbeat_timeout', '60s')),
        child_boot_failures=parse_positive_int(
            'child.boot_failures', get('child.boot_failures', 5)),
        admin_timeout=parse_duration('admin.timeout',
                                     get('admin.timeout', '5s')),
        apscheduler_options={k: v for k, v in conf.items()
                             if k.startswith('apscheduler.')},
        queue_settings=queue_settings,
    )
