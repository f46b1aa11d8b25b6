"""Daylight saving: what the clock shows is what a job keeps.

Europe/Paris in 2027: the clock goes from 02:00 to 03:00 on 28 March (02:xx
does not exist) and from 03:00 back to 02:00 on 31 October (02:xx happens
twice). Fire times are computed one after the other with the triggers
``build_trigger`` makes, on a clock the test moves: nothing sleeps.
"""
import datetime
import pickle
from zoneinfo import ZoneInfo

from apscheduler.triggers.interval import IntervalTrigger

from pyramid_scheduler.jobs import build_trigger
from pyramid_scheduler.triggers import (
    WallClockCronTrigger, WallClockIntervalTrigger)
from tests.conftest import poll

PARIS = ZoneInfo('Europe/Paris')
UTC = datetime.timezone.utc
SPRING = datetime.date(2027, 3, 28)
AUTUMN = datetime.date(2027, 10, 31)


def paris(*args, fold=0):
    return datetime.datetime(*args, tzinfo=PARIS, fold=fold)


def fire_times(trigger, now, count=None, until=None):
    """Successive fire times, each one the "now" of the next, as APScheduler
    computes them after each run."""
    times, previous = [], None
    while count is None or len(times) < count:
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None or (until is not None and fire > until):
            break
        times.append(fire)
        previous = now = fire
    return times


def on_clock(times):
    """(date, 'HH:MM', UTC offset in hours) of each time, as Paris shows it."""
    return [(t.astimezone(PARIS).date(), f'{t.astimezone(PARIS):%H:%M}',
             t.utcoffset().total_seconds() / 3600) for t in times]


def elapsed(times):
    """The set of real durations between successive times (subtracting two
    datetimes of one zone gives the difference of their wall times)."""
    return {b.astimezone(UTC) - a.astimezone(UTC)
            for a, b in zip(times, times[1:])}


def days_around(day, before, after):
    return [day + datetime.timedelta(days=n) for n in range(-before, after)]


# --- intervals in days and weeks: the time of day is kept --------------------

def test_a_daily_job_stays_at_nine_across_both_changes():
    for change in (SPRING, AUTUMN):
        start = paris(*(change - datetime.timedelta(days=2)).timetuple()[:3],
                      9)
        trigger = build_trigger('interval', {'days': 1, 'start_date': start},
                                'Europe/Paris')
        assert isinstance(trigger, WallClockIntervalTrigger)
        times = fire_times(trigger, start - datetime.timedelta(hours=1), 5)
        assert [(d, hm) for d, hm, _ in on_clock(times)] == [
            (day, '09:00') for day in days_around(change, 2, 3)]
        offsets = [offset for _, _, offset in on_clock(times)]
        assert offsets == ([1, 1, 2, 2, 2] if change == SPRING
                           else [2, 2, 1, 1, 1])


def test_a_weekly_job_stays_at_nine_across_both_changes():
    start = paris(2027, 3, 14, 9)  # a Sunday, as both changes are
    trigger = build_trigger('interval', {'weeks': 1, 'start_date': start},
                            PARIS)
    times = fire_times(trigger, start, until=paris(2027, 11, 30))
    assert len(times) == 38
    assert {f'{t:%H:%M %a}' for t in times} == {'09:00 Sun'}
    assert paris(2027, 3, 28, 9) in times and paris(2027, 10, 31, 9) in times
    # the gap over each change is a week plus or minus the hour
    week = datetime.timedelta(weeks=1)
    assert elapsed(times) == {week, week - datetime.timedelta(hours=1),
                    week + datetime.timedelta(hours=1)}


def test_a_daily_job_in_the_skipped_hour_runs_when_the_clock_has_moved_on():
    # 02:30 does not exist on 28 March: it runs then at 03:30, once, and is
    # back at 02:30 the next day (APScheduler's calendar trigger would skip
    # the day).
    start = paris(2027, 3, 26, 2, 30)
    trigger = build_trigger('interval', {'days': 1, 'start_date': start},
                            PARIS)
    assert [(d, hm) for d, hm, _ in on_clock(fire_times(trigger, start, 4))] \
        == [(datetime.date(2027, 3, 26), '02:30'),
            (datetime.date(2027, 3, 27), '02:30'),
            (SPRING, '03:30'),
            (datetime.date(2027, 3, 29), '02:30')]


