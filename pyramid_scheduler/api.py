"""The public names of pyramid_scheduler, as the 0.3.x ``api`` module had them."""
from .errors import (  # noqa: F401 (re-exported)
    BrokerUnavailable, ConfigurationError, InvalidJob, InvalidMessage,
    InvalidQueue, JobNotFound, JobTimeout, Retry, SchedulerError)
from .events import Event  # noqa: F401

__all__ = ['BrokerUnavailable', 'ConfigurationError', 'Event', 'InvalidJob',
           'InvalidMessage', 'InvalidQueue', 'JobNotFound', 'JobTimeout',
           'Retry', 'SchedulerError']
