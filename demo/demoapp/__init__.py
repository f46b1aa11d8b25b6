"""pyramid_scheduler demo: one page that schedules each kind of job.

Run it with ``bash scripts/demo`` (pscheduler + pserve on demo/demo.ini), then
open http://127.0.0.1:6543/. The page's forms call ``request.scheduler``; the
jobs run in the pscheduler daemon and append to a JSON-lines file that the
page reads back.
"""
import datetime
import html
import os
import re
import sys

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
    config.add_route('home', '/')
    config.add_route('schedule', '/schedule')
    config.add_route('cancel', '/cancel')
    config.add_view(home, route_name='home')
    config.add_view(schedule, route_name='schedule', request_method='POST')
    config.add_view(cancel, route_name='cancel', request_method='POST')
    return config.make_wsgi_app()


def _runs_file(request):
    return request.registry.settings['demo.runs_file']


def _back(request, message):
    return HTTPSeeOther(request.route_url('home', _query={'msg': message}))


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
            scheduler.add_interval_job(jobs.record_run, seconds=10,
                                       args=[runs, 'interval', label],
                                       id=INTERVAL_ID)
            text = f'interval job "{INTERVAL_ID}" runs every 10 seconds'
        elif kind == 'cron':
            scheduler.add_cron_job(jobs.record_run, crontab='* * * * *',
                                   args=[runs, 'cron', label], id=CRON_ID)
            text = (f'cron job "{CRON_ID}" runs at the start of every '
                    'minute (crontab "* * * * *")')
        elif kind == 'fail':
            job_id = scheduler.add_async_job(jobs.failing_job, args=[label])
            text = (f'failing job {job_id} queued: see the pscheduler log '
                    'for its traceback')
        else:
            text = f'unknown kind of job {kind!r}'
    except (InvalidJob, SchedulerError) as exc:
        text = f'could not schedule: {exc}'
    return _back(request, text)


def cancel(request):
    """Cancel the interval or cron job, saying so only if it was there.

    ``cancel_job`` sends a message and does not know whether the job
    exists, so the page asks pscheduler for its jobs first.
    """
    job_id = request.POST.get('id')
    if job_id not in (INTERVAL_ID, CRON_ID):
        return _back(request, f'unknown job {job_id!r}')
    scheduled, problem = _scheduled_jobs(request)
    if problem:
        request.scheduler.cancel_job(job_id)
        return _back(request, f'cancel of job "{job_id}" sent, but could not '
                     f'check that it exists: {problem}')
    if job_id not in {job['id'] for job in scheduled}:
        return _back(request, f'job "{job_id}" is not scheduled: nothing to '
                     'cancel')
    request.scheduler.cancel_job(job_id)
    return _back(request, f'job "{job_id}" canceled')


def _scheduled_jobs(request):
    """Ask the runtime for its deferred jobs over the admin channel."""
    try:
        replies, missing = request.scheduler.send_message(
            'jobs', wait=True, timeout=1.0)
    except Exception as exc:   # the broker is down, say
        return None, f'{type(exc).__name__}: {exc}'
    if missing:
        return None, ('pscheduler is not answering: start it with '
                      f'"{_pscheduler_command(request)}" (bash scripts/demo '
                      'does)')
    rows = []
    for reply in replies:
        if reply.get('error'):
            return None, reply['error']
        rows.extend(reply['result']['jobs'])
    return rows, None


def _pscheduler_command(request):
    """The command that starts pscheduler for this demo, as it can be typed
    in the current directory: this venv's launcher and this ini file."""
    launcher = os.path.join(os.path.dirname(sys.executable), 'pscheduler')
    ini = request.registry.settings['demo.ini_file']
    return f'{_relative(launcher)} {_relative(ini)}'


def _relative(path):
    relative = os.path.relpath(path)
    return path if relative.startswith('..') else relative


_TRIGGER = re.compile(r'^(\w+)\[(.*)\]$')
_CRON_FIELDS = ('minute', 'hour', 'day', 'month', 'day_of_week')


