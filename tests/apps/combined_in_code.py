"""An application that turns combined mode on in code, not in its ini.

The pscheduler master cannot see that from the ini; the child must.
"""
from pyramid.config import Configurator


def main(global_config, **settings):
    settings['scheduler.combined'] = 'true'
    config = Configurator(settings=settings)
    config.include('pyramid_scheduler')
    return config.make_wsgi_app()
