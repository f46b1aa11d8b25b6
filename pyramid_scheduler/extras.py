"""Which optional extra a configured URL needs, checked before anything runs.

The SQLite default needs nothing beyond ``pip install pyramid_scheduler``:
the Redis client and database drivers are extras, imported only when a URL
asks for them. A URL whose extra is not installed is refused while the
settings are read (in the web app at ``config.commit()``, in the pscheduler
master before it forks) with one line that names the pip command, instead of
a ModuleNotFoundError from deep inside kombu or SQLAlchemy at the first job.
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
    except ArgumentError as exc:
        return f'not a database URL SQLAlchemy can read ({exc})'
    except NoSuchModuleError as exc:
        return f'SQLAlchemy has no dialect for it ({exc})'
    except ImportError as exc:
        extra = DATABASE_EXTRAS.get(parsed.get_backend_name())
        hint = (f"pip install 'pyramid_scheduler[{extra}]'" if extra else
                f'install the driver of {parsed.drivername!r}')
        return f'its database driver is not installed ({exc}): {hint}'
    return None
