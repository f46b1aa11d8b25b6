"""A web app (pyramid_tm included) whose process serves one committed
request, then exits.

``python -m tests.apps.outbox_web INI RECORDS LABEL [--crash-after-publish]``
loads this app from INI, POSTs one async ``record(RECORDS, LABEL)`` job
through WebTest, prints ``{"id", "seconds"}`` (the request's time, commit
included) and exits. Its view does not touch the broker (webapp's counts
the queue), so it answers while the broker is down. With
``--crash-after-publish`` the process dies (``os._exit``) once the outbox
has published the message and before it removes it: the crash that sends
an entry twice.
"""
import json
import os
import sys
import time

from pyramid.config import Configurator
from pyramid.response import Response

from tests import jobs


def add(request):
    params = request.json_body
    job_id = request.scheduler.add_async_job(
        jobs.record, args=tuple(params['args']))
    return Response(json.dumps({'id': job_id}),
                    content_type='application/json', charset='utf-8')


def main(global_config, **settings):
    config = Configurator(settings=settings)
    config.include('pyramid_tm')
    config.include('pyramid_scheduler')
    config.add_route('add', '/add')
    config.add_view(add, route_name='add')
    return config.make_wsgi_app()


def serve_one_request(ini, records, label, *flags):
    from pyramid.paster import get_app, setup_logging
    from webtest import TestApp
    setup_logging(ini)
    if '--crash-after-publish' in flags:
        from pyramid_scheduler import spool
        spool.Spool.remove = lambda self, entries: os._exit(9)
    web = TestApp(get_app(ini, 'main'))
    started = time.monotonic()
    response = web.post_json('/add', {'args': [records, label]})
    print(json.dumps({'id': response.json['id'],
                      'seconds': time.monotonic() - started}), flush=True)


if __name__ == '__main__':
    serve_one_request(*sys.argv[1:])