def test_a_daily_job_in_the_repeated_hour_runs_once_in_its_first_pass():
    start = paris(2027, 10, 30, 2, 30)
    trigger = build_trigger('interval', {'days': 1, 'start_date': start},
                            PARIS)
    times = fire_times(trigger, start, 3)
    assert on_clock(times) == [
        (datetime.date(2027, 10, 30), '02:30', 2),
        (AUTUMN, '02:30', 2),       # summer time: the first 02:30
        (datetime.date(2027, 11, 1), '02:30', 1)]


def test_without_a_previous_run_the_next_one_is_not_in_the_past():
    # A start date long ago does not make its past runs due (as with
    # IntervalTrigger): the next run is the first one from now.
    trigger = build_trigger('interval', {'days': 2, 'start_date': paris(
        2027, 1, 1, 9)}, PARIS)
    now = paris(2027, 3, 28, 10)
    assert trigger.get_next_fire_time(None, now) == paris(2027, 3, 30, 9)
    assert trigger.get_next_fire_time(None, paris(2027, 3, 30, 9)) == \
        paris(2027, 3, 30, 9)


def test_without_a_start_date_the_first_run_is_one_interval_from_now():
    before = datetime.datetime.now(PARIS)
    trigger = build_trigger('interval', {'days': 1}, PARIS)
    first = trigger.get_next_fire_time(None, before)
    expected = before + datetime.timedelta(days=1)
    assert abs(first - expected) < datetime.timedelta(hours=1, seconds=2)


def test_end_date_is_a_moment_not_a_day():
    trigger = build_trigger('interval', {
        'days': 1, 'start_date': paris(2027, 3, 26, 9),
        'end_date': paris(2027, 3, 28, 8)}, PARIS)
    assert fire_times(trigger, paris(2027, 3, 26)) == [
        paris(2027, 3, 26, 9), paris(2027, 3, 27, 9)]


def test_the_calendar_trigger_survives_the_job_store():
    trigger = build_trigger('interval', {
        'weeks': 1, 'days': 1, 'start_date': paris(2027, 3, 20, 9),
        'end_date': paris(2027, 12, 1), 'jitter': 2}, PARIS)
    back = pickle.loads(pickle.dumps(trigger))
    assert type(back) is WallClockIntervalTrigger
    assert back.interval == datetime.timedelta(days=8)
    assert (back.end_date, back.jitter) == (paris(2027, 12, 1), 2)
    back.jitter = trigger.jitter = None
    now = paris(2027, 3, 20)
    assert fire_times(back, now, 5) == fire_times(trigger, now, 5)
    assert str(back) == 'interval[8 days, 0:00:00 at 09:00:00 Europe/Paris]'


def test_an_interval_job_stored_before_the_upgrade_keeps_elapsed_time():
    # A job store holds pickled APScheduler IntervalTriggers: they still
    # load and keep firing every 24 elapsed hours (10:00 after the change).
    old = pickle.loads(pickle.dumps(IntervalTrigger(
        days=1, start_date=paris(2027, 3, 27, 9), timezone=PARIS)))
    times = fire_times(old, paris(2027, 3, 27), 2)
    assert on_clock(times)[1][:2] == (SPRING, '10:00')


# --- intervals with hours, minutes or seconds: elapsed time ------------------

def test_an_every_two_hours_job_stays_two_hours_apart():
    for change in (SPRING, AUTUMN):
        start = paris(*(change - datetime.timedelta(days=1)).timetuple()[:3],
                      20)
        trigger = build_trigger('interval', {'hours': 2, 'start_date': start},
                                PARIS)
        assert type(trigger) is IntervalTrigger
        times = fire_times(trigger, start, 8)
        assert elapsed(times) == {datetime.timedelta(hours=2)}
        shown = [hm for _, hm, _ in on_clock(times)]
        assert shown == (['20:00', '22:00', '00:00', '03:00', '05:00',
                          '07:00', '09:00', '11:00'] if change == SPRING else
                         ['20:00', '22:00', '00:00', '02:00', '03:00',
                          '05:00', '07:00', '09:00'])


