"""The Pyramid application the pyramid_scheduler cases use.

``[app:main] use = call:bench.app:main`` in the generated ini; pscheduler's
children (or :mod:`bench.psworker`) load it, and the benchmark process builds
the same one with :func:`make_app` to add jobs inside a request.
"""
from pyramid.config import Configurator


def make_app(settings):
    config = Configurator(settings=settings)
    config.include('pyramid_scheduler')
    config.add_route('add', '/add')
    config.add_view(add_view, route_name='add', renderer='string')
    return config.make_wsgi_app()


def add_view(request):
    from bench.jobs import noop
    return request.scheduler.add_async_job(noop)


def main(global_config, **settings):
    return make_app(settings)
