"""An application with the dashboard mounted, for the dashboard's tests.

``test.security``: ``open`` (no security policy: the dashboard refuses
unless the permission is ``__no_permission_required__``), ``admin`` (a
policy granting everything to a request with the header ``X-User: admin``,
nothing to others), or absent (no policy). ``test.session = true``
gives the app a session factory (its CSRF tokens then live in the session).
"""
from pyramid.config import Configurator

USER_HEADER = 'X-User'


class HeaderSecurityPolicy:
    """Grants every permission to the user ``admin``, none to anyone else."""

    def identity(self, request):
        return request.headers.get(USER_HEADER)

    def authenticated_userid(self, request):
        return self.identity(request)

    def permits(self, request, context, permission):
        return self.identity(request) == 'admin'

    def remember(self, request, userid, **kw):
        return []

    def forget(self, request, **kw):
        return []


def main(global_config, **settings):
    config = Configurator(settings=settings)
    if settings.get('test.security') == 'admin':
        config.set_security_policy(HeaderSecurityPolicy())
    if settings.get('test.session') == 'true':
        from pyramid.session import SignedCookieSessionFactory
        config.set_session_factory(SignedCookieSessionFactory(
            'a test secret of some length'))
    config.include('pyramid_scheduler.dashboard')
    return config.make_wsgi_app()