def test_days_with_hours_is_elapsed_time():
    trigger = build_trigger('interval', {'days': 1, 'hours': 1}, PARIS)
    assert type(trigger) is IntervalTrigger


# --- cron -------------------------------------------------------------------

def test_cron_at_half_past_two_in_spring_runs_at_half_past_three():
    trigger = build_trigger('cron', {'crontab': '30 2 * * *'}, PARIS)
    assert isinstance(trigger, WallClockCronTrigger)
    times = fire_times(trigger, paris(2027, 3, 27), 3)
    assert on_clock(times) == [
        (datetime.date(2027, 3, 27), '02:30', 1),
        (SPRING, '03:30', 2),         # 02:30 does not exist: once, at 03:30
        (datetime.date(2027, 3, 29), '02:30', 2)]


def test_cron_at_half_past_two_in_autumn_runs_once():
    trigger = build_trigger('cron', {'crontab': '30 2 * * *'}, PARIS)
    times = fire_times(trigger, paris(2027, 10, 30), 3)
    assert on_clock(times) == [
        (datetime.date(2027, 10, 30), '02:30', 2),
        (AUTUMN, '02:30', 2),         # the first 02:30 only
        (datetime.date(2027, 11, 1), '02:30', 1)]


def test_cron_fields_in_the_repeated_hour_run_once_each():
    trigger = build_trigger('cron', {'hour': 2, 'minute': '*/20'}, PARIS)
    times = fire_times(trigger, paris(2027, 10, 31), until=paris(2027, 10, 31,
                                                                  12))
    assert [hm for _, hm, _ in on_clock(times)] == ['02:00', '02:20',
                                                    '02:40']


def test_an_hourly_cron_runs_every_elapsed_hour_over_the_fall_back_night():
    # Hour "*" runs in every hour the clock shows, the repeated one too:
    # 25 runs that day, an hour apart, never two at one moment.
    trigger = build_trigger('cron', {'crontab': '0 * * * *'}, PARIS)
    times = fire_times(trigger, paris(2027, 10, 30, 23, 30),
                       until=paris(2027, 10, 31, 23, 59))
    assert len(times) == 25
    assert elapsed(times) == {datetime.timedelta(hours=1)}
    assert [hm for _, hm, _ in on_clock(times)][:5] == [
        '00:00', '01:00', '02:00', '02:00', '03:00']


def test_an_hourly_cron_over_the_spring_night_has_23_runs():
    trigger = build_trigger('cron', {'minute': 0}, PARIS)
    times = fire_times(trigger, paris(2027, 3, 27, 23, 30),
                       until=paris(2027, 3, 28, 23, 59))
    assert len(times) == 23
    assert [hm for _, hm, _ in on_clock(times)][:3] == [
        '00:00', '01:00', '03:00']


def test_the_cron_trigger_survives_the_job_store():
    trigger = build_trigger('cron', {'crontab': '30 2 * * *',
                                     'jitter': 3}, PARIS)
    back = pickle.loads(pickle.dumps(trigger))
    assert type(back) is WallClockCronTrigger and back.jitter == 3
    assert str(back) == str(trigger)


# --- through the public API, on a combined-mode app ------------------------

def test_a_daily_interval_job_is_stored_with_the_calendar_trigger(harness):
    start = datetime.datetime.now(PARIS).replace(
        hour=9, minute=0, second=0, microsecond=0) + datetime.timedelta(
            days=1)
    job_id = harness.scheduler.add_interval_job(
        'tests.jobs:noop', days=1, start_date=start, timezone='Europe/Paris')
    job = poll(lambda: harness.runtime.deferred.get_job(job_id))
    assert type(job.trigger) is WallClockIntervalTrigger
    assert job.next_run_time == start
    assert job.next_run_time.astimezone(PARIS).hour == 9
    after = job.trigger.get_next_fire_time(job.next_run_time,
                                           job.next_run_time)
    assert (after.astimezone(PARIS).date(), after.astimezone(PARIS).hour) == (
        start.date() + datetime.timedelta(days=1), 9)
