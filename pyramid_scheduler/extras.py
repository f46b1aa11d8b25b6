"""Whether a configured URL can work, checked before anything runs: it parses,
kombu has a transport for its scheme, and its optional extra is installed.

The SQLite default needs nothing beyond ``pip install pyramid_scheduler``:
the Redis client and database drivers are extras, imported only when a URL
asks for them. A URL whose extra is not installed is refused while the
settings are read (in the web app at ``config.commit()``, in the pscheduler
master before it forks) with one line that names the pip command, instead of
a ModuleNotFoundError from deep inside kombu or SQLAlchemy at the first job.
A broker URL kombu cannot use (``not a url``, ``foo://``, a Redis database
that is not a number) is refused the same way: kombu would only find out in
a pscheduler child, which would retry it as if the broker were down.
"""
import importlib.util

# Broker URL scheme -> (extra, module that extra brings). kombu itself
# depends on ``amqp``, so AMQP URLs always work; the extra pins its range.
BROKER_EXTRAS = {
    'redis': ('redis', 'redis'),
    'rediss': ('redis', 'redis'),
    'sentinel': ('redis', 'redis'),
    'redis+socket': ('redis', 'redis'),
    'amqp': ('amqp', 'amqp'),
    'amqps': ('amqp', 'amqp'),
    'pyamqp': ('amqp', 'amqp'),
}

# SQLAlchemy dialect name -> the extra that brings its default driver.
DATABASE_EXTRAS = {
    'postgresql': 'postgres',
}


def scheme(url):
    return str(url).split(':', 1)[0].strip().lower()


# Redis URL schemes whose path is a database number (``redis://host/3``).
REDIS_SCHEMES = ('redis', 'rediss')


def broker_url_problem(url):
    """A message saying why broker ``url`` cannot work, or None.

    Every URL of kombu's failover form ``url1;url2`` must have a scheme
    kombu has a transport for; its extra must be installed.
    """
    for part in str(url).split(';'):
        problem = _broker_part_problem(part.strip())
        if problem:
            return problem
    return missing_broker_extra(url)


def _broker_part_problem(url):
    from urllib.parse import urlsplit

    from kombu.transport import TRANSPORT_ALIASES
    name, sep, rest = url.partition('://')
    if not sep or not name or ' ' in url:
        return ('not a URL: expected SCHEME://..., e.g. '
                'redis://127.0.0.1:6379/0 or pyamqp://user:pw@host//')
    # kombu reads ``transport+url`` (redis+socket://) as transport "redis".
    transport = name.lower().split('+', 1)[0]
    if transport not in TRANSPORT_ALIASES:
        return (f'kombu has no transport for {name!r} (known: '
                f'{", ".join(sorted(TRANSPORT_ALIASES, key=str.lower))})')
    if name.lower() in REDIS_SCHEMES:
        database = urlsplit(url).path.strip('/')
        if database and not database.isdigit():
            return (f'the Redis database must be a number, not '
                    f'{database!r}')
    return None


def missing_broker_extra(url):
    """A message saying what to install for broker ``url``, or None."""
    extra, module = BROKER_EXTRAS.get(scheme(url.split(';', 1)[0]),
                                      (None, None))
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return (f'the broker URL needs the {module!r} package: '
            f"pip install 'pyramid_scheduler[{extra}]'")


def missing_database_driver(url):
    """A message saying what to install for job store ``url``, or None.

    SQLAlchemy knows which driver a URL names (``postgresql://`` means
    psycopg2); importing it is what a job store would do first.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
        dialect.import_dbapi()
    except NoSuchModuleError as exc:  # an ArgumentError: catch it first
        return f'SQLAlchemy has no dialect for it ({exc})'
    except ArgumentError as exc:
        return f'not a database URL SQLAlchemy can read ({exc})'
    except ImportError as exc:
        extra = DATABASE_EXTRAS.get(parsed.get_backend_name())
        hint = (f"pip install 'pyramid_scheduler[{extra}]'" if extra else
                f'install the driver of {parsed.drivername!r}')
        return f'its database driver is not installed ({exc}): {hint}'
    return None
