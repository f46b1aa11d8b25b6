"""The dashboard in a real headless Chromium, against a real pscheduler.

One daemon runs the jobs; the test process serves the dashboard's app
(waitress, in a thread) and sends jobs as a web app does. The browser opens
the overview and sees the daemon's real pids, goes to the scheduled jobs and
a job's page, and requeues a failed job, which then runs. Screenshots of
each step are saved in the test's tmp dir. See tests/browser.py for the
browser, scripts/services.sh for its install.
"""
import datetime

import pytest
from pyramid.paster import get_app, get_appsettings
from selenium.webdriver.common.by import By
from webtest.http import StopableWSGIServer

from tests import browser, jobs
from tests.apps import dashboard as dashboard_app
from tests.daemon_helpers import state_of, wait_for, write_ini

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(browser.missing() is not None,
                                 reason=browser.missing() or '')]

OPEN = '__no_permission_required__'


@pytest.fixture
def served():
    """``serve(app)`` -> its base URL (ends with /), served in a thread."""
    servers = []

    def serve(app):
        server = StopableWSGIServer.create(app)
        servers.append(server)
        assert server.wait()
        return server.application_url

    yield serve
    for server in servers:
        server.shutdown()


def text_of(driver):
    from selenium.common.exceptions import WebDriverException
    try:
        return driver.find_element(By.TAG_NAME, 'body').text
    except WebDriverException:   # between two pages
        return ''


def wait_text(driver, text, timeout=30):
    return wait_for(lambda: text in text_of(driver), timeout,
                    what=f'{text!r} on {driver.current_url}:\n'
                         f'{text_of(driver)}')


def click(driver, by, value, timeout=30):
    """Click the element once it is there (the overview reloads itself
    every 5 s: an element may be gone for a moment)."""
    from selenium.common.exceptions import WebDriverException

    def clicked():
        try:
            driver.find_element(by, value).click()
        except WebDriverException:
            return False
        return True
    wait_for(clicked, timeout, what=f'{value!r} to click on '
             f'{driver.current_url}:\n{text_of(driver)}')


def test_overview_job_page_and_requeue_in_chromium(tmp_path, daemons,
                                                   served):
    ini = write_ini(tmp_path / 'app.ini', app='tests.apps.dashboard:main',
                    settings={'scheduler.dashboard.permission': OPEN})
    daemon = daemons(ini)
    pids = daemon.wait_ready(['jobs'])
    app = get_app(str(ini))
    scheduler = app.registry.scheduler
    base = served(app)
    flag = tmp_path / 'fixed'
    failed_id = scheduler.add_async_job(jobs.fail_unless_exists,
                                        args=[str(flag), 'ran after requeue'])
    scheduler.add_cron_job(jobs.noop, hour=9, minute=0, id='dash-cron')
    scheduler.add_date_job(jobs.noop, datetime.datetime.now() +
                           datetime.timedelta(days=1), id='dash-later')
    state_of(scheduler, failed_id, 'failed', daemon)
    shots = tmp_path / 'screenshots'
    shots.mkdir()

    with browser.chromium(tmp_path / 'profile') as driver:
        driver.get(base + 'scheduler')      # redirected to /scheduler/
        wait_text(driver, 'Processes')
        pids_shown = {e.text for e in
                      driver.find_elements(By.CSS_SELECTOR, 'span.pid')}
        # the child's, and (status carrying the whole daemon) the master's
        assert {str(pids['jobs']), str(daemon.pid)} <= pids_shown, \
            text_of(driver)
        driver.save_screenshot(str(shots / '1-overview.png'))
        # On a phone: the page does not scroll sideways (its tables do).
        driver.set_window_size(390, 844)
        driver.refresh()
        wait_text(driver, 'Processes')
        assert driver.execute_script(
            'return document.documentElement.scrollWidth '
            '<= window.innerWidth')
        driver.save_screenshot(str(shots / '1-overview-phone.png'))
        driver.set_window_size(1280, 900)

        click(driver, By.LINK_TEXT, 'Scheduled jobs')
        wait_text(driver, 'dash-later')
        driver.save_screenshot(str(shots / '2-jobs.png'))
        click(driver, By.LINK_TEXT, 'dash-cron')
        wait_text(driver, 'every day at 09:00')
        driver.save_screenshot(str(shots / '3-job.png'))

        click(driver, By.LINK_TEXT, 'Failed jobs')
        wait_text(driver, '1 failed job(s)')
        click(driver, By.LINK_TEXT, failed_id)
        wait_text(driver, 'Traceback')     # the job's page
        assert 'RuntimeError' in text_of(driver)
        driver.save_screenshot(str(shots / '4-failed-job.png'))
        flag.write_text('')
        click(driver, By.XPATH, '//button[text()="Requeue"]')
        wait_text(driver, 'requeued')
        state_of(scheduler, failed_id, 'succeeded', daemon)
        driver.refresh()
        wait_text(driver, 'succeeded')
        assert 'ran after requeue' in text_of(driver)
        driver.save_screenshot(str(shots / '5-requeued.png'))

        # The same dashboard in an app whose policy grants this browser
        # nothing: refused.
        guarded = dashboard_app.main({}, **dict(
            get_appsettings(str(ini)), **{
                'test.security': 'admin',
                'scheduler.dashboard.permission': 'scheduler.dashboard'}))
        guarded_base = served(guarded)
        driver.get(guarded_base + 'scheduler/')
        wait_text(driver, '403 Forbidden')
        driver.save_screenshot(str(shots / '6-refused.png'))
    assert len(list(shots.glob('*.png'))) == 7
