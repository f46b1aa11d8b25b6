"""Errors no retry fixes: a broker or job store refusing the configuration.

A broker that is down may come back, so a runtime retries it forever. One
that answers "wrong password", "no such virtual host" or "no such Redis
database" will say the same at every try: it is a configuration error, and
a pscheduler child must stop on it with exit code 3 (and its master with
it) instead of retrying quietly or booting five times. The same holds for a
job store database that does not exist or refuses the user.

The errors are recognised by class name and message, without importing the
optional clients (redis, amqp, psycopg2): the SQLite default has none.
"""
from pyramid.exceptions import ConfigurationError

from .values import redact_url

# amqp.exceptions: 403 ACCESS_REFUSED (login), 530 NOT_ALLOWED (vhost).
AMQP_REFUSALS = ('AccessRefused', 'NotAllowed')
# redis.exceptions: a wrong or missing password, an ACL that forbids us.
REDIS_REFUSALS = ('AuthenticationError',
                  'AuthenticationWrongNumberOfArgsError', 'NoPermissionError')
# What Redis answers to SELECT of a database it does not have.
REDIS_BAD_DATABASE = ('db index is out of range', 'invalid db index')
# Job store databases: what PostgreSQL, MySQL and SQLite say when the
# database, user or file is wrong (not when the server is down).
STORE_REFUSALS = ('does not exist', 'password authentication failed',
                  'no password supplied', 'access denied',
                  'unknown database', 'unable to open database file',
                  'permission denied', 'attempt to write a readonly database')


def broker_refusal(exc):
    """The one-line reason if ``exc`` is the broker refusing us, or None."""
    names = _class_names(exc)
    message = one_line(exc)
    if names & set(AMQP_REFUSALS + REDIS_REFUSALS):
        return message
    if 'ResponseError' in names and any(
            text in message.lower() for text in REDIS_BAD_DATABASE):
        return message
    return None


def store_refusal(exc):
    """The one-line reason if ``exc`` is the job store's database refusing
    us (no such database or user, wrong password, unwritable file), or
    None (down, or some other error)."""
    message = one_line(exc)
    if any(text in message.lower() for text in STORE_REFUSALS):
        return message
    return None


def store_configuration_error(exc, settings):
    """A ConfigurationError naming the job store's key if ``exc`` is its
    database refusing us (see store_refusal), else None."""
    refusal = store_refusal(exc)
    if refusal is None:
        return None
    key = 'jobstore.default.class' if settings.jobstore_class else \
        'jobstore.url'
    return ConfigurationError(
        f'setting "scheduler.{key}": the job store refused '
        f'{redact_url(settings.jobstore_url)}: {refusal}')


def one_line(exc):
    """``exc`` as one log line: SQLAlchemy's and libpq's messages span
    several, and end with a link that says nothing about the cause."""
    lines = [line.strip() for line in str(exc).splitlines()]
    lines = [line for line in lines
             if line and not line.startswith('(Background on this error')]
    return '; '.join(lines) or type(exc).__name__


def _class_names(exc):
    return {cls.__name__ for cls in type(exc).__mro__}
