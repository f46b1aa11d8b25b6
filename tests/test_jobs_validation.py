"""Every job the runtime could not run is refused when it is added.

Each case raises InvalidJob / InvalidQueue in the caller, with a message that
says what is wrong, and nothing is sent (the embedded broker's file is not
even created).
"""
import datetime
import functools
import os
import time

import pytest
from hypothesis import given, settings as hsettings
from hypothesis import strategies as st
from pyramid.config import Configurator

from pyramid_scheduler import jobs as job_module
from pyramid_scheduler.api import InvalidJob, InvalidQueue
from tests import jobs

from tests.conftest import base_settings


class Thing:
    def method(self):
        pass

    @staticmethod
    def static():
        pass


def replaced():
    pass


_original_replaced = replaced


def replaced():  # noqa: F811 (the point of the test)
    pass


def _decorator(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)
    return wrapper


def decorated():
    pass


_undecorated = decorated
decorated = _decorator(decorated)


def _in_main():
    pass


_in_main.__module__ = '__main__'


@pytest.fixture
def scheduler(tmp_path):
    """A configured scheduler (not combined): adding only validates and sends."""
    config = Configurator(settings=base_settings(
        tmp_path, **{'scheduler.combined': 'false',
                     'scheduler.queues': 'jobs reports'}))
    config.include('pyramid_scheduler')
    app = config.make_wsgi_app()
    yield app.registry.scheduler
    app.registry.scheduler.shutdown()
    # Nothing was ever sent: the broker's database was never created.
    assert not os.path.exists(tmp_path / 'scheduler.sqlite')


def _closure():
    def inner():
        pass
    return inner


# Not callable: a job naming it is refused. Dates in the cases below are
# computed when each case runs, not at import: a long suite runs this
# module minutes after importing it.
NOW = time.time()

