"""An application that forgot ``config.include('pyramid_scheduler')``."""
from pyramid.config import Configurator


def main(global_config, **settings):
    return Configurator(settings=settings).make_wsgi_app()
