"""A minimal application that includes pyramid_scheduler.

When ``PSCHEDULER_TEST_IMPORT_LOG`` names a file, importing this module
appends the importing process' pid to it: the tests use that to prove the
pscheduler master never imports the application (only its children do).
"""
import os

from pyramid.config import Configurator

IMPORT_LOG_ENV = 'PSCHEDULER_TEST_IMPORT_LOG'

if os.environ.get(IMPORT_LOG_ENV):
    with open(os.environ[IMPORT_LOG_ENV], 'a', encoding='utf-8') as _log:
        _log.write(f'{os.getpid()}\n')


def main(global_config, **settings):
    config = Configurator(settings=settings)
    config.include('pyramid_scheduler')
    return config.make_wsgi_app()
