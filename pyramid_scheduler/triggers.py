"""Triggers that keep wall-clock time across daylight saving changes.

APScheduler 3.11's own triggers get two things wrong for a person reading a
clock in a zone with daylight saving time:

- ``IntervalTrigger(days=1)`` counts elapsed time, so a job at 09:00 in
  Europe/Paris runs at 10:00 after the spring change (and 08:00 after the
  autumn one). :class:`WallClockIntervalTrigger` counts days on the
  calendar instead; it is used only for intervals given in ``days`` and/or
  ``weeks``: "every 2 hours" stays elapsed time, which is what it means.
- ``CronTrigger`` fires a fixed-hour run twice when the clock goes back
  (``'30 2 * * *'`` at 02:30 summer time, then at 02:30 winter time).
  :class:`WallClockCronTrigger` fires it once.

In the hour the clock skips (spring), both run once, as late as the clock
moved: a run due at 02:30 runs at 03:30. APScheduler's calendar trigger
would skip that day; cron's own trigger already runs it then.

Both classes are pickled, by name, with every deferred job in the job
store: ``pyramid_scheduler.triggers.WallClockIntervalTrigger`` and
``pyramid_scheduler.triggers.WallClockCronTrigger`` are persisted names and
must stay importable here. Jobs stored before these existed keep their
APScheduler trigger and its behaviour until they are added again.
"""
import datetime

from apscheduler.triggers.calendarinterval import CalendarIntervalTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.util import astimezone, convert_to_datetime, timezone_repr

UTC = datetime.timezone.utc


def on_the_clock(moment, zone):
    """``moment`` as the clock of ``zone`` shows it.

    A wall time in the hour skipped in spring (02:30) comes out as the time
    the clock shows at that instant (03:30); a repeated wall time keeps the
    occurrence its ``fold`` says.
    """
    return moment.astimezone(UTC).astimezone(zone)


def in_repeated_hour_again(moment):
    """True for a wall time the clock shows for the second time (autumn)."""
    return bool(moment.fold) and (
        moment.replace(fold=0).utcoffset() != moment.utcoffset())


class WallClockIntervalTrigger(CalendarIntervalTrigger):
    """Every ``weeks``/``days``, at the same time of day on the clock.

    APScheduler's ``CalendarIntervalTrigger`` with these differences, so that
    it can replace ``IntervalTrigger`` for day and week intervals without a
    user noticing anything but the clock being kept:

    - ``start_date`` is a datetime, whose time of day (in ``timezone``) is
      the time every run keeps; without one, the first run is one interval
      from now, as with ``IntervalTrigger``.
    - Without a previous run, the next run is the first one not before
      ``now`` (a start date in the past does not make past runs due).
    - ``end_date`` is a datetime, the last moment a run may be at.
    - A run in the hour the clock skips runs when the clock has moved on
      (02:30 -> 03:30) instead of being skipped; a run in the repeated hour
      runs once, in its first occurrence.
    """

    __slots__ = ()

    def __init__(self, *, weeks=0, days=0, start_date=None, end_date=None,
                 timezone=None, jitter=None):
        zone = astimezone(timezone) if timezone else None
        step = datetime.timedelta(weeks=weeks, days=days)
        if start_date is None:
            start = datetime.datetime.now(zone) + step
        else:
            start = convert_to_datetime(start_date, zone, 'start_date')
        if zone is None:
            zone = astimezone(start.tzinfo)
        start = start.astimezone(zone)
        super().__init__(weeks=weeks, days=days, hour=start.hour,
                         minute=start.minute, second=start.second,
                         start_date=start.date(), timezone=zone,
                         jitter=jitter)
        # A datetime here, where APScheduler's trigger keeps a date.
        self.end_date = convert_to_datetime(end_date, zone, 'end_date')
        if self.end_date is not None and self.end_date < start:
            raise ValueError('end_date cannot be earlier than start_date')

    @property
    def interval(self):
        """The interval as a timedelta, as ``IntervalTrigger.interval``."""
        return datetime.timedelta(weeks=self.weeks, days=self.days)

    def get_next_fire_time(self, previous_fire_time, now):
        step = self.interval
        if previous_fire_time is None:
            day = self._first_day_not_before(now)
        else:
            day = previous_fire_time.astimezone(self.timezone).date() + step
        fire = self.fire_time_on(day)
        while previous_fire_time is None and fire < now:
            day += step
            fire = self.fire_time_on(day)
        if self.end_date is not None and fire > self.end_date:
            return None
        return self._apply_jitter(fire, self.jitter, now)

    def _first_day_not_before(self, now):
        today = now.astimezone(self.timezone).date()
        step_days = self.interval.days
        steps = max(0, (today - self.start_date).days // step_days - 1)
        return self.start_date + datetime.timedelta(days=steps * step_days)

    def fire_time_on(self, day):
        """The run's time on ``day``, as the clock of the zone shows it."""
        wall = datetime.datetime.combine(day, self._time.replace(tzinfo=None))
        return on_the_clock(wall.replace(tzinfo=self.timezone),
                            self.timezone)

    def __str__(self):
        return (f'interval[{self.interval} at {self._time:%H:%M:%S} '
                f'{timezone_repr(self.timezone)}]')

    def __repr__(self):
        end = f', end_date={self.end_date.isoformat()!r}' \
            if self.end_date else ''
        return (f'<{type(self).__name__} (interval={self.interval!s}, '
                f'time={self._time:%H:%M:%S}, start_date='
                f'{self.start_date.isoformat()!r}{end}, '
                f'timezone={timezone_repr(self.timezone)!r})>')


class WallClockCronTrigger(CronTrigger):
    """APScheduler's cron trigger that fires a run of a fixed hour once when
    the clock goes back.

    When the clock shows an hour twice, a run whose hour field names hours
    (``'30 2 * * *'``) fires in the first pass only: it is a time of day,
    and that day has it once. A run whose hour is ``*`` (every hour) fires
    in both passes, as it does every hour the clock shows: an hourly job
    keeps running every elapsed hour, with no two-hour gap (the rule of
    Vixie cron, for the same reason).

    Fire times in the skipped spring hour come out as the clock shows them
    (02:30 -> 03:30); APScheduler returns the same instant as a wall time
    that does not exist.
    """

    __slots__ = ()

    def get_next_fire_time(self, previous_fire_time, now):
        fire = super().get_next_fire_time(previous_fire_time, now)
        if not self._every_hour():
            while fire is not None and in_repeated_hour_again(fire):
                fire = super().get_next_fire_time(fire, fire)
        return fire if fire is None else on_the_clock(fire, self.timezone)

    def _every_hour(self):
        hour = next(field for field in self.fields if field.name == 'hour')
        return str(hour) == '*'
