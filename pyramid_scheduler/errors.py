"""The exceptions a caller of the scheduler API may see."""
from pyramid.exceptions import ConfigurationError  # noqa: F401 (re-exported)


class SchedulerError(Exception):
    """Base class of every pyramid_scheduler error."""


class InvalidJob(SchedulerError, ValueError):
    """A job that cannot be scheduled as given; the message says why."""


class InvalidQueue(SchedulerError, ValueError):
    """A queue name that is not among ``scheduler.queues``."""


class InvalidMessage(SchedulerError):
    """A broker message that does not decode, or fails its signature."""


class BrokerUnavailable(SchedulerError, ConnectionError):
    """The broker could not be reached within ``scheduler.broker.send_timeout``."""


class AdminTimeout(SchedulerError, TimeoutError):
    """No (or not every) pscheduler child answered an admin command in time."""


class JobTimeout(Exception):
    """Raised inside a job that runs longer than its ``time_limit`` (see
    "Time limits" in README.rst). An ordinary Exception, not a
    SchedulerError: it ends the job as any error of its own would (a job
    may catch it to clean up)."""

    def __str__(self):
        return super().__str__() or 'the job ran longer than its time_limit'


class Retry(Exception):
    """Raised by a job to be run again after ``countdown`` seconds (None:
    the delay its retry options give). It counts against the job's
    ``retries``; a job with none (0) gets ``RETRY_EXCEPTION_RETRIES`` (3)
    for it. See "Retries" in README.rst."""

    def __init__(self, countdown=None, reason=None):
        if countdown is not None and (
                isinstance(countdown, bool)
                or not isinstance(countdown, (int, float))
                or not 0 <= countdown < float('inf')):
            raise ValueError(f'Retry(countdown=...) takes seconds (a number '
                             f'of at least 0) or None, not {countdown!r}')
        super().__init__(reason or 'the job asked to be retried')
        self.countdown = countdown
        self.reason = reason


class JobNotFound(SchedulerError, LookupError):
    """No status record of a job id (``scheduler.requeue``): a wrong id, or
    a record older than ``scheduler.results.ttl``."""
