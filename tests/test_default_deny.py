"""Issue 14, finding 1: nothing runs that the application did not allow.

By default only functions defined in the application's own package (its
Configurator's package) and under ``scheduler.allowed_modules`` run; the
standard library's process, file, import and network modules are refused
even under an allowed prefix unless named themselves. The fast tests check
the rule; the daemon test sends a thousand malformed and hostile messages
straight to the queue of a real pscheduler with the default settings (no
secret, no allowed_modules), on SQLite, Redis and RabbitMQ: none runs, all
are dead-lettered, the child lives on and serves the real jobs sent after.
"""
import datetime
import itertools
import json
import logging
import os
import uuid

import pytest
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError

from pyramid_scheduler import naming, transports, wire
from pyramid_scheduler.errors import InvalidJob
from pyramid_scheduler.execution import run_job
from pyramid_scheduler.references import (
    GUARDED_MODULES, AllowedFunctions, AllowedModules, check_allowed)
from pyramid_scheduler.scheduler import Scheduler
from pyramid_scheduler.settings import parse_settings
from tests import jobs
from tests.apps import appjobs
from tests.daemon_helpers import wait_for, write_ini

APP = 'tests.apps'   # the package of the test apps' Configurator
HOSTILE_COUNT = 1000
UNSIGNED_WARNING = 'scheduler.broker.secret is not set'


# --- the rule ----------------------------------------------------------------

@pytest.mark.parametrize('ref, modules, ok', [
    # The application's package, and nothing else, by default.
    ('tests.apps.appjobs:record', (), True),
    ('tests.jobs:record', (), False),
    ('tests.apps_evil:record', (), False),
    ('email.utils:formatdate', (), False),
    # ... plus the prefixes of scheduler.allowed_modules.
    ('tests.jobs:record', ('tests.jobs',), True),
    ('email.utils:formatdate', ('email',), True),
    ('email.utils:formatdate', ('email.',), True),
    # Re-exports through an allowed module are refused: what the reference
    # names must be defined in an allowed module.
    ('tests.apps.appjobs:os.system', (), False),
    ('tests.apps.appjobs:subprocess.run', (), False),
    ('tests.apps.appjobs:imported_record', (), False),
    ('tests.apps.appjobs:jobs.record', (), False),
    ('tests.apps.appjobs:imported_record', ('tests.jobs',), True),
    ('tests.apps.appjobs:record.__globals__', (), False),
    # Guarded modules: refused under "*" or any broad prefix...
    ('os:system', ('*',), False),
    ('posix:system', ('*',), False),
    ('os:popen', ('*',), False),
    ('subprocess:run', ('*',), False),
    ('builtins:exec', ('*',), False),
    ('builtins:eval', ('*',), False),
    ('shutil:rmtree', ('*',), False),
    ('os.path:join', ('*',), False),
    ('importlib:import_module', ('*',), False),
    ('logging.config:fileConfig', ('*', 'logging'), False),
    # ... allowed when named themselves (every module involved: os.system
    # is defined in posix).
    ('shutil:rmtree', ('shutil',), True),
    ('os.path:join', ('os.path', 'posixpath'), True),
    ('os:system', ('os',), False),
    ('os:system', ('os', 'posix'), True),
    ('logging.config:fileConfig', ('logging.config',), True),
    # "*" allows any other module.
    ('email.utils:formatdate', ('*',), True),
    ('tests.jobs:record', ('*',), True),
])
def test_the_allow_rule(ref, modules, ok):
    allowed = AllowedModules(modules=modules, app_package=APP)
    if ok:
        check_allowed(ref, allowed)
    else:
        with pytest.raises(InvalidJob, match='scheduler.allowed_modules'):
            check_allowed(ref, allowed)


@pytest.mark.parametrize('ref', [123, None, ['os', 'system'], 'os.system',
                                 '', ':system', '..tests:x'])
def test_what_is_not_a_reference_is_refused(ref):
    with pytest.raises(InvalidJob):
        check_allowed(ref, AllowedModules(modules=('*',), app_package=APP))


def test_a_refused_module_is_not_even_imported(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / 'deny_side_effect.py').write_text(
        f'open({str(tmp_path / "imported")!r}, "w").close()\n')
    with pytest.raises(InvalidJob):
        check_allowed('deny_side_effect:f', AllowedModules(app_package=APP))
    assert not (tmp_path / 'imported').exists()


def test_the_guard_covers_the_process_file_and_import_machinery():
    for module in ('builtins', 'os', 'posix', 'subprocess', 'importlib',
                   'shutil', 'pty', 'socket', 'sys', 'ctypes', 'pickle',
                   'marshal', 'code', 'runpy', 'multiprocessing', 'io',
                   'codecs', 'signal', 'timeit', 'pdb'):
        assert module in GUARDED_MODULES
        assert not AllowedModules(modules=('*',)).allows(module)
        assert AllowedModules(modules=(module,)).allows(module)


