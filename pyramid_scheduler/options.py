"""The table of every ``scheduler.*`` key: its parser, default and README text.

Every key is one ``Option`` in ``OPTIONS``, as gunicorn's ``config.py``
declares its ``Setting`` classes. settings.py reads the keys with it (and
warns of the unknown ones by ``KNOWN_KEYS``); tests/test_readme_settings.py
checks that README.rst documents each key as ``Option.describe`` says.
"""
import dataclasses
import textwrap

from .values import (
    DEFAULT_QUEUE, PREFIX, bad_value, parse_address, parse_bool,
    parse_compressor,
    parse_count, parse_duration, parse_grace_time, parse_list,
    parse_positive_duration, parse_positive_int, parse_queues,
    parse_serializer, parse_size, parse_text, parse_timezone, resolve_dotted)

DEFAULT_ID = 'pyramid_scheduler'
# With a secret, a signed message older than this is refused (a replay);
# it only bounds time spent in the broker: stored jobs are not affected.
DEFAULT_MAX_MESSAGE_AGE = '1d'
DEFAULT_DATABASE_NAME = 'pscheduler.sqlite'
def parse_failover(key, value):
    # The lease, fence and keep-alive derive from it (runtime.storelock.
    # Timing); below a second they would be lost to a busy database.
    seconds = parse_duration(key, value)
    if seconds < 1:
        raise bad_value(key, value, 'a duration of at least 1s (such as '
                        '"5s")')
    return seconds


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
    Option('failover', 'failover', parse_failover, '5s',
           'several hosts (or daemons) serving one queue: the most time '
           'between the death or partition of the owner of its job store '
           'and another taking over its deferred jobs; at least 1s (see '
           '"Several machines")'),
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
    Option('outbox.path', 'outbox_path', parse_text, None,
           'the outbox: an SQLite file on the web host that keeps the jobs of'
           ' committed transactions until the broker has them',
           shown_default='``pscheduler-outbox.sqlite`` beside the database'),
    Option('outbox.retry_for', 'outbox_retry_for', parse_duration, '1d',
           'how long it tries; then a dead letter and an ERROR'),
    Option('allowed_modules', None, parse_list, '',
           'more dotted module prefixes whose functions may run as jobs '
           "(``myapp_tasks otherlib.jobs``), besides the application's own "
           'package: nothing else runs. The function must be defined in one '
           'of them (``myapp.jobs:os.system`` is refused); checked when '
           'adding, on receipt and again before running. The standard '
           "library's process, file, import and network modules (``os``, "
           '``subprocess``, ``builtins``, ...) are refused unless named '
           'themselves. ``*`` allows any other module: dangerous, see '
           '"Security"',
           shown_default="the application's package only"),
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
           'failed boots in a row (a child\'s own failures, not kills from '
           'outside) after which pscheduler gives up'),
    Option('max_deliveries', 'max_deliveries', parse_positive_int, '3',
           'crashes of its process after which an async job is dead-lettered'),
    Option('time_limit', 'time_limit', parse_positive_duration, None,
           'the ``time_limit`` of jobs added without one: a job running '
           'longer gets ``JobTimeout`` raised in its thread (see "Time '
           'limits")'),
    Option('hard_time_limit', 'hard_time_limit', parse_positive_duration,
           None,
           'the ``hard_time_limit`` of jobs added without one: a job running '
           'longer fails and its process is replaced (see "Time limits"); '
           'above ``scheduler.time_limit``'),
    Option('retry.retries', 'retries', parse_count, '0',
           'how many times a failed run is tried again, for jobs that do not '
           'say (their ``retries`` option); see "Retries"'),
    Option('retry.backoff', 'retry_backoff', parse_duration, '1s',
           'the base of the exponential backoff between retries: retry n '
           'waits a random time between 0 and base x 2^(n-1)'),
    Option('retry.backoff_max', 'retry_backoff_max', parse_duration, '10m',
           'the most a backoff delay between retries may be'),
    Option('results.ttl', 'results_ttl', parse_positive_duration, '1d',
           'how long the status record of a finished job (its state, result '
           'or error: ``scheduler.job_status``) is kept; older ones are '
           'deleted by housekeeping'),
    Option('admin.timeout', 'admin_timeout', parse_duration, '5s',
           'how long ``pscheduler --message`` waits for answers'),
    Option('metrics.bind', 'metrics_bind', parse_address, None,
           'where the pscheduler master serves its Prometheus metrics '
           '(``HOST:PORT``, such as ``127.0.0.1:9464``; the path is '
           '``/metrics``); none: no metrics server (see Metrics)'),
    Option('dashboard.prefix', None, parse_text, '/scheduler',
           'the URL path under which ``config.include('
           "'pyramid_scheduler.dashboard')`` mounts the dashboard (see "
           '"Dashboard")'),
    Option('dashboard.permission', None, parse_text, 'scheduler.dashboard',
           "the permission the application's security policy must grant to "
           'see and use the dashboard. Without a security policy the '
           'dashboard refuses every request (403) unless this is '
           '``__no_permission_required__``, which opens it to everyone '
           '(development only)'),
)
# Every key we understand (without the prefix).
KNOWN_KEYS = tuple(option.key for option in OPTIONS)


def find_option(key):
    return next(option for option in OPTIONS if option.key == key)
