"""pyramid_scheduler demo: the dashboard, and one page that adds each kind
of job.

Run it with ``bash scripts/demo`` (pscheduler + pserve on demo/demo.ini), then
open http://127.0.0.1:6543/: the dashboard (pyramid_scheduler.dashboard,
under /scheduler/). The page /add has a button per kind of job; its forms
call ``request.scheduler`` and send you to the new job's page on the
dashboard. The jobs run in the pscheduler daemon and append to a JSON-lines
file that /add reads back.
"""
import datetime
import html
import os

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPSeeOther
from pyramid.response import Response

from pyramid_scheduler.api import InvalidJob, SchedulerError

from . import jobs

INTERVAL_ID = 'demo-interval'
CRON_ID = 'demo-cron'


def main(global_config, **settings):
    here = global_config.get('here') or os.getcwd()
    settings.setdefault('demo.runs_file', os.path.join(here, 'demo-runs.jsonl'))
    settings.setdefault('demo.ini_file', global_config.get(
        '__file__', os.path.join(here, 'demo.ini')))
    config = Configurator(settings=settings)
    config.include('pyramid_tm')         # jobs are sent when the request commits
    config.include('pyramid_scheduler')  # request.scheduler
    # The dashboard under /scheduler/. The demo has no security policy: its
    # ini opens the dashboard with scheduler.dashboard.permission =
    # __no_permission_required__ (never do that in production).
    config.include('pyramid_scheduler.dashboard')
    config.add_route('home', '/')
    config.add_route('add', '/add')
    config.add_route('schedule', '/schedule')
    config.add_view(home, route_name='home')
    config.add_view(add_page, route_name='add')
    config.add_view(schedule, route_name='schedule', request_method='POST')
    return config.make_wsgi_app()


def home(request):
    """The demo's home is the dashboard."""
    return HTTPSeeOther(request.route_url('pscheduler_dashboard.overview'))


def _runs_file(request):
    return request.registry.settings['demo.runs_file']


def _back(request, message, job_id=None):
    """To the new job's page on the dashboard, or back to /add."""
    if job_id is None:
        return HTTPSeeOther(request.route_url('add', _query={'msg': message}))
    return HTTPSeeOther(request.route_url(
        'pscheduler_dashboard.job', job_id=job_id, _query={'msg': message}))


def schedule(request):
    """Schedule one job of the kind the button asks for."""
    kind = request.POST.get('kind')
    runs = _runs_file(request)
    scheduler = request.scheduler
    stamp = datetime.datetime.now().strftime('%H:%M:%S')
    label = f'added at {stamp}'
    try:
        if kind == 'async':
            job_id = scheduler.add_async_job(jobs.record_run,
                                             args=[runs, 'async', label])
            text = f'async job {job_id} queued: it runs right away'
        elif kind == 'slow':
            job_id = scheduler.add_async_job(jobs.slow_job,
                                             args=[runs, label + ' (slow)'])
            text = (f'slow async job {job_id} queued: this page did not wait '
                    'for it; reload in 2 seconds')
        elif kind == 'date':
            # A naive datetime is local time; an epoch number works too.
            when = datetime.datetime.now() + datetime.timedelta(seconds=5)
            job_id = scheduler.add_date_job(jobs.record_run, when,
                                            args=[runs, 'date', label])
            text = (f'date job {job_id} scheduled for '
                    f'{when:%H:%M:%S} (in 5 seconds)')
        elif kind == 'interval':
            # A caller-chosen id: clicking again replaces the job.
            job_id = scheduler.add_interval_job(
                jobs.record_run, seconds=10, args=[runs, 'interval', label],
                id=INTERVAL_ID)
            text = f'interval job "{INTERVAL_ID}" runs every 10 seconds'
        elif kind == 'cron':
            job_id = scheduler.add_cron_job(
                jobs.record_run, crontab='* * * * *',
                args=[runs, 'cron', label], id=CRON_ID)
            text = (f'cron job "{CRON_ID}" runs at the start of every '
                    'minute (crontab "* * * * *")')
        elif kind == 'fail':
            job_id = scheduler.add_async_job(jobs.failing_job, args=[label])
            text = (f'failing job {job_id} queued: its traceback shows '
                    'here once it has run (reload), and under "Failed jobs"')
        else:
            return _back(request, f'unknown kind of job {kind!r}')
    except (InvalidJob, SchedulerError) as exc:
        return _back(request, f'could not schedule: {exc}')
    return _back(request, text, job_id)


