"""Settings validation, and what ``config.include('pyramid_scheduler')`` does
(and does not do) at include time."""
import logging
import os
import threading

import pytest
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from webtest import TestApp

from pyramid_scheduler import Scheduler
from pyramid_scheduler.settings import parse_settings
from tests.conftest import base_settings, poll


def _parse(tmp_path, **settings):
    return parse_settings({f'scheduler.{k}': v for k, v in settings.items()},
                          here=str(tmp_path))


def test_defaults(tmp_path):
    settings = parse_settings({}, here=str(tmp_path))
    assert settings.combined is False
    assert settings.queues == ('jobs',)
    assert settings.default_queue == 'jobs'
    assert settings.embedded
    assert settings.database_path == str(tmp_path / 'pscheduler.sqlite')
    assert settings.jobstore_url == 'sqlite:///' + str(
        tmp_path / 'pscheduler.sqlite')
    assert settings.serializer == 'json'
    assert settings.compressor is None
    assert settings.misfire_grace_time == 3600
    assert settings.housekeeping_interval == 86400
    assert settings.transactional is True
    assert settings.executor_size('jobs') == 4


def test_values(tmp_path):
    settings = _parse(
        tmp_path, combined='true', queues='jobs reports\nmail',
        database=str(tmp_path / 'x' / 'db.sqlite'), housekeeping='1h 30m',
        **{'broker.serializer': 'pickle', 'broker.compressor': 'zlib',
           'executor.size': '2', 'queue.mail.executor.size': '1',
           'misfire_grace_time': '15m', 'timezone': 'Europe/Paris',
           'delegator': 'tests.jobs:delegator',
           'housekeeping.append': 'tests.jobs.housekeeping_append'})
    assert settings.combined is True
    assert settings.queues == ('jobs', 'reports', 'mail')
    assert settings.database_path == str(tmp_path / 'x' / 'db.sqlite')
    assert settings.housekeeping_interval == 5400
    assert settings.serializer == 'pickle'
    assert settings.compressor == 'zlib'
    assert settings.executor_size('jobs') == 2
    assert settings.executor_size('mail') == 1
    assert settings.misfire_grace_time == 900
    assert str(settings.timezone) == 'Europe/Paris'
    from tests import jobs
    assert settings.delegator is jobs.delegator
    assert settings.housekeeping_append is jobs.housekeeping_append


@pytest.mark.parametrize('key, value, fragment', [
    ('combined', 'maybe', 'a boolean'),
    ('housekeeping', 'abc', 'a duration'),
    ('housekeeping', '-5', 'a duration'),
    ('queues', 'jobs bad/name', 'queue names of letters'),
    ('queues', 'jobs jobs', 'without duplicates'),
    ('queues', '', 'at least one queue'),
    ('broker.serializer', 'nope', 'one of the kombu serializers'),
    ('broker.compressor', 'lzma9', 'none or one of'),
    ('executor.size', '0', 'at least 1'),
    ('executor.size', 'many', 'at least 1'),
    ('timezone', 'Mars/Base', 'IANA time zone'),
    ('misfire_grace_time', 'soon', 'a duration'),
    ('misfire_grace_time', '0.5', 'at least 1'),
    ('coalesce', 'sometimes', 'a boolean'),
    ('transactional', '2', 'a boolean'),
    ('delegator', 'tests.jobs:no_such_thing', 'an importable dotted name'),
    ('housekeeping.append', 'no_such_module_xyz.f', 'importable dotted name'),
    ('jobstore.default.class', 'nowhere.Store', 'importable dotted name'),
    ('broker.send_timeout', 'forever', 'a duration'),
    ('shutdown_timeout', '1 week', 'a duration'),
    ('child.memory_limit', 'lots', 'a size'),
    ('broker.secret', 'short', 'at least 16 characters'),
    ('metrics.bind', '9464', 'HOST:PORT'),
    ('metrics.bind', '127.0.0.1:99999', 'HOST:PORT'),
    ('metrics.bind', 'localhost:http', 'HOST:PORT'),
])
def test_bad_settings_raise_configuration_error_naming_the_key(
        tmp_path, key, value, fragment):
    with pytest.raises(ConfigurationError) as info:
        _parse(tmp_path, **{key: value})
    message = str(info.value)
    assert f'"scheduler.{key}"' in message
    assert fragment in message


def test_bad_queue_executor_size(tmp_path):
    with pytest.raises(ConfigurationError,
                       match=r'"scheduler\.queue\.mail\.executor\.size"'):
        _parse(tmp_path, queues='jobs mail',
               **{'queue.mail.executor.size': '0'})


def test_bad_settings_fail_the_app_at_startup(tmp_path):
    # Through the include, the error comes out of config.commit() (pyramid
    # wraps it) and still names the key.
    config = Configurator(settings={'scheduler.combined': 'maybe',
                                    'scheduler.database': str(
                                        tmp_path / 'db.sqlite')})
    config.include('pyramid_scheduler')
    with pytest.raises(ConfigurationError) as info:
        config.make_wsgi_app()
    assert '"scheduler.combined"' in str(info.value)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize('key, suggestion', [
    ('combinde', 'scheduler.combined'),
    ('queue', 'scheduler.queues'),
    ('broker.serialiser', 'scheduler.broker.serializer'),
    ('misfire_grace', 'scheduler.misfire_grace_time'),
])
def test_unknown_key_warns_with_the_closest_known_key(
        tmp_path, caplog, key, suggestion):
    caplog.set_level(logging.WARNING, logger='pyramid_scheduler')
    _parse(tmp_path, **{key: 'x'})
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f'"scheduler.{key}"' in record.getMessage()
    assert f'did you mean "{suggestion}"' in record.getMessage()


