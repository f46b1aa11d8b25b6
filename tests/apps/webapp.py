"""A small Pyramid app for the WebTest tests: views that schedule jobs.

Every view takes its parameters as a JSON body so the tests can drive each
job kind through the whole path (request -> producer -> broker -> runtime).
The app includes pyramid_tm, so scheduling waits for the request's commit.
"""
import json

from pyramid.config import Configurator
from pyramid.response import Response

from pyramid_scheduler import broker
from tests import jobs

JOB_FUNCS = {
    'record': jobs.record,
    'fail': jobs.fail,
    'noop': jobs.noop,
    'sleep_then_record': jobs.sleep_then_record,
    'record_types': jobs.record_types,
    'record_registry': jobs.record_registry,
    'echo': jobs.echo,
}


def _json(data):
    return Response(json.dumps(data), content_type='application/json',
                    charset='utf-8')


def _params(request):
    return request.json_body if request.body else {}


def _schedule(request):
    """Add one job described by the request body; return its id."""
    params = _params(request)
    kind = params.pop('kind')
    func = JOB_FUNCS[params.pop('func', 'record')]
    if 'args' in params:
        params['args'] = tuple(params['args'])
    method = getattr(request.scheduler, f'add_{kind}_job')
    return method(func, **params)


def queued(request, queue='jobs'):
    """Messages waiting on a queue (sent, not yet consumed), via kombu."""
    settings = request.registry.scheduler.settings
    connection = broker.connect(settings)
    try:
        bound = broker.job_queue(settings, queue)(connection.default_channel)
        return bound.queue_declare().message_count
    finally:
        connection.release()


def home(request):
    return _json({'runtime': request.scheduler.runtime is not None})


def schedule(request):
    job_id = _schedule(request)
    return _json({'id': job_id, 'queued_during_view': queued(request)})


def schedule_then_raise(request):
    _schedule(request)
    raise RuntimeError('the view failed after scheduling')


def schedule_then_abort(request):
    _schedule(request)
    request.tm.abort()
    return _json({'aborted': True})


def schedule_then_doom(request):
    _schedule(request)
    request.tm.doom()
    return _json({'doomed': True})


def schedule_two(request):
    """Add ``first`` then ``second`` (each described as for /schedule)."""
    params = _params(request)
    ids = []
    for key in ('first', 'second'):
        request.json_body = params[key]
        ids.append(_schedule(request))
    return _json({'ids': ids})


def cancel_then_raise(request):
    request.scheduler.cancel_job(_params(request)['id'])
    raise RuntimeError('the view failed after cancelling')


def cancel(request):
    params = _params(request)
    request.scheduler.cancel_job(params['id'], queue=params.get('queue'))
    return _json({'canceled': params['id']})


def main(global_config, **settings):
    config = Configurator(settings=settings)
    config.include('pyramid_tm')
    if 'pyramid_scheduler' not in settings.get('pyramid.includes', ''):
        config.include('pyramid_scheduler')
    for name, view in [('home', home), ('schedule', schedule),
                       ('schedule_then_raise', schedule_then_raise),
                       ('schedule_then_abort', schedule_then_abort),
                       ('schedule_then_doom', schedule_then_doom),
                       ('schedule_two', schedule_two),
                       ('cancel_then_raise', cancel_then_raise),
                       ('cancel', cancel)]:
        config.add_route(name, '/' if name == 'home' else f'/{name}')
        config.add_view(view, route_name=name)
    return config.make_wsgi_app()
