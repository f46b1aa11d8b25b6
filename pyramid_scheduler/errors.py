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


class JobNotFound(SchedulerError, LookupError):
    """No status record of a job id (``scheduler.requeue``): a wrong id, or
    a record older than ``scheduler.results.ttl``."""
