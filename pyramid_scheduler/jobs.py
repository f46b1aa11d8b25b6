"""Build and validate a job at add time, before anything is sent.

A job travels as a plain dict (the "spec"): id, kind, func reference, args,
kwargs, trigger fields and options, all of which survive the configured
serializer. Everything a producer can check is checked here, so a bad job
fails in the request that made it, with a message that says what to do.
"""
import datetime
import math
import time
import uuid

from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from kombu import serialization
from tzlocal import get_localzone

from .errors import InvalidJob
from .references import check_allowed, func_reference
from .retrypolicy import (RETRY_OPTIONS, check_retry_options,
                          prepare_retry_options)
from .triggers import WallClockCronTrigger, WallClockIntervalTrigger

KINDS = ('async', 'date', 'interval', 'cron')
TIME_LIMIT_OPTIONS = ('time_limit', 'hard_time_limit')
JOB_OPTIONS = ('id', 'name', 'misfire_grace_time', 'coalesce',
                'max_instances') + TIME_LIMIT_OPTIONS + RETRY_OPTIONS
# Options the runtime applies itself, around a run: APScheduler never sees
# them.
RUNTIME_OPTIONS = TIME_LIMIT_OPTIONS + RETRY_OPTIONS
INTERVAL_FIELDS = ('weeks', 'days', 'hours', 'minutes', 'seconds')
CRON_FIELDS = ('year', 'month', 'day', 'week', 'day_of_week', 'hour',
               'minute', 'second')


def new_job_id():
    return uuid.uuid4().hex


# --- arguments ------------------------------------------------------------

