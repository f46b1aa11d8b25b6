"""Write the dashboard overview's screenshot (run by scripts/screenshot).

Copies demo/demo.ini into a temporary directory (so the demo's database
there is fresh), starts ``pscheduler`` on it, serves the demo app with
waitress in a thread, sends a few jobs of each kind (one of them failing),
waits for them, then opens the overview in headless Chromium
(tests/browser.py) and saves it to the path given.
"""
import datetime
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / 'demo')]

from pyramid.paster import get_app  # noqa: E402
from webtest.http import StopableWSGIServer  # noqa: E402

from tests import browser  # noqa: E402

WIDTH, HEIGHT = 1440, 640


def wait_until_answered(scheduler, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies, missing = scheduler.send_message('ping', wait=True,
                                                  timeout=2)
        if replies and not missing:
            return
    raise SystemExit('screenshot: pscheduler did not answer within '
                     f'{timeout}s')


def send_jobs(scheduler, runs):
    from demoapp import jobs
    scheduler.add_interval_job(jobs.record_run, seconds=10,
                               args=[runs, 'interval', 'every 10 s'],
                               id='demo-interval')
    scheduler.add_cron_job(jobs.record_run, hour=9, minute=0,
                           args=[runs, 'cron', 'daily'], id='demo-daily')
    scheduler.add_date_job(jobs.record_run, datetime.datetime.now() +
                           datetime.timedelta(hours=1),
                           args=[runs, 'date', 'in an hour'])
    done = [scheduler.add_async_job(jobs.record_run,
                                    args=[runs, 'async', f'#{n}'])
            for n in range(5)]
    done.append(scheduler.add_async_job(jobs.failing_job, args=['demo']))
    for job_id in done:
        scheduler.wait(job_id, timeout=60)


def main(output):
    problem = browser.missing()
    if problem:
        raise SystemExit(f'screenshot: {problem}')
    work = pathlib.Path(tempfile.mkdtemp(prefix='pscheduler-screenshot-'))
    ini = work / 'demo.ini'
    shutil.copy(ROOT / 'demo' / 'demo.ini', ini)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), str(ROOT / 'demo')]))
    with open(work / 'pscheduler.log', 'wb') as log:
        daemon = subprocess.Popen(
            [sys.executable, '-m', 'pscheduler', str(ini)], cwd=work,
            env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
    server = None
    try:
        app = get_app(str(ini))
        scheduler = app.registry.scheduler
        wait_until_answered(scheduler)
        send_jobs(scheduler, str(work / 'demo-runs.jsonl'))
        server = StopableWSGIServer.create(app)
        server.wait()
        with browser.chromium(work / 'profile', WIDTH, HEIGHT) as driver:
            driver.get(server.application_url + 'scheduler/')
            driver.save_screenshot(str(output))
        print(f'screenshot: wrote {output}')
    finally:
        if server is not None:
            server.shutdown()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1
                      else ROOT / 'docs' / 'dashboard-overview.png'))
