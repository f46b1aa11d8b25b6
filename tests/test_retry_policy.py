"""The retry policy and the retry options, without a daemon (issue 15).

runtime/retries.py decides whether a failed run is retried, after how long,
and builds the retry's spec; retrypolicy.py checks the options when a job
is added and when a runtime receives it. tests/test_retries.py runs them on
a real daemon.
"""
import random
import statistics
import types

import pytest

from pyramid_scheduler import jobs as job_module
from pyramid_scheduler.api import InvalidJob, Retry
from pyramid_scheduler.events import JobInfo
from pyramid_scheduler.runtime import retries
from pyramid_scheduler.settings import parse_settings
from tests import jobs


def settings(**values):
    return types.SimpleNamespace(**{'retries': 0, 'retry_backoff': 1.0,
                                    'retry_backoff_max': 600.0, **values})


def job(kind='async', attempt=None, **options):
    spec = JobInfo({'id': 'j1', 'kind': kind, 'func': 'tests.jobs:noop',
                    'args': [1], 'kwargs': {'a': 2}, 'trigger': {},
                    'options': options, 'created_at': 1.0}, queue='jobs')
    if attempt is not None:
        spec.update(retry_of='j1', attempt=attempt, id='j1.retry')
    return spec


# --- backoff ---------------------------------------------------------------

def test_backoff_delays_stay_under_a_bound_that_doubles_up_to_the_cap():
    rng = random.Random(20261201)
    base, cap = 0.5, 10.0
    means = []
    for attempt in range(1, 10):
        bound = min(cap, base * 2 ** (attempt - 1))
        draws = [retries.backoff_delay(attempt, base, cap, rng)
                 for _ in range(2000)]
        assert all(0 <= draw <= bound for draw in draws)
        # Full jitter: uniform over [0, bound], so its mean is bound / 2.
        assert statistics.mean(draws) == pytest.approx(bound / 2, rel=0.06)
        means.append(statistics.mean(draws))
    # They grow until the cap (attempt 6: 0.5 * 32 > 10), then stay.
    assert means[:6] == sorted(means[:6])
    assert means[5] / means[0] > 15
    assert max(means[5:]) < cap / 2 * 1.06


def test_backoff_of_a_huge_attempt_is_the_cap_not_an_overflow():
    assert 0 <= retries.backoff_delay(5000, 1.0, 60.0, random.Random(1)) <= 60


def test_the_delay_is_the_countdown_then_retry_delay_then_the_backoff():
    conf = settings(retry_backoff=2.0, retry_backoff_max=5.0)
    rng = random.Random(3)
    assert retries.delay_of({'retry_delay': 0.2}, conf, 1,
                            Retry(countdown=7), rng) == 7
    assert retries.delay_of({'retry_delay': 0.2}, conf, 4, Retry(), rng) \
        == 0.2
    assert retries.delay_of({'retry_backoff': False}, conf, 3,
                            ValueError(), rng) == 0
    assert 0 <= retries.delay_of({}, conf, 1, ValueError(), rng) <= 2.0
    assert 0 <= retries.delay_of({'retry_backoff': 0.1}, conf, 2,
                                 ValueError(), rng) <= 0.2
    assert all(retries.delay_of({}, conf, 9, ValueError(), rng) <= 5.0
               for _ in range(100))


# --- whether to retry ------------------------------------------------------

def test_a_failed_run_is_retried_while_attempts_are_within_retries():
    conf = settings()
    assert retries.plan_retry(job(retries=2, retry_delay=0.5),
                              ValueError(), conf) == retries.Plan(2, 0.5)
    assert retries.plan_retry(job(attempt=2, retries=2, retry_delay=0.5),
                              ValueError(), conf) == retries.Plan(3, 0.5)
    assert retries.plan_retry(job(attempt=3, retries=2), ValueError(),
                              conf) is None
    assert retries.plan_retry(job(), ValueError(), conf) is None
    # The setting is the default; the job's own 0 wins over it.
    assert retries.plan_retry(job(), ValueError(), settings(retries=1))
    assert retries.plan_retry(job(retries=0), ValueError(),
                              settings(retries=1)) is None


