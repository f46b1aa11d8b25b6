"""The dashboard's views through WebTest (no daemon): who may see it, the
CSRF check of its actions, its settings, and pages escaping what they show.
The pages with a real daemon and a real browser: test_dashboard_browser."""
import re

import socket

import pytest
from pyramid.exceptions import ConfigurationError
from pyramid.request import Request
from webtest import TestApp

from pyramid_scheduler.dashboard import data, guard, pages
from pyramid_scheduler.dashboard.guard import COOKIE, FIELD
from tests.apps import dashboard as dashboard_app

OPEN = '__no_permission_required__'
ADMIN = {dashboard_app.USER_HEADER: 'admin'}


def make_app(tmp_path, **settings):
    values = {'scheduler.database': str(tmp_path / 'pscheduler.sqlite'),
              'scheduler.admin.timeout': '1s'}
    values.update(settings)
    return dashboard_app.main({}, **values)


def form_token(page):
    return re.search(f'name="{FIELD}" value="([^"]+)"', page.text).group(1)


def test_without_a_security_policy_every_page_is_refused(tmp_path):
    app = TestApp(make_app(tmp_path))
    page = app.get('/scheduler/failed', status=403)
    assert 'has no security policy' in page.text
    assert '__no_permission_required__' in page.text
    app.post('/scheduler/purge-failed', status=403)


def test_a_policy_that_does_not_grant_the_permission_refuses(tmp_path):
    app = TestApp(make_app(tmp_path, **{'test.security': 'admin'}))
    app.get('/scheduler/failed', status=403)
    app.get('/scheduler/failed', headers={'X-User': 'someone'}, status=403)
    page = app.get('/scheduler/failed', headers=ADMIN, status=200)
    assert '0 failed job(s)' in page.text


def test_the_permission_may_open_it_to_everyone(tmp_path):
    app = TestApp(make_app(tmp_path, **{
        'scheduler.dashboard.permission': OPEN}))
    app.get('/scheduler/failed', status=200)


def test_a_post_without_the_csrf_token_is_refused(tmp_path):
    app = TestApp(make_app(tmp_path, **{'test.security': 'admin'}))
    page = app.get('/scheduler/failed', headers=ADMIN)
    token = form_token(page) if FIELD in page.text else None
    assert token is None   # no failed job: no button, but a cookie
    assert COOKIE in app.cookies
    app.post('/scheduler/purge-failed', headers=ADMIN, status=400)
    app.post('/scheduler/purge-failed', {FIELD: 'f' * 64}, headers=ADMIN,
             status=400)
    done = app.post('/scheduler/purge-failed', {FIELD: app.cookies[COOKIE]},
                    headers=ADMIN, status=303)
    assert 'purged+0' in done.location


def test_the_apps_own_csrf_storage_is_used_when_it_has_one(tmp_path,
                                                           monkeypatch):
    app = TestApp(make_app(tmp_path, **{'test.security': 'admin',
                                        'test.session': 'true'}))
    seen = []
    original = guard.csrf_token
    monkeypatch.setattr(guard, 'csrf_token', lambda request, options: (
        seen.append(original(request, options)) or seen[-1]))
    app.get('/scheduler/failed', headers=ADMIN)
    assert COOKIE not in app.cookies      # the session keeps the token
    assert 'session' in app.cookies
    app.post('/scheduler/purge-failed', {FIELD: 'f' * 64}, headers=ADMIN,
             status=400)
    app.post('/scheduler/purge-failed', {FIELD: seen[-1]}, headers=ADMIN,
             status=303)


def test_the_prefix_is_a_setting(tmp_path):
    app = TestApp(make_app(tmp_path, **{
        'scheduler.dashboard.prefix': '/admin/jobs/',
        'scheduler.dashboard.permission': OPEN}))
    app.get('/admin/jobs/failed', status=200)
    assert app.get('/admin/jobs', status=303).location.endswith(
        '/admin/jobs/')
    app.get('/scheduler/failed', status=404)


@pytest.mark.parametrize('key, value, words', [
    ('scheduler.dashboard.prefix', 'scheduler', 'starting with "/"'),
    ('scheduler.dashboard.permission', ' ', '__no_permission_required__'),
])
def test_a_bad_setting_fails_the_commit(tmp_path, key, value, words):
    with pytest.raises(ConfigurationError, match=re.escape(words)):
        make_app(tmp_path, **{key: value})


def test_pages_escape_what_they_show(tmp_path):
    app = make_app(tmp_path)
    request = Request.blank('/scheduler/jobs')
    request.registry = app.registry
    evil = '<script>alert(1)</script>'
    body = pages.jobs(request, {
        'queue': 'jobs', 'page': 1, 'search': evil, 'answered': True,
        'error': None, 'total': 1, 'capped': False,
        'jobs': [{'id': evil, 'name': evil, 'trigger': evil,
                  'trigger_words': evil, 'next_run_time': None}]}, ['jobs'])
    assert '<script>' not in body
    assert '&lt;script&gt;' in body


