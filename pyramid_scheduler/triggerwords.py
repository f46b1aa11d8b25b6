"""A trigger in words: ``"every day at 09:00 Europe/Paris"``, not a repr.

:func:`describe` turns APScheduler 3's date, interval and cron triggers,
and ours (triggers.WallClockIntervalTrigger, WallClockCronTrigger), into
the English a person reads on the dashboard and in ``pscheduler --message
job``. A cron expression with no short reading is told field by field
("cron: minute 0-30/10, hour 9-17, day of week mon-fri").
"""
import datetime

from apscheduler.triggers.calendarinterval import CalendarIntervalTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from apscheduler.util import timezone_repr

DAY_NAMES = {'mon': 'Monday', 'tue': 'Tuesday', 'wed': 'Wednesday',
             'thu': 'Thursday', 'fri': 'Friday', 'sat': 'Saturday',
             'sun': 'Sunday'}
MONTH_NAMES = ('January', 'February', 'March', 'April', 'May', 'June',
               'July', 'August', 'September', 'October', 'November',
               'December')
# Cron fields as a person names them, from the largest.
FIELD_WORDS = (('year', 'year'), ('month', 'month'), ('week', 'week'),
               ('day', 'day'), ('day_of_week', 'day of week'),
               ('hour', 'hour'), ('minute', 'minute'),
               ('second', 'second'))


def describe(trigger):
    """``trigger`` in English; its str() for a trigger we do not know."""
    if isinstance(trigger, DateTrigger):
        return f'once at {when(trigger.run_date)}'
    if isinstance(trigger, CalendarIntervalTrigger):
        return _calendar_words(trigger) + _until(trigger)
    if isinstance(trigger, IntervalTrigger):
        return f'every {duration(trigger.interval)}' + _until(trigger)
    if isinstance(trigger, CronTrigger):
        return cron_words(trigger) + _until(trigger)
    return str(trigger)


def when(moment):
    """``2026-12-01 09:00 Europe/Paris`` (seconds only when not 0)."""
    if moment is None:
        return 'never'
    text = moment.strftime('%Y-%m-%d %H:%M' + (':%S' if moment.second
                                                 else ''))
    return f'{text} {zone_name(moment.tzinfo)}'.rstrip()


def zone_name(zone):
    if zone is None:
        return ''
    if zone is datetime.timezone.utc:
        return 'UTC'
    return timezone_repr(zone)


def duration(delta):
    """``timedelta(seconds=90)`` -> ``'1 minute 30 seconds'``."""
    seconds = int(delta.total_seconds())
    if seconds <= 0:
        return f'{delta.total_seconds():g} seconds'
    parts = []
    for unit, size in (('week', 604800), ('day', 86400), ('hour', 3600),
                       ('minute', 60), ('second', 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(plural(count, unit))
    return ' '.join(parts)


def plural(count, unit):
    return f'{count} {unit}' if count == 1 else f'{count} {unit}s'


def _every(count, unit):
    return f'every {unit}' if count == 1 else f'every {count} {unit}s'


def _until(trigger):
    end = getattr(trigger, 'end_date', None)
    if not isinstance(end, datetime.datetime):
        return ''
    return f' until {when(end)}'


def _calendar_words(trigger):
    time = trigger._time
    at = f'{time:%H:%M}' + (f':{time:%S}' if time.second else '')
    zone = zone_name(trigger.timezone)
    if trigger.years or trigger.months:
        months = trigger.years * 12 + trigger.months
        period = _every(months, 'month')
    elif trigger.weeks and not trigger.days:
        period = _every(trigger.weeks, 'week')
    else:
        period = _every(trigger.weeks * 7 + trigger.days, 'day')
    return f'{period} at {at} {zone}'.rstrip()


def cron_words(trigger):
    """A cron trigger in English (see the module docstring)."""
    fields = {field.name: str(field) for field in trigger.fields}
    zone = zone_name(trigger.timezone)
    days = _days(fields)
    clock = _clock(fields)
    if clock is not None and days is not None:
        return f'{days} at {clock} {zone}'.rstrip()
    hourly = _hourly(fields)
    if hourly is not None and days is not None:
        return hourly if days == 'every day' else f'{hourly} {_on(days)}'
    return 'cron: ' + ', '.join(
        f'{words} {fields[name]}' for name, words in FIELD_WORDS
        if fields[name] != '*' and (name, fields[name]) != ('second', '0')) + (f' ({zone})' if zone else '')


def _on(days):
    """"every Monday" -> "on Mondays"; other day phrases say "on"."""
    if days.startswith('every ') and days[6:] in DAY_NAMES.values():
        return f'on {days[6:]}s'
    return days


def _is_number(text):
    return text.isdigit()


def _clock(fields):
    """``'09:00'`` or ``'09:00 and 17:30'`` for fixed times, else None."""
    hours, minute, second = (fields['hour'], fields['minute'],
                             fields['second'])
    if not (_is_number(minute) and _is_number(second)):
        return None
    hour_list = hours.split(',')
    if not all(_is_number(hour) for hour in hour_list):
        return None
    suffix = f':{int(second):02d}' if int(second) else ''
    times = [f'{int(hour):02d}:{int(minute):02d}{suffix}'
             for hour in hour_list]
    return times[0] if len(times) == 1 else (
        ', '.join(times[:-1]) + ' and ' + times[-1])


def _hourly(fields):
    """Runs within every hour: "every 15 minutes", "at minute 5 of every
    hour", "every 10 seconds"; None for anything else."""
    hour, minute, second = (fields['hour'], fields['minute'],
                            fields['second'])
    if hour.startswith('*/') and _is_number(minute) and second == '0':
        return f'{_every(int(hour[2:]), "hour")} at minute {int(minute)}'
    if hour != '*':
        return None
    if second == '0':
        if _is_number(minute):
            return f'at minute {int(minute)} of every hour'
        if minute == '*':
            return 'every minute'
        if minute.startswith('*/') and _is_number(minute[2:]):
            return _every(int(minute[2:]), 'minute')
        return None
    if minute == '*':
        if second == '*':
            return 'every second'
        if second.startswith('*/') and _is_number(second[2:]):
            return _every(int(second[2:]), 'second')
    return None


def _days(fields):
    """Which days: "every day", "every Monday", "on mon-fri", "on day 1 of
    every month", "every year on 1 January"; None for other mixes."""
    day, month, weekday = fields['day'], fields['month'], fields['day_of_week']
    if fields['year'] != '*' or fields['week'] != '*':
        return None
    if day == '*' and month == '*':
        if weekday == '*':
            return 'every day'
        if weekday in DAY_NAMES:
            return f'every {DAY_NAMES[weekday]}'
        return f'on {weekday}'
    if weekday != '*' or not _is_number(day):
        return None
    if month == '*':
        return f'on day {int(day)} of every month'
    if _is_number(month):
        return f'every year on {int(day)} {MONTH_NAMES[int(month) - 1]}'
    return None
