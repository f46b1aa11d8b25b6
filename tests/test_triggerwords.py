"""A trigger in words (pyramid_scheduler.triggerwords), as the dashboard's
job page shows it."""
import datetime

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from pyramid_scheduler.triggers import (
    WallClockCronTrigger, WallClockIntervalTrigger)
from pyramid_scheduler.triggerwords import describe, duration

PARIS = 'Europe/Paris'
NINE = datetime.datetime(2026, 12, 1, 9, 0)


@pytest.mark.parametrize('trigger, words', [
    (DateTrigger(NINE, timezone=PARIS),
     'once at 2026-12-01 09:00 Europe/Paris'),
    (DateTrigger(NINE.replace(second=30), timezone='UTC'),
     'once at 2026-12-01 09:00:30 UTC'),
    (IntervalTrigger(seconds=10), 'every 10 seconds'),
    (IntervalTrigger(seconds=1), 'every 1 second'),
    (IntervalTrigger(hours=2, minutes=30), 'every 2 hours 30 minutes'),
    (WallClockIntervalTrigger(days=1, start_date=NINE, timezone=PARIS),
     'every day at 09:00 Europe/Paris'),
    (WallClockIntervalTrigger(days=3, start_date=NINE, timezone=PARIS),
     'every 3 days at 09:00 Europe/Paris'),
    (WallClockIntervalTrigger(weeks=2, start_date=NINE, timezone=PARIS),
     'every 2 weeks at 09:00 Europe/Paris'),
    (WallClockCronTrigger(hour=9, minute=0, timezone=PARIS),
     'every day at 09:00 Europe/Paris'),
    (CronTrigger.from_crontab('0 9 * * *', timezone=PARIS),
     'every day at 09:00 Europe/Paris'),
    (CronTrigger(minute=5, timezone=PARIS), 'at minute 5 of every hour'),
    (CronTrigger(minute='*/15', timezone=PARIS), 'every 15 minutes'),
    (CronTrigger(second='*/10', timezone=PARIS), 'every 10 seconds'),
    (CronTrigger(hour='*/2', minute=0, timezone=PARIS),
     'every 2 hours at minute 0'),
    (CronTrigger(day_of_week='mon', hour=9, timezone=PARIS),
     'every Monday at 09:00 Europe/Paris'),
    (CronTrigger(day_of_week='mon-fri', hour='9,17', minute=30,
                 timezone=PARIS),
     'on mon-fri at 09:30 and 17:30 Europe/Paris'),
    (CronTrigger(minute=5, day_of_week='sat', timezone=PARIS),
     'at minute 5 of every hour on Saturdays'),
    (CronTrigger(day=1, hour=6, timezone=PARIS),
     'on day 1 of every month at 06:00 Europe/Paris'),
    (CronTrigger(month=1, day=1, hour=0, timezone=PARIS),
     'every year on 1 January at 00:00 Europe/Paris'),
    (CronTrigger(hour=9, end_date='2027-01-01', timezone=PARIS),
     'every day at 09:00 Europe/Paris until 2027-01-01 00:00 Europe/Paris'),
])
def test_trigger_in_words(trigger, words):
    assert describe(trigger) == words


def test_a_cron_with_no_short_reading_is_told_field_by_field():
    trigger = CronTrigger(minute='0-30/10', hour='9-17',
                          day_of_week='mon-fri', timezone=PARIS)
    assert describe(trigger) == ('cron: day of week mon-fri, hour 9-17, '
                                 'minute 0-30/10 (Europe/Paris)')


def test_an_unknown_trigger_is_its_str():
    class Odd:
        def __str__(self):
            return 'odd[1]'
    assert describe(Odd()) == 'odd[1]'


def test_duration_words():
    assert duration(datetime.timedelta(days=8, seconds=61)) == \
        '1 week 1 day 1 minute 1 second'
