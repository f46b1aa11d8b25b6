"""The dashboard's views and routes. Reading pages are GETs; actions
(requeue, cancel, purge) are POSTs checked for CSRF (guard), answered by a
redirect back with a message in the query string (no session needed)."""
import types

from pyramid.httpexceptions import HTTPBadRequest, HTTPSeeOther
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED

from ..errors import SchedulerError
from . import data, guard, html, pages

ROUTE = pages.ROUTE
# Route name -> path under the prefix.
PAGES = types.MappingProxyType({
    'overview': '/', 'jobs': '/jobs', 'job': '/job/{job_id}',
    'failed': '/failed', 'dead_letters': '/dead-letters'})
ACTIONS = types.MappingProxyType({
    'requeue': '/requeue', 'cancel': '/cancel',
    'purge_failed': '/purge-failed',
    'purge_dead_letters': '/purge-dead-letters',
    'requeue_dead_letters': '/requeue-dead-letters'})
REFRESH_SECONDS = 5


def add_routes_and_views(config, options):
    permission = (NO_PERMISSION_REQUIRED if options.is_open
                  else options.permission)
    decorator = guard.require_security_policy(options)
    if options.prefix:
        config.add_route(ROUTE + 'root', options.prefix)
        config.add_view(to_overview, route_name=ROUTE + 'root',
                        permission=permission, decorator=decorator)
    for name, path in {**PAGES, **ACTIONS}.items():
        config.add_route(ROUTE + name, options.prefix + path)
    views = {name: _page_view(name, options) for name in PAGES}
    views.update({name: _action_view(ACTION_HANDLERS[name], options)
                  for name in ACTIONS})
    for name, view in views.items():
        config.add_view(view, route_name=ROUTE + name, permission=permission,
                        decorator=decorator, require_csrf=False,
                        request_method='POST' if name in ACTIONS else 'GET')


def to_overview(request):
    """The prefix without its slash: to the overview."""
    return HTTPSeeOther(request.route_path(ROUTE + 'overview'))


def _page_view(name, options):
    render = PAGE_RENDERERS[name]

    def view(request):
        title, body, refresh = render(request, request.registry.scheduler,
                                      guard.csrf_token(request, options))
        response = Response(html.page(
            request, title, body, current=name, refresh=refresh,
            message=request.GET.get('msg')))
        response.cache_control = 'no-store'
        return response
    return view


def _action_view(handler, options):
    def view(request):
        guard.check_csrf(request)
        message, back = handler(request, request.registry.scheduler)
        return HTTPSeeOther(request.route_path(
            ROUTE + back[0], _query={'msg': message}, **back[1]))
    return view


# --- pages: (request, scheduler, token) -> (title, body, refresh) ----------

def overview_page(request, scheduler, token):
    return ('Overview', pages.overview(request, data.overview(scheduler)),
            REFRESH_SECONDS)


def jobs_page(request, scheduler, token):
    queues = scheduler.settings.queues
    queue = request.GET.get('queue') or queues[0]
    if queue not in queues:
        raise HTTPBadRequest(f'no queue {queue!r}; the queues: '
                             f'{", ".join(queues)}')
    try:
        page = max(int(request.GET.get('page', 1)), 1)
    except ValueError:
        raise HTTPBadRequest('page must be a whole number, from 1')
    search = request.GET.get('q', '').strip()[:200]
    return ('Scheduled jobs', pages.jobs(
        request, data.jobs_page(scheduler, queue, page, search), queues),
        None)


def job_page(request, scheduler, token):
    job_id = request.matchdict['job_id']
    return (f'Job {job_id}', pages.job(request, data.job(scheduler, job_id),
                                       token), None)


def failed_page(request, scheduler, token):
    return ('Failed jobs', pages.failed(request, data.failed_jobs(scheduler),
                                        token), None)


def dead_letters_page(request, scheduler, token):
    return ('Dead letters', pages.dead_letters(
        request, data.dead_letters(scheduler), token), None)


PAGE_RENDERERS = types.MappingProxyType({
    'overview': overview_page, 'jobs': jobs_page, 'job': job_page,
    'failed': failed_page, 'dead_letters': dead_letters_page})


# --- actions: (request, scheduler) -> (message, (route, kwargs)) ------------

def _posted_id(request):
    job_id = request.POST.get('id', '').strip()
    if not job_id:
        raise HTTPBadRequest('the form has no job id')
    return job_id


def requeue(request, scheduler):
    job_id = _posted_id(request)
    back = ('job', {'job_id': job_id})
    try:
        scheduler.requeue(job_id)
    except SchedulerError as exc:
        return f'!{exc}', back
    return f'job {job_id} requeued: it runs again now', back


def cancel(request, scheduler):
    job_id = _posted_id(request)
    scheduler.cancel_job(job_id)
    return (f'cancel of job {job_id} sent', ('job', {'job_id': job_id}))


def purge_failed(request, scheduler):
    purged = scheduler.purge_failed()
    return f'purged {purged} failed job record(s)', ('failed', {})


def purge_dead_letters(request, scheduler):
    return _dead_letters_action(request, scheduler, 'purge-dead-letters',
                                lambda result: f'purged {result["purged"]}')


def requeue_dead_letters(request, scheduler):
    return _dead_letters_action(
        request, scheduler, 'requeue-dead-letters',
        lambda result: f'requeued {result["requeued"]}')


def _dead_letters_action(request, scheduler, command, done):
    """Ask the owner of the form's queue to ``command`` its dead letters."""
    queue = request.POST.get('queue', '')
    if queue not in scheduler.settings.queues:
        raise HTTPBadRequest(f'no queue {queue!r}')
    answers = data.ask(scheduler, command, [queue])
    if queue not in answers.results:
        return (f'!no answer from queue {queue}: nothing done',
                ('dead_letters', {}))
    return (f'{done(answers.results[queue])} dead letter(s) of {queue}',
            ('dead_letters', {}))


ACTION_HANDLERS = types.MappingProxyType({
    'requeue': requeue, 'cancel': cancel, 'purge_failed': purge_failed,
    'purge_dead_letters': purge_dead_letters,
    'requeue_dead_letters': requeue_dead_letters})