def test_retry_on_matches_the_class_and_its_subclasses_by_name():
    conf = settings()
    only_os = job(retries=1, retry_on=['builtins.OSError'])
    assert retries.plan_retry(only_os, ConnectionResetError(), conf)
    assert retries.plan_retry(only_os, ValueError(), conf) is None
    flaky = job(retries=1, retry_on=['tests.jobs.Flaky'])
    assert retries.plan_retry(flaky, jobs.Flaky(), conf)


def test_retry_is_honoured_whatever_retry_on_says_and_up_to_3_by_default():
    conf = settings()
    assert retries.plan_retry(job(retry_on=['builtins.KeyError']),
                              Retry(countdown=2), conf) == retries.Plan(2, 2)
    assert retries.plan_retry(job(attempt=3), Retry(), conf)
    assert retries.plan_retry(job(attempt=4), Retry(), conf) is None
    # A job with retries of its own: they count.
    assert retries.plan_retry(job(attempt=2, retries=1), Retry(),
                              conf) is None


def test_retry_takes_seconds_or_none():
    assert Retry().countdown is None and Retry(reason='busy').reason == \
        'busy'
    for bad in (-1, 'soon', True, float('inf')):
        with pytest.raises(ValueError, match='countdown'):
            Retry(countdown=bad)


# --- the retry's spec --------------------------------------------------------

def test_the_retry_is_a_date_job_of_the_same_function_under_its_own_id():
    original = job(kind='interval', retries=2, name='n')
    original['unique'] = 'token'
    spec = retries.retry_spec(original, retries.Plan(2, 1.5))
    assert spec['id'] == 'j1.retry' and spec['retry_of'] == 'j1'
    assert (spec['kind'], spec['of_kind'], spec['attempt']) == (
        'date', 'interval', 2)
    assert (spec['func'], spec['args'], spec['kwargs'], spec['options']) == (
        'tests.jobs:noop', [1], {'a': 2}, {'retries': 2, 'name': 'n'})
    assert 'queue' not in spec and 'unique' not in spec
    assert spec['trigger']['run_date'].tzinfo is not None
    again = retries.retry_spec(JobInfo(spec, queue='jobs'),
                               retries.Plan(3, 1))
    assert (again['id'], again['retry_of'], again['of_kind'],
            again['attempt']) == ('j1.retry', 'j1', 'interval', 3)


def test_a_long_id_gets_a_store_id_that_fits():
    assert len(retries.retry_store_id('x' * 191)) <= 191


# --- the options, when added and on receipt ----------------------------------

@pytest.fixture
def conf(tmp_path):
    return parse_settings({'scheduler.allowed_modules': 'tests.jobs'},
                          here=str(tmp_path))


def spec_of(conf, kind='async', **options):
    trigger = {'seconds': 5} if kind == 'interval' else {}
    return job_module.build_spec(conf, kind, jobs.noop, trigger=trigger,
                                 options=options)[1]


def test_retry_on_is_kept_as_dotted_names(conf):
    spec = spec_of(conf, retries=2, retry_on=[ConnectionError, 'KeyError',
                                              'tests.jobs:Flaky'])
    assert spec['options']['retry_on'] == [
        'builtins.ConnectionError', 'builtins.KeyError', 'tests.jobs.Flaky']
    assert spec_of(conf, 'interval', retry_on=jobs.Flaky)['options'][
        'retry_on'] == ['tests.jobs.Flaky']
    assert job_module.scheduler_options(
        {'retries': 1, 'retry_on': ['a.B'], 'name': 'n'}) == {'name': 'n'}


def _local_error():
    class Local(Exception):
        pass
    return Local