def test_the_setting_accepts_dotted_names_and_star_only(tmp_path):
    base = {'scheduler.database': str(tmp_path / 'db.sqlite')}
    parsed = parse_settings(dict(base, **{
        'scheduler.allowed_modules': 'myapp_tasks shared.jobs. *'}))
    assert parsed.allowed_modules == AllowedModules(
        modules=('myapp_tasks', 'shared.jobs.', '*'))
    assert parse_settings(base).allowed_modules == AllowedModules()
    for bad in ('os;rm', 'a..b', '.jobs', 'my-app', '**'):
        with pytest.raises(ConfigurationError,
                           match='scheduler.allowed_modules'):
            parse_settings(dict(base, **{'scheduler.allowed_modules': bad}))


def test_the_app_package_is_the_configurators(tmp_path):
    from tests.apps import simple
    app = simple.main({}, **{'scheduler.database': str(tmp_path / 'a.db')})
    assert app.registry.scheduler.settings.allowed_modules == AllowedModules(
        app_package='tests.apps')
    # A Configurator made here: this module's package.
    config = Configurator(settings={
        'scheduler.database': str(tmp_path / 'b.db'),
        'scheduler.allowed_modules': 'email'})
    config.include('pyramid_scheduler')
    config.commit()
    assert config.registry.scheduler.settings.allowed_modules == \
        AllowedModules(modules=('email',), app_package='tests')


def test_jobs_outside_the_app_are_refused_when_added(tmp_path):
    scheduler = Scheduler(parse_settings(
        {'scheduler.database': str(tmp_path / 'db.sqlite')}, app_package=APP))
    try:
        for func in (jobs.record, 'tests.jobs:record', 'os:system',
                     'tests.apps.appjobs:os.system'):
            with pytest.raises(InvalidJob, match='scheduler.allowed_modules'):
                scheduler.add_async_job(func, args=['x'])
        assert scheduler.producer._pool is None  # nothing was sent
        scheduler.add_async_job(appjobs.record, args=[str(tmp_path / 'r')])
    finally:
        scheduler.shutdown()


def test_a_job_is_checked_again_before_it_runs(tmp_path):
    marker = tmp_path / 'marker'
    spec = {'func': 'tests.jobs:record', 'args': [str(marker)], 'kwargs': {}}
    with pytest.raises(InvalidJob, match='scheduler.allowed_modules'):
        run_job(spec, allowed_modules=AllowedModules(app_package=APP))
    assert not marker.exists()
    run_job(spec, allowed_modules=AllowedModules(modules=('tests.jobs',)))
    assert marker.exists()


def test_the_dispatchers_functions_are_checked_once_and_refusals_always(
        tmp_path, monkeypatch):
    import pyramid_scheduler.references as references
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / 'deny_functions.py').write_text(
        'class Thing:\n    pass\n\n\nTHING = Thing()\n\n\n'
        'def job():\n    pass\n')
    checked = []
    real_check = references.check_allowed
    monkeypatch.setattr(references, 'check_allowed', lambda ref, allowed: (
        checked.append(ref), real_check(ref, allowed)))
    functions = AllowedFunctions(AllowedModules(modules=('deny_functions',)))
    job = functions.get('deny_functions:job')
    assert functions.get('deny_functions:job') is job
    assert checked == ['deny_functions:job']   # remembered once allowed
    for _ in range(2):
        with pytest.raises(InvalidJob, match='scheduler.allowed_modules'):
            functions.get('os:system')
        with pytest.raises(InvalidJob, match='not callable'):
            functions.get('deny_functions:THING')
    assert checked[1:] == ['os:system', 'deny_functions:THING'] * 2


# --- the warning about an unsigned network broker ------------------------------

@pytest.mark.parametrize('extra, warns', [
    ({'scheduler.broker.url': 'redis://:pw@127.0.0.1:1/0'}, True),
    ({'scheduler.broker.url': 'pyamqp://guest:guest@127.0.0.1:1//'}, True),
    ({'scheduler.broker.url': 'redis://127.0.0.1:1/0',
      'scheduler.broker.secret': 'x' * 32}, False),
    ({}, False),                                   # the embedded SQLite file
    ({'scheduler.broker.url': 'memory://'}, False),
], ids=['redis', 'amqp', 'redis-secret', 'embedded', 'memory'])
def test_an_unsigned_network_broker_is_warned_about_at_start(
        tmp_path, caplog, extra, warns):
    caplog.set_level(logging.WARNING)
    config = Configurator(settings=dict(
        extra, **{'scheduler.database': str(tmp_path / 'db.sqlite')}))
    config.include('pyramid_scheduler')
    config.commit()   # nothing connects: the URLs above lead nowhere
    found = [r.getMessage() for r in caplog.records
             if UNSIGNED_WARNING in r.getMessage()]
    assert len(found) == (1 if warns else 0), caplog.text
    if warns:
        [text] = found
        assert 'any arguments' in text and 'arguments' in text
        assert ":pw@" not in text and "guest:guest" not in text
        assert 'scheduler.broker.secret.file' in text