def _normalized(value):
    """What a round trip through a text serializer is expected to give."""
    if isinstance(value, (list, tuple)):
        return [_normalized(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalized(v) for k, v in value.items()}
    return value


# Beyond this, plain data is still checked, by the round trip itself.
_PLAIN_DEPTH = 20
_PLAIN_INT = 1 << 63


def _is_plain_json(value, depth=0):
    """True for data that any JSON round trip gives back equal (tuples as
    lists): str, bool, None, ints of 64 bits, finite floats, lists, tuples
    and dicts with str keys, of exactly these types.

    kombu's JSON turns a dict of ``__type__`` and ``__value__`` into an
    object: such dicts are left to the round trip, like every other type.
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -_PLAIN_INT <= value < _PLAIN_INT
    if kind is float:
        return math.isfinite(value)
    if depth >= _PLAIN_DEPTH:
        return False
    if kind is list or kind is tuple:
        return all(_is_plain_json(item, depth + 1) for item in value)
    if kind is dict:
        return '__type__' not in value and all(
            type(key) is str and _is_plain_json(item, depth + 1)
            for key, item in value.items())
    return False


def check_round_trip(args, kwargs, serializer):
    """InvalidJob unless the arguments survive ``serializer`` unchanged."""
    if serializer == 'json' and _is_plain_json(args) and \
            _is_plain_json(kwargs):
        return  # what the round trip would find, without its cost
    round_trip(args, kwargs, serializer)


def round_trip(args, kwargs, serializer):
    """Serialize and load the arguments back; InvalidJob if they change."""
    payload = {'args': args, 'kwargs': kwargs}
    try:
        content_type, encoding, data = serialization.dumps(payload, serializer)
        back = serialization.loads(data, content_type, encoding,
                                   accept=[content_type])
    except Exception as exc:
        raise InvalidJob(
            f'the job arguments cannot be sent with the {serializer!r} '
            f'serializer ({exc}); pass plain data (str, int, float, bool, '
            'None, list, dict, datetime, date, Decimal, UUID) such as ids, '
            'and load objects inside the job') from exc
    if _normalized(back) != _normalized(payload):
        raise InvalidJob(
            f'the job arguments do not survive the {serializer!r} serializer '
            f'unchanged ({payload!r} comes back as {back!r}); pass plain data')


def normalize_args(args, kwargs):
    if args is None:
        args = []
    if kwargs is None:
        kwargs = {}
    if isinstance(args, (str, bytes)) or not isinstance(args, (list, tuple)):
        raise InvalidJob(f'args must be a list or tuple, not {args!r}')
    if not isinstance(kwargs, dict) or not all(isinstance(k, str)
                                               for k in kwargs):
        raise InvalidJob(f'kwargs must be a dict with str keys, not {kwargs!r}')
    return list(args), dict(kwargs)


# --- dates and triggers -----------------------------------------------------

def as_aware_datetime(value, field, timezone):
    """Epoch numbers, naive datetimes (local time) and aware ones."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidJob(f'{field} must be a datetime or an epoch number')
    if isinstance(value, (int, float)):
        return datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            return value.replace(tzinfo=timezone or get_localzone())
        return value
    if isinstance(value, datetime.date):
        return datetime.datetime.combine(value, datetime.time()).replace(
            tzinfo=timezone or get_localzone())
    if isinstance(value, str):
        try:
            return as_aware_datetime(datetime.datetime.fromisoformat(value),
                                     field, timezone)
        except ValueError:
            pass
    raise InvalidJob(f'{field} must be a datetime, a date, an ISO 8601 '
                     f'string or an epoch number, not {value!r}')


def build_trigger(kind, fields, timezone):
    """The APScheduler trigger for a spec's trigger fields (validates them)."""
    fields = dict(fields)
    tz = fields.pop('timezone', None) or timezone or get_localzone()
    try:
        if kind == 'date':
            return DateTrigger(run_date=fields['run_date'], timezone=tz)
        if kind == 'interval':
            return _interval_trigger(fields, tz)
        if kind == 'cron':
            crontab = fields.pop('crontab', None)
            if crontab:
                trigger = WallClockCronTrigger.from_crontab(crontab,
                                                            timezone=tz)
                if fields.get('start_date') or fields.get('end_date') \
                        or fields.get('jitter'):
                    trigger.start_date = _as_tz(fields.get('start_date'), tz) \
                        or trigger.start_date
                    trigger.end_date = _as_tz(fields.get('end_date'), tz)
                    trigger.jitter = fields.get('jitter')
                return trigger
            return WallClockCronTrigger(timezone=tz, **fields)
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        # KeyError: a message without run_date (never one from build_spec).
        raise InvalidJob(f'invalid {kind} schedule {fields!r}: {exc}') from exc
    raise InvalidJob(f'unknown job kind {kind!r}')


def _interval_trigger(fields, tz):
    """Whole days and weeks keep the time of day on the clock across a
    daylight saving change; any interval with hours, minutes or seconds is
    elapsed time ("every 2 hours" stays 2 hours apart at the change)."""
    if _whole_days_only(fields):
        lengths = {name: int(fields.pop(name) or 0)
                   for name in INTERVAL_FIELDS if name in fields}
        return WallClockIntervalTrigger(
            timezone=tz, weeks=lengths.get('weeks', 0),
            days=lengths.get('days', 0), **fields)
    trigger = IntervalTrigger(timezone=tz, **fields)
    if trigger.interval.total_seconds() <= 0:
        raise ValueError('the interval must be positive')
    return trigger


def _whole_days_only(fields):
    lengths = {name: fields[name] for name in INTERVAL_FIELDS
               if fields.get(name)}
    return bool(lengths) and set(lengths) <= {'weeks', 'days'} and all(
        type(value) in (int, float) and value > 0 and value == int(value)
        for value in lengths.values())


def _as_tz(value, tz):
    if value is None:
        return None
    from apscheduler.util import convert_to_datetime
    return convert_to_datetime(value, tz, 'date')


def check_options(options, kind):
    if not options:
        return      # the usual case: nothing to check
    allowed = JOB_OPTIONS + (('end_date', 'jitter', 'timezone')
                             if kind in ('interval', 'cron') else ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InvalidJob(f'unknown option(s) {", ".join(unknown)} for a '
                         f'{kind} job; allowed: {", ".join(allowed)}')
    _check_text_option(options, 'id')
    # APScheduler takes whole numbers only (it refuses 0.5 in the runtime).
    for name in ('misfire_grace_time', 'max_instances'):
        value = options.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(
                value, int) or value <= 0):
            raise InvalidJob(f'{name} must be a positive whole number, not '
                             f'{value!r}')
    _check_text_option(options, 'name')
    check_time_limits(options)
    check_retry_options(options)


def check_time_limits(options, time_limit=None, hard_time_limit=None):
    """``time_limit`` and ``hard_time_limit``: positive seconds, the hard
    one above the soft one; ``time_limit`` and ``hard_time_limit`` given
    here are the defaults of the settings (scheduler.time_limit, ...)."""
    for name in TIME_LIMIT_OPTIONS:
        value = options.get(name)
        if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or value <= 0):
            raise InvalidJob(f'{name} must be a positive number of seconds '
                             f'(such as 30 or 0.5), not {value!r:.80}')
    soft = options.get('time_limit', time_limit)
    hard = options.get('hard_time_limit', hard_time_limit)
    if soft is not None and hard is not None and hard <= soft:
        raise InvalidJob(
            f'hard_time_limit ({hard:g}s{_origin(options, "hard_time_limit")}'
            f') must be greater than time_limit ({soft:g}s'
            f'{_origin(options, "time_limit")}): the soft limit raises '
            'JobTimeout in the job first, the hard one replaces its process '
            'if that did not end it; pass a larger hard_time_limit or a '
            'smaller time_limit')