def _time(epoch):
    return datetime.datetime.fromtimestamp(epoch).strftime('%H:%M:%S')


BUTTONS = [
    ('async', 'Run a job now (async)'),
    ('slow', 'Run a slow job (async, 2 s)'),
    ('date', 'Run a job in 5 seconds (date)'),
    ('interval', 'Run a job every 10 seconds (interval)'),
    ('cron', 'Run a job every minute (cron)'),
    ('fail', 'Run a job that fails'),
]

PAGE = '''<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>pyramid_scheduler demo: add jobs</title>
<style>
 body {{ font-family: system-ui, sans-serif; max-width: 52em;
        margin: 1em auto; padding: 0 1em; }}
 form {{ display: inline; }} button {{ margin: .2em; }}
 .msg {{ background: #eef6ee; border: 1px solid #9c9; padding: .5em; }}
 table {{ border-collapse: collapse; width: 100%; }}
 td, th {{ border-bottom: 1px solid #ddd; padding: .25em .5em;
          text-align: left; }}
</style></head>
<body>
<h1>pyramid_scheduler demo: add jobs</h1>
<p><a href="{dashboard_url}"><b>Open the dashboard</b></a> (queues,
processes, scheduled and failed jobs).</p>
{message}
<p>Each button calls <code>request.scheduler.add_*_job(...)</code> in a view
and takes you to the job's page on the dashboard.
{mode} Each job appends a line to <code>{runs_file}</code>, which this page
reads.</p>
<p>{buttons}</p>
<h2>Recent runs <small>(<a href="{add_url}">reload</a>)</small></h2>
{runs}
</body></html>
'''


def _mode(combined):
    if combined:
        return (f'The jobs run in this web process (pid {os.getpid()}: '
                'combined mode).')
    return ('The jobs run in the pscheduler daemon, not in this web process '
            f'(pid {os.getpid()}): the pid column of the runs is that of the '
            'pscheduler child that ran each one.')


def add_page(request):
    esc = html.escape
    message = request.GET.get('msg')
    buttons = ''.join(
        f'<form method="post" action="{esc(request.route_url("schedule"))}">'
        f'<input type="hidden" name="kind" value="{kind}">'
        f'<button>{esc(text)}</button></form>' for kind, text in BUTTONS)
    runs = jobs.read_runs(_runs_file(request))
    if runs:
        runs_html = '<table><tr><th>ran at</th><th>kind</th><th>job</th>' \
            '<th>pid</th></tr>' + ''.join(
                f'<tr><td>{_time(run["at"])}</td><td>{esc(run["kind"])}</td>'
                f'<td>{esc(run["label"])}</td><td>{run["pid"]}</td></tr>'
                for run in runs) + '</table>'
    else:
        runs_html = '<p>No runs yet: press a button.</p>'
    settings = request.scheduler.settings
    body = PAGE.format(
        message=f'<p class="msg">{esc(message)}</p>' if message else '',
        mode=esc(_mode(settings.combined)),
        runs_file=esc(_runs_file(request)),
        buttons=buttons,
        dashboard_url=esc(request.route_url(
            'pscheduler_dashboard.overview')),
        add_url=esc(request.route_url('add')),
        runs=runs_html,
    )
    return Response(body, content_type='text/html', charset='utf-8')


__all__ = ['main']