def test_pass_through_keys_do_not_warn(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger='pyramid_scheduler')
    settings = _parse(tmp_path, **{'apscheduler.job_defaults.max_instances':
                                   '2'})
    assert settings.apscheduler_options == {
        'apscheduler.job_defaults.max_instances': '2'}
    assert not caplog.records


def test_non_scheduler_keys_are_ignored(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger='pyramid_scheduler')
    parse_settings({'sqlalchemy.url': 'x', 'schedule': 'y'},
                   here=str(tmp_path))
    assert not caplog.records


# --- the include ------------------------------------------------------------------

def _threads():
    return threading.active_count()


def test_include_adds_registry_and_request_scheduler(tmp_path):
    before = _threads()
    config = Configurator(settings=base_settings(tmp_path))
    config.include('pyramid_scheduler')
    config.add_route('home', '/')
    config.add_view(lambda request: {
        'same': request.scheduler is request.registry.scheduler,
        'runtime': request.scheduler.runtime is not None},
        route_name='home', renderer='json')
    app = config.make_wsgi_app()
    try:
        assert isinstance(app.registry.scheduler, Scheduler)
        assert app.registry.scheduler.settings.combined is True
        # Nothing connected, nothing started, no file made: not even by
        # make_wsgi_app (ApplicationCreated).
        assert _threads() == before
        assert os.listdir(tmp_path) == []
        assert app.registry.scheduler.runtime is None
        # The first request starts the combined-mode runtime.
        assert TestApp(app).get('/').json == {'same': True, 'runtime': True}
        assert os.path.exists(tmp_path / 'scheduler.sqlite')
        assert _threads() > before
    finally:
        app.registry.scheduler.shutdown(timeout=5)
    poll(lambda: _threads() == before)


def test_pyramid_includes_setting(tmp_path):
    before = _threads()
    config = Configurator(settings=base_settings(
        tmp_path, **{'pyramid.includes': 'pyramid_scheduler',
                     'scheduler.combined': 'false'}))
    config.add_route('home', '/')
    config.add_view(lambda request: {
        'scheduler': type(request.scheduler).__name__},
        route_name='home', renderer='json')
    app = config.make_wsgi_app()
    assert isinstance(app.registry.scheduler, Scheduler)
    assert TestApp(app).get('/').json == {'scheduler': 'Scheduler'}
    # Not combined: requests never start a runtime, nothing is created
    # until a job is added.
    assert app.registry.scheduler.runtime is None
    assert _threads() == before
    assert os.listdir(tmp_path) == []
    from tests import jobs
    app.registry.scheduler.add_async_job(jobs.noop)
    assert os.path.exists(tmp_path / 'scheduler.sqlite')
    assert app.registry.scheduler.runtime is None
    app.registry.scheduler.shutdown()


def test_settings_added_after_the_include_are_seen(tmp_path):
    config = Configurator(settings={'scheduler.database': str(
        tmp_path / 'db.sqlite')})
    config.include('pyramid_scheduler')
    config.add_settings({'scheduler.queues': 'jobs later'})
    app = config.make_wsgi_app()
    assert app.registry.scheduler.settings.queues == ('jobs', 'later')


def test_scheduler_before_commit_says_what_to_do(tmp_path):
    config = Configurator(settings=base_settings(tmp_path))
    config.include('pyramid_scheduler')
    from tests import jobs
    with pytest.raises(RuntimeError, match='not configured yet'):
        config.registry.scheduler.add_async_job(jobs.noop)


# --- where the settings code lives ------------------------------------------------

def _package_imports(module):
    import ast
    with open(module.__file__, encoding='utf-8') as handle:
        tree = ast.parse(handle.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            # "from .x import y" imports x; "from . import x" imports x too.
            imported.update([node.module] if node.module else
                            [alias.name for alias in node.names])
    return imported


def test_settings_import_neither_signing_nor_broker():
    # Reading settings needs no crypto and no transport (the master reads
    # them before it forks): only the value parsers and the secret sources.
    from pyramid_scheduler import secretsource, settings, storesettings, \
        values
    from pyramid_scheduler import options
    assert _package_imports(settings) == {'extras', 'errors', 'options',
                                          'references', 'secretsource',
                                          'storesettings', 'values'}
    assert _package_imports(options) == {'values'}
    assert _package_imports(secretsource) == {'values'}
    assert _package_imports(storesettings) == {'values'}
    assert _package_imports(values) == set()


def test_every_key_is_known_once():
    from pyramid_scheduler.settings import KNOWN_KEYS
    assert len(KNOWN_KEYS) == len(set(KNOWN_KEYS)) == 45