def _origin(options, name):
    return '' if name in options else f', from scheduler.{name}'


def scheduler_options(options):
    """A job's options as APScheduler takes them (without those the
    runtime applies: RUNTIME_OPTIONS)."""
    return {name: value for name, value in options.items()
            if name not in RUNTIME_OPTIONS}


# Options a kind of job would accept and ignore: refused, with what to do.
_IGNORED = {
    'async': {
        name: f'{name} has no effect on an async job, which runs once, as '
        'soon as a worker thread of its queue is free; it applies to '
        'deferred (date, interval, cron) jobs. To bound how many async jobs '
        'run at once, send them to a queue with fewer worker threads '
        '(scheduler.queue.NAME.executor.size)'
        for name in ('max_instances', 'coalesce', 'misfire_grace_time')},
    'date': {
        'coalesce': 'coalesce has no effect on a date job, which has one run '
        'time (nothing to merge after downtime); it applies to interval and '
        'cron jobs',
    },
}


def check_honoured(options, kind):
    """Refuse the options this kind of job would accept and ignore.

    Checked where the job is made only, not again on receipt as
    ``check_options`` is: a message an older producer sent with such an
    option is harmless and runs, instead of going to the dead letters.
    """
    ignored = _IGNORED.get(kind, {})
    for name in sorted(set(options) & set(ignored)):
        raise InvalidJob(ignored[name])


def _check_text_option(options, key):
    value = options.get(key)
    if key in options and (not isinstance(value, str) or not value.strip()):
        raise InvalidJob(f'job {key} must be a non-empty string, not '
                         f'{value!r}')


def _timezone_field(fields, timezone):
    tz = fields.get('timezone')
    if tz is None:
        return timezone
    from apscheduler.util import astimezone
    try:
        return astimezone(tz)
    except Exception as exc:
        raise InvalidJob(f'invalid timezone {tz!r}: {exc}') from exc


def build_spec(settings, kind, func, args=None, kwargs=None, queue=None,
               trigger=None, options=None, now=None, functions=None):
    """Validate a job and return ``(queue, spec)``; raises InvalidJob.

    ``functions``: a references.AllowedFunctions of these settings, which
    remembers the functions it allowed (a producer adds the same few
    functions again and again); else each is checked anew."""
    queue = settings.check_queue(queue)
    options = {k: v for k, v in (options or {}).items() if v is not None}
    prepare_retry_options(options)
    check_options(options, kind)
    check_honoured(options, kind)
    check_time_limits(options, settings.time_limit, settings.hard_time_limit)
    ref = func_reference(func)
    if functions is not None:
        functions.get(ref)
    else:
        check_allowed(ref, settings.allowed_modules)
    args, kwargs = normalize_args(args, kwargs)
    check_round_trip(args, kwargs, settings.serializer)
    fields = {k: v for k, v in (trigger or {}).items() if v is not None}
    for name in ('end_date', 'jitter', 'timezone'):
        if name in options:
            fields[name] = options.pop(name)
    timezone = _timezone_field(fields, settings.timezone)
    if 'timezone' in fields:
        fields['timezone'] = str(timezone)
    for name in ('run_date', 'start_date', 'end_date'):
        if name in fields:
            fields[name] = as_aware_datetime(fields[name], name, timezone)
    if kind != 'async':
        trigger_obj = build_trigger(kind, fields, timezone)
        _check_not_too_late(kind, trigger_obj, fields, options, settings, now)
    given_id = options.pop('id', None)
    spec = {
        'id': given_id or new_job_id(),
        'kind': kind,
        'func': ref,
        'args': args,
        'kwargs': kwargs,
        'trigger': fields,
        'options': options,
        'created_at': time.time(),
    }
    if given_id and kind == 'async':
        # An async job with an id of its own is unique while queued or
        # running (runtime.records); this token tells a redelivery of this
        # very job from a second job with the same id.
        spec['unique'] = new_job_id()
    return queue, spec


def _check_not_too_late(kind, trigger, fields, options, settings, now):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if trigger.get_next_fire_time(None, now) is not None:
        if kind != 'date':
            return
        grace = options.get('misfire_grace_time', settings.misfire_grace_time)
        late = (now - fields['run_date']).total_seconds()
        if late <= grace:
            return
        raise InvalidJob(
            f'the date {fields["run_date"].isoformat()} is {late:.0f}s in the '
            f'past, more than the misfire grace time ({grace:.0f}s), so the job '
            'would never run; pick a future date, or raise misfire_grace_time')
    raise InvalidJob(f'this {kind} schedule never fires (is end_date before '
                     f'start_date?): {fields!r}')