# --- a thousand hostile messages at a real daemon ------------------------------

def _now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


TRIGGERS = {
    'async': lambda: {},
    'date': lambda: {'run_date': {'__type__': 'datetime',
                                  '__value__': _now_iso()}},
    'interval': lambda: {'seconds': 1},
    'cron': lambda: {'second': '*'},
}


def _hostile_calls(marker, source, script):
    """(func, args, kwargs): each would create ``marker`` if it ran."""
    touch = f'touch {marker}'
    code = f'open({marker!r}, "w").close()'
    return [
        ('os:system', [touch], {}),
        ('posix:system', [touch], {}),
        ('os:popen', [touch], {}),
        ('os:execv', ['/usr/bin/touch', ['touch', marker]], {}),
        ('subprocess:run', [touch], {'shell': True}),
        ('subprocess:call', [['touch', marker]], {}),
        ('subprocess:check_call', [['touch', marker]], {}),
        ('subprocess:check_output', [touch], {'shell': True}),
        ('subprocess:getoutput', [touch], {}),
        ('subprocess:getstatusoutput', [touch], {}),
        ('subprocess:Popen', [['touch', marker]], {}),
        ('builtins:exec', [code], {}),
        ('builtins:eval', [code], {}),
        ('builtins:open', [marker, 'w'], {}),
        ('io:open', [marker, 'w'], {}),
        ('codecs:open', [marker, 'w'], {}),
        ('shutil:copyfile', [source, marker], {}),
        ('runpy:run_path', [script], {'init_globals': {'MARKER': marker}}),
        ('timeit:timeit', [code], {'number': 1}),
        ('pydoc:pipepager', ['x', touch], {}),
        ('pty:spawn', [['touch', marker]], {}),
        # Re-exports through the application's own modules.
        ('tests.apps.simple:os.system', [touch], {}),
        ('tests.apps.appjobs:os.system', [touch], {}),
        ('tests.apps.appjobs:subprocess.run', [touch], {'shell': True}),
        ('tests.apps.appjobs:imported_record', [marker], {}),
        ('tests.apps.appjobs:jobs.record', [marker], {}),
        ('tests.apps.appjobs:record.__globals__', [marker], {}),
        # Outside the application's package, or nowhere at all.
        ('tests.jobs:record', [marker], {}),
        ('tests.test_default_deny:_now_iso', [], {}),
        ('no_such_module_0xdeny:run', [marker], {}),
        ('tests.apps.no_such_module:run', [marker], {}),
        ('tests.apps.appjobs:no_such_function', [marker], {}),
        ('tests.apps.appjobs:', [marker], {}),
        (':system', [touch], {}),
        ('..apps:record', [marker], {}),
        # Not references at all.
        (123, [touch], {}),
        (None, [touch], {}),
        (['os', 'system'], [touch], {}),
        ({'module': 'os', 'name': 'system'}, [touch], {}),
        ('os.system', [touch], {}),
    ]


def _envelope(func, args, kwargs, kind, queue='jobs'):
    return wire.job_created(queue, {
        'id': uuid.uuid4().hex, 'kind': kind, 'func': func, 'args': args,
        'kwargs': kwargs, 'trigger': TRIGGERS[kind](), 'options': {},
        'created_at': 0.0})


def _malformed(marker):
    """Bodies that are not even a job the consumer could run."""
    good = _envelope('tests.apps.appjobs:record', [marker], {}, 'async')
    wrong_queue = _envelope('tests.apps.appjobs:record', [marker], {},
                            'async', queue='mail')
    bad_kind = json.loads(json.dumps(good))
    bad_kind['job']['kind'] = 'shell'
    string_args = json.loads(json.dumps(good))
    string_args['job']['args'] = f'touch {marker}'
    no_job = dict(good)
    del no_job['job']
    return [
        b'\x80\x81 not json',
        json.dumps([good]).encode(),
        json.dumps(dict(good, type='job.exploded')).encode(),
        json.dumps(dict(good, protocol='celery')).encode(),
        json.dumps(dict(good, version=99)).encode(),
        json.dumps(wrong_queue).encode(),
        json.dumps(bad_kind).encode(),
        json.dumps(string_args).encode(),
        json.dumps(no_job).encode(),
    ]