@pytest.mark.parametrize('options, says', [
    ({'retries': -1}, 'retries must be a whole number of at least 0'),
    ({'retries': 1.5}, 'retries must be a whole number'),
    ({'retries': True}, 'retries must be a whole number'),
    ({'retry_delay': -0.1}, 'retry_delay must be a number of seconds'),
    ({'retry_delay': 'soon'}, 'retry_delay must be a number of seconds'),
    ({'retry_backoff': 0}, 'retry_backoff must be True, False or the base'),
    ({'retry_backoff': 'x'}, 'retry_backoff must be True, False or the base'),
    ({'retry_delay': 1, 'retry_backoff': True}, 'exclude each other'),
    ({'retry_on': []}, 'retry_on must name at least one exception class'),
    ({'retry_on': int}, 'retry_on takes exception classes'),
    ({'retry_on': [KeyboardInterrupt]}, 'subclasses of Exception'),
    ({'retry_on': 'no.such.module.Error'},
     "cannot find the exception class 'no.such.module.Error'"),
    ({'retry_on': 'NoSuchBuiltinError'}, 'cannot find the exception class'),
    ({'retry_on': _local_error()}, 'cannot be found again by its name'),
])
def test_bad_retry_options_are_refused_when_added(conf, options, says):
    with pytest.raises(InvalidJob, match=says):
        spec_of(conf, **options)


@pytest.mark.parametrize('options, says', [
    ({'retries': 'x'}, 'retries must be a whole number'),
    ({'retry_on': 'builtins.KeyError'}, 'retry_on must be a non-empty list'),
    ({'retry_on': ['os.system()']}, 'retry_on must be a non-empty list'),
    ({'retry_delay': float('nan')}, 'retry_delay must be a number'),
])
def test_bad_retry_options_are_refused_on_receipt(options, says):
    for kind in ('async', 'date', 'cron'):
        with pytest.raises(InvalidJob, match=says):
            job_module.check_options(options, kind)


def test_good_retry_options_pass_on_receipt():
    job_module.check_options({'retries': 3, 'retry_backoff': 0.5,
                              'retry_on': ['builtins.OSError']}, 'cron')
    job_module.check_options({'retry_delay': 0, 'retry_backoff': False},
                             'async')


# --- before a run --------------------------------------------------------------

class _Store:
    """The job store and status table a Retries object asks."""

    def __init__(self, stored=(), state=None):
        self.stored = {job_id: {'id': job_id} for job_id in stored}
        self.state = state
        self.table = self

    def state_of(self, job_id):
        return self.state

    def get_job(self, job_id, queue=None):
        return self.stored.get(job_id)

    def remove(self, queue, job_id):
        return self.stored.pop(job_id)


def test_a_retry_of_a_job_canceled_since_does_not_run():
    store = _Store(state='canceled')
    runtime = retries.Retries(settings(), records=store)
    assert runtime.before_run(job(attempt=2)) is False
    store.state = 'retrying'
    assert runtime.before_run(job(attempt=2)) is True


def test_the_next_tick_of_a_periodic_job_drops_its_pending_retry():
    store = _Store(stored=['j1', 'j1.retry'])
    runtime = retries.Retries(settings(), records=store)
    runtime.deferred = store
    assert runtime.before_run(job(kind='interval')) is True
    assert list(store.stored) == ['j1']
    # A date job keeps it (none of its runs is a tick).
    store.stored['j1.retry'] = {}
    assert runtime.before_run(job(kind='date')) is True
    assert 'j1.retry' in store.stored


@pytest.mark.parametrize('fields', [
    {'retry_of': 'j1'}, {'attempt': 2}, {'retry_of': '', 'attempt': 2},
    {'retry_of': 'j1', 'attempt': 1}, {'retry_of': 'j1', 'attempt': '2'},
    {'retry_of': ['j1'], 'attempt': 2}])
def test_a_retry_without_its_fields_is_refused_on_receipt(fields):
    from pyramid_scheduler.retrypolicy import check_retry_fields
    with pytest.raises(InvalidJob, match='a retry needs retry_of'):
        check_retry_fields({'id': 'x', **fields})
    check_retry_fields({'id': 'x'})
    check_retry_fields({'id': 'x.retry', 'retry_of': 'x', 'attempt': 2})