CASES = {
    # the function
    'lambda': (lambda s: s.add_async_job(lambda: None),
               InvalidJob, 'lambdas and nested functions'),
    'closure': (lambda s: s.add_async_job(_closure()),
                InvalidJob, 'lambdas and nested functions'),
    'bound method': (lambda s: s.add_async_job(Thing().method),
                     InvalidJob, 'plain module-level functions'),
    'builtin': (lambda s: s.add_async_job(len),
                InvalidJob, 'plain module-level functions'),
    'class': (lambda s: s.add_async_job(Thing),
              InvalidJob, 'plain module-level functions'),
    'name resolves elsewhere': (
        lambda s: s.add_async_job(_original_replaced),
        InvalidJob, 'does not give back the same function'),
    'decorated original': (lambda s: s.add_async_job(_undecorated),
                           InvalidJob, 'does not give back the same'),
    'defined in __main__': (lambda s: s.add_async_job(_in_main),
                            InvalidJob, '__main__'),
    'unknown dotted name': (
        lambda s: s.add_async_job('tests.jobs:no_such_function'),
        InvalidJob, "has no function 'no_such_function'"),
    'unimportable module': (
        lambda s: s.add_async_job('no_such_module_xyz:f'),
        InvalidJob, "cannot import module 'no_such_module_xyz'"),
    'not callable': (lambda s: s.add_async_job('tests.test_jobs_validation:NOW'),
                     InvalidJob, 'is not callable'),
    # the arguments
    'object() arg': (lambda s: s.add_async_job(jobs.record, args=[object()]),
                     InvalidJob, "cannot be sent with the 'json' serializer"),
    'set arg': (lambda s: s.add_async_job(jobs.record, args=[{1, 2}]),
                InvalidJob, "cannot be sent with the 'json' serializer"),
    'object() kwarg': (lambda s: s.add_date_job(
        jobs.record, time.time() + 60, kwargs={'x': object()}),
        InvalidJob, 'serializer'),
    'int dict key': (lambda s: s.add_async_job(jobs.record,
                                               args=[{1: 'one'}]),
                     InvalidJob, 'do not survive'),
    'NaN arg': (lambda s: s.add_async_job(jobs.record, args=[float('nan')]),
                InvalidJob, 'do not survive'),
    'kombu type marker': (lambda s: s.add_async_job(jobs.record, kwargs={
        'x': {'__type__': 'datetime', '__value__': '2030-01-02T03:04:05'}}),
        InvalidJob, 'do not survive'),
    'int over the digits limit': (lambda s: s.add_async_job(
        jobs.record, args=[10 ** 5000]), InvalidJob, 'cannot be sent'),
    'args a string': (lambda s: s.add_async_job(jobs.record, args='abc'),
                      InvalidJob, 'args must be a list or tuple'),
    'kwargs not a dict': (lambda s: s.add_async_job(jobs.record,
                                                    kwargs=[1]),
                          InvalidJob, 'kwargs must be a dict'),
    # the trigger
    'hour=25': (lambda s: s.add_cron_job(jobs.noop, hour=25),
                InvalidJob, 'invalid cron schedule'),
    'bad day_of_week': (lambda s: s.add_cron_job(jobs.noop,
                                                 day_of_week='someday'),
                        InvalidJob, 'invalid cron schedule'),
    'bad crontab': (lambda s: s.add_cron_job(jobs.noop, crontab='* * *'),
                    InvalidJob, 'invalid cron schedule'),
    'crontab out of range': (lambda s: s.add_cron_job(
        jobs.noop, crontab='61 * * * *'), InvalidJob, 'invalid cron'),
    'crontab and fields': (lambda s: s.add_cron_job(
        jobs.noop, crontab='* * * * *', hour=1), InvalidJob, 'not both'),
    'no interval': (lambda s: s.add_interval_job(jobs.noop),
                    InvalidJob, 'needs a positive interval'),
    'negative interval': (lambda s: s.add_interval_job(jobs.noop,
                                                       seconds=-5),
                          InvalidJob, 'the interval must be positive'),
    'bad date': (lambda s: s.add_date_job(jobs.noop, 'next tuesday'),
                 InvalidJob, 'date must be a datetime'),
    'bool date': (lambda s: s.add_date_job(jobs.noop, True),
                  InvalidJob, 'epoch number'),
    'never fires': (lambda s: s.add_interval_job(
        jobs.noop, seconds=5, start_date=time.time() + 3600, end_date=time.time() + 60),
        InvalidJob, 'never fires'),
    'bad job timezone': (lambda s: s.add_cron_job(
        jobs.noop, hour=1, timezone='Mars/Base'),
        InvalidJob, "invalid timezone 'Mars/Base'"),
    # queue and options
    'unknown queue': (lambda s: s.add_async_job(jobs.noop, queue='nope'),
                      InvalidQueue, 'the configured queues are jobs, reports'),
    'unknown option': (lambda s: s.add_async_job(jobs.noop, priority=5),
                       InvalidJob, 'unknown option(s) priority'),
    'date option on async': (lambda s: s.add_async_job(jobs.noop,
                                                       end_date=time.time()),
                             InvalidJob, 'unknown option(s) end_date'),
    'empty id': (lambda s: s.add_async_job(jobs.noop, id=' '),
                 InvalidJob, 'job id must be a non-empty string'),
    'int id': (lambda s: s.add_async_job(jobs.noop, id=5),
               InvalidJob, 'job id must be a non-empty string'),
    'float grace': (lambda s: s.add_interval_job(
        jobs.noop, seconds=5, misfire_grace_time=0.5),
        InvalidJob, 'misfire_grace_time must be a positive whole number'),
    'zero max_instances': (lambda s: s.add_interval_job(
        jobs.noop, seconds=5, max_instances=0),
        InvalidJob, 'max_instances must be a positive whole number'),
    'empty name': (lambda s: s.add_interval_job(jobs.noop, seconds=5,
                                                name=''),
                   InvalidJob, 'job name must be a non-empty string'),
    # options a kind of job would accept and ignore
    'max_instances on async': (lambda s: s.add_async_job(
        jobs.noop, max_instances=2),
        InvalidJob, 'max_instances has no effect on an async job'),
    'coalesce on async': (lambda s: s.add_async_job(jobs.noop,
                                                    coalesce=False),
                          InvalidJob, 'coalesce has no effect on an async '
                          'job, which runs once'),
    'misfire_grace_time on async': (lambda s: s.add_async_job(
        jobs.noop, misfire_grace_time=30),
        InvalidJob, 'misfire_grace_time has no effect on an async job, which '
        'runs once, as soon as a worker thread of its queue is free; it '
        'applies to deferred (date, interval, cron) jobs'),
    'coalesce on date': (lambda s: s.add_date_job(jobs.noop, time.time() + 60,
                                                  coalesce=True),
                         InvalidJob, 'coalesce has no effect on a date job'),
    # dates in the past
    'date beyond grace': (lambda s: s.add_date_job(jobs.noop, time.time() - 7200),
                          InvalidJob, 'more than the misfire grace time'),
    'date beyond job grace': (lambda s: s.add_date_job(
        jobs.noop, time.time() - 120, misfire_grace_time=60),
        InvalidJob, 'more than the misfire grace time (60s)'),
    'naive date beyond grace': (lambda s: s.add_date_job(
        jobs.noop, datetime.datetime.now() - datetime.timedelta(days=1)),
        InvalidJob, 'in the past'),
}