def _describe_trigger(text):
    """APScheduler's ``str(trigger)`` in words, for the table.

    ``cron[month='*', day='*', day_of_week='*', hour='*', minute='*']``
    becomes ``cron "* * * * *" (minute hour day month weekday)``;
    ``interval[0:00:10]`` becomes ``every 0:00:10``.
    """
    match = _TRIGGER.match(text or '')
    if not match:
        return text
    kind, body = match.groups()
    if kind == 'interval':
        return f'every {body}'
    if kind == 'date':
        return f'once, at {body}'
    if kind == 'cron':
        fields = dict(re.findall(r"(\w+)='([^']*)'", body))
        if set(fields) - set(_CRON_FIELDS):  # seconds, weeks or years
            return 'cron: ' + ', '.join(f'{name} {value}'
                                        for name, value in fields.items())
        crontab = ' '.join(fields.get(name, '*') for name in _CRON_FIELDS)
        if crontab == '* * * * *':
            return 'cron "* * * * *": every minute'
        return f'cron "{crontab}" (minute hour day month weekday)'
    return text


def _next_run(iso):
    if not iso:
        return 'paused'
    return datetime.datetime.fromisoformat(iso).astimezone().strftime(
        '%Y-%m-%d %H:%M:%S')


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
<title>pyramid_scheduler demo</title>
<style>
 body {{ font-family: sans-serif; max-width: 52em; margin: 2em auto; }}
 form {{ display: inline; }} button {{ margin: .2em; }}
 .msg {{ background: #eef6ee; border: 1px solid #9c9; padding: .5em; }}
 .warn {{ background: #fdf3e7; border: 1px solid #e9b96e; padding: .5em; }}
 table {{ border-collapse: collapse; width: 100%; }}
 td, th {{ border-bottom: 1px solid #ddd; padding: .25em .5em;
          text-align: left; }}
</style></head>
<body>
<h1>pyramid_scheduler demo</h1>
{message}
<p>Each button calls <code>request.scheduler.add_*_job(...)</code> in a view.
{mode} Each job appends a line to <code>{runs_file}</code>, which this page
reads.</p>
<p>{buttons}</p>
<p>Cancel:
 <form method="post" action="{cancel_url}"><input type="hidden" name="id"
  value="{interval_id}"><button>Cancel the interval job</button></form>
 <form method="post" action="{cancel_url}"><input type="hidden" name="id"
  value="{cron_id}"><button>Cancel the cron job</button></form>
</p>
<h2>Scheduled jobs</h2>
{scheduled}
<h2>Recent runs <small>(<a href="{home_url}">reload</a>)</small></h2>
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


def home(request):
    esc = html.escape
    message = request.GET.get('msg')
    buttons = ''.join(
        f'<form method="post" action="{esc(request.route_url("schedule"))}">'
        f'<input type="hidden" name="kind" value="{kind}">'
        f'<button>{esc(text)}</button></form>' for kind, text in BUTTONS)
    scheduled, problem = _scheduled_jobs(request)
    if problem:
        scheduled_html = f'<p class="warn">{esc(problem)}</p>'
    elif not scheduled:
        scheduled_html = '<p>No deferred jobs.</p>'
    else:
        scheduled_html = '<table><tr><th>id</th><th>trigger</th>' \
            '<th>next run</th></tr>' + ''.join(
                f'<tr><td>{esc(job["id"])}</td>'
                f'<td>{esc(_describe_trigger(job["trigger"]))}</td>'
                f'<td>{_next_run(job["next_run_time"])}</td></tr>'
                for job in scheduled) + '</table>'
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
        cancel_url=esc(request.route_url('cancel')),
        interval_id=INTERVAL_ID, cron_id=CRON_ID,
        scheduled=scheduled_html,
        home_url=esc(request.route_url('home')),
        runs=runs_html,
    )
    return Response(body, content_type='text/html', charset='utf-8')


__all__ = ['main']