def hostile_bodies(directory, count=HOSTILE_COUNT):
    """``count`` raw message bodies, each with a marker of its own in
    ``directory / 'markers'``, which it would create if it ran."""
    markers = directory / 'markers'
    markers.mkdir()
    source = directory / 'source.txt'
    source.write_text('not to be copied\n')
    script = directory / 'script.py'
    script.write_text('open(MARKER, "w").close()\n')
    shapes = itertools.cycle(
        [(call, kind) for call in range(len(_hostile_calls('', '', '')))
         for kind in TRIGGERS] +
        [('malformed', n) for n in range(len(_malformed('')))])
    bodies = []
    for number, (shape, variant) in zip(range(count), shapes):
        marker = str(markers / str(number))
        if shape == 'malformed':
            bodies.append(_malformed(marker)[variant])
        else:
            func, args, kwargs = _hostile_calls(marker, str(source),
                                                str(script))[shape]
            bodies.append(json.dumps(
                _envelope(func, args, kwargs, variant)).encode())
    return bodies, markers


def publish_raw(settings, bodies, queue='jobs'):
    """Put messages on the queue as anyone with access to the broker can."""
    target = naming.job_queue(settings, queue)
    with transports.connect(settings) as connection:
        producer = connection.Producer()
        for body in bodies:
            producer.publish(body, routing_key=target.name, exchange='',
                             content_type='application/json',
                             content_encoding='utf-8', declare=[target])


def dead_letter_count(settings, queue='jobs'):
    with transports.connect(settings) as connection:
        bound = naming.dead_letter_queue(settings, queue)(
            connection.default_channel)
        return bound.queue_declare().message_count


def dead_letter_reasons(settings, limit, queue='jobs'):
    """The reasons of the first ``limit`` dead letters (left in place)."""
    reasons = []
    with transports.connect(settings) as connection:
        channel = connection.default_channel
        bound = naming.dead_letter_queue(settings, queue)(channel)
        for _ in range(limit):
            message = bound.get(no_ack=False)
            if message is None:
                break
            reasons.append(message.headers.get('x-pscheduler-reason'))
        channel.close()   # unacknowledged: back to the queue
    return reasons


@pytest.mark.slow
@pytest.mark.parametrize('broker', ['sqlite', 'redis', 'rabbitmq'])
def test_a_thousand_hostile_messages_run_nothing_and_the_child_serves_on(
        tmp_path, broker_for, daemons, broker):
    from pscheduler.config import load_config
    # The defaults: no secret, no allowed_modules (write_ini's tests.jobs
    # taken away). Only the app's package, tests.apps, may run.
    ini = write_ini(tmp_path / 'app.ini', settings=dict(
        broker_for(broker), **{'scheduler.allowed_modules': ''}))
    settings = load_config(str(ini)).settings
    daemon = daemons(ini)
    [child_pid] = daemon.wait_ready(['jobs']).values()

    bodies, markers = hostile_bodies(tmp_path)
    publish_raw(settings, bodies)
    # Until all are dead-lettered, or one ran (then it never will be).
    wait_for(lambda: dead_letter_count(settings) >= HOSTILE_COUNT
             or os.listdir(markers), 45, what=f'{HOSTILE_COUNT} dead letters')
    assert not os.listdir(markers), (
        f'{len(os.listdir(markers))} hostile messages ran')

    out = tmp_path / 'real'
    publish_raw(settings, [json.dumps(_envelope(
        'tests.apps.appjobs:record', [str(out), kind], {}, kind)).encode()
        for kind in ('async', 'async', 'date')])
    wait_for(lambda: len(jobs.read_records(str(out))) == 3, 20,
             what='the real jobs after the hostile ones')
    assert sorted(r['values'][0] for r in jobs.read_records(str(out))) == [
        'async', 'async', 'date']
    assert {r['pid'] for r in jobs.read_records(str(out))} == {child_pid}

    assert not os.listdir(markers), 'a hostile message ran late'
    assert dead_letter_count(settings) == HOSTILE_COUNT
    assert daemon.child_pids() == {'jobs': child_pid}
    assert daemon.process.poll() is None
    reasons = dead_letter_reasons(settings, 200)
    assert all(reasons) and any(
        'os:system' in r and 'scheduler.allowed_modules' in r
        for r in reasons), reasons[:20]
    # Told at start what an unsigned network broker lets anyone do.
    assert daemon.log_count(UNSIGNED_WARNING) == (
        0 if broker == 'sqlite' else 1), daemon.log()