@pytest.mark.parametrize('case', list(CASES))
def test_invalid_job_raises_with_its_message(scheduler, case):
    call, error, fragment = CASES[case]
    with pytest.raises(error) as info:
        call(scheduler)
    assert fragment in str(info.value)


def test_the_messages_say_what_to_do(scheduler):
    with pytest.raises(InvalidJob) as info:
        scheduler.add_async_job(lambda: None)
    assert 'define it at the top level of a module' in str(info.value)
    with pytest.raises(InvalidJob) as info:
        scheduler.add_async_job(jobs.record, args=[object()])
    assert 'pass plain data' in str(info.value)
    with pytest.raises(InvalidJob) as info:
        scheduler.add_date_job(jobs.noop, time.time() - 7200)
    assert 'pick a future date, or raise misfire_grace_time' in str(
        info.value)


def test_invalid_errors_are_value_errors(scheduler):
    # Callers that catch ValueError (as for any bad argument) catch them.
    with pytest.raises(ValueError):
        scheduler.add_async_job(len)
    with pytest.raises(ValueError):
        scheduler.add_async_job(jobs.noop, queue='nope')


@pytest.fixture
def sending_scheduler(tmp_path):
    config = Configurator(settings=base_settings(
        tmp_path, **{'scheduler.combined': 'false'}))
    config.include('pyramid_scheduler')
    app = config.make_wsgi_app()
    yield app.registry.scheduler
    app.registry.scheduler.shutdown()


@pytest.mark.parametrize('call', [
    lambda s: s.add_async_job(jobs.record, args=('a', 1, [2]),
                              kwargs={'k': {'n': None}}),
    lambda s: s.add_async_job('tests.jobs:noop'),
    lambda s: s.add_async_job('tests.jobs.noop'),
    # a static method is found again by its dotted name: fine
    lambda s: s.add_async_job(Thing.static),
    lambda s: s.add_date_job(jobs.noop, time.time() - 60),  # late, within grace
    lambda s: s.add_date_job(jobs.noop, datetime.date.today()
                             + datetime.timedelta(days=1)),
    lambda s: s.add_date_job(jobs.noop, '2999-01-01T10:00:00+02:00'),
    lambda s: s.add_date_job(jobs.noop, time.time() + 60, misfire_grace_time=5,
                             max_instances=1, name='once'),
    lambda s: s.add_async_job(jobs.noop, name='seen by listeners',
                              coalesce=None),
    lambda s: s.add_interval_job(jobs.noop, hours=1, start_date=time.time() + 10,
                                 jitter=5, misfire_grace_time=30,
                                 max_instances=2, name='hourly'),
    lambda s: s.add_cron_job(jobs.noop, crontab='*/5 * * * mon-fri'),
    lambda s: s.add_cron_job(jobs.noop, day_of_week='mon', hour='9-17',
                             minute='*/15', timezone='Europe/Paris'),
])
def test_valid_jobs_are_accepted(sending_scheduler, call):
    job_id = call(sending_scheduler)
    assert isinstance(job_id, str) and job_id


# --- the shortcut for plain JSON arguments ------------------------------------

SCALARS = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.text() | st.decimals(allow_nan=False) | st.uuids()
           | st.datetimes())
KEYS = st.text() | st.sampled_from(['__type__', '__value__']) | st.integers()
VALUES = st.recursive(
    SCALARS, lambda children: st.lists(children, max_size=4)
    | st.tuples(children, children)
    | st.dictionaries(KEYS, children, max_size=4), max_leaves=30)


@pytest.mark.slow
@hsettings(max_examples=400, deadline=None)
@given(VALUES)
def test_what_skips_the_round_trip_would_pass_it(value):
    """Arguments the plain-JSON check lets through without serializing them
    are exactly ones the real round trip accepts."""
    if job_module._is_plain_json(value):
        job_module.round_trip([value], {'k': value}, 'json')


def test_arguments_outside_plain_json_still_take_the_round_trip():
    for value in (datetime.date(2030, 1, 2), (1, 'a'), {'nested': [1.5]}):
        job_module.check_round_trip([value], {}, 'json')
    for refused in ([float('inf'), object()], [{1: 'one'}]):
        with pytest.raises(InvalidJob):
            job_module.check_round_trip(refused, {}, 'json')