def test_processes_come_once_per_daemon_or_from_each_queue():
    daemon = {'host': 'h', 'master_pid': 1, 'processes': [
        {'role': 'master', 'pid': 1}, {'role': 'child', 'pid': 2}]}
    rows = data.processes({'a': {'pid': 2, 'daemon': daemon},
                           'b': {'pid': 3, 'daemon': daemon}})
    assert [row['pid'] for row in rows] == [1, 2]
    assert rows[0]['host'] == 'h'
    old = data.processes({'a': {'queue': 'a', 'pid': 2, 'executed': 4,
                                'failed': 1, 'retried': 0,
                                'threads': {'scheduler': 'alive'}}})
    assert old[0]['pid'] == 2 and old[0]['scheduler_alive'] is True
    assert old[0]['since_start'] == {'executed': 4, 'failed': 1,
                                     'retried': 0}


def test_restarts_come_once_per_daemon_and_are_shown():
    from pyramid_scheduler.dashboard import pages
    entry = {'queue': 'jobs', 'slot': 0, 'reason': 'killed', 'count': 2}
    daemon = {'host': 'h', 'master_pid': 1, 'restarts': [entry]}
    found = data.restarts({'a': {'daemon': daemon}, 'b': {'daemon': daemon},
                           'c': {}})
    assert found == [dict(entry, host='h')]
    assert 'jobs #1: killed &times;2' in pages._restarts(found)
    assert 'No child restarted' in pages._restarts([])


@pytest.mark.slow   # the job's page waits for the absent daemon's answer
def test_a_requeue_the_scheduler_refuses_comes_back_as_a_message(tmp_path):
    app = TestApp(make_app(tmp_path, **{
        'scheduler.dashboard.permission': OPEN}))
    app.get('/scheduler/failed')
    done = app.post('/scheduler/requeue', {FIELD: app.cookies[COOKIE],
                                           'id': 'no-such-job'}, status=303)
    assert '/scheduler/job/no-such-job?msg=%21' in done.location
    page = done.follow()
    assert 'class="msg warn"' in page.text and 'no-such-job' in page.text
    app.post('/scheduler/requeue', {FIELD: app.cookies[COOKIE]}, status=400)


@pytest.mark.slow
def test_pages_of_a_real_daemons_jobs(tmp_path, daemons):
    """Paging and search through the admin commands of a real pscheduler."""
    from pyramid.paster import get_app

    from tests import jobs
    from tests.daemon_helpers import stored_job_ids, wait_for, write_ini
    ini = write_ini(tmp_path / 'app.ini', app='tests.apps.dashboard:main',
                    settings={'scheduler.dashboard.permission': OPEN})
    daemon = daemons(ini)
    pids = daemon.wait_ready(['jobs'])
    app = get_app(str(ini))
    for n in range(60):
        app.registry.scheduler.add_interval_job(jobs.noop, minutes=n + 1,
                                                id=f'job-{n}')
    wait_for(lambda: len(stored_job_ids(ini, 'jobs')) == 60, 30,
             what='60 stored jobs')
    web = TestApp(app)
    overview = web.get('/scheduler/').text
    assert f'<span class="pid">{pids["jobs"]}</span>' in overview
    assert f'{socket.gethostname()} pid {pids["jobs"]}' in overview
    first = web.get('/scheduler/jobs')
    assert '60 deferred job(s) stored in queue jobs; #1-50' in first.text
    assert 'every 1 minute' in first.text and 'every 2 minutes' in first.text
    second = first.click('next »')
    assert '#51-60' in second.text and 'next »' not in second.text
    assert '« previous' in second.text and 'job-59' in second.text
    found = web.get('/scheduler/jobs', {'q': 'job-5'})
    assert '11 deferred job(s) matching job-5' in found.text
    assert web.get('/scheduler/jobs', {'queue': 'nope'},
                   status=400).status_int == 400
    # Asked again if the daemon did not answer in time (a loaded machine).
    one = wait_for(lambda: (lambda page: page if 'No answer' not in page.text
                            else None)(web.get('/scheduler/job/job-9')), 30,
                   what='the job page with the daemon\'s answer')
    assert 'every 10 minutes' in one.text and 'tests.jobs:noop' in one.text
    letters = web.get('/scheduler/dead-letters')
    assert 'jobs: 0 in' in letters.text
    purged = web.post('/scheduler/purge-dead-letters',
                      {FIELD: web.cookies[COOKIE], 'queue': 'jobs'},
                      status=303).follow()
    assert 'purged 0 dead letter(s) of jobs' in purged.text
    requeued = web.post('/scheduler/requeue-dead-letters',
                        {FIELD: web.cookies[COOKIE], 'queue': 'jobs'},
                        status=303).follow()
    assert 'requeued 0 dead letter(s) of jobs' in requeued.text
