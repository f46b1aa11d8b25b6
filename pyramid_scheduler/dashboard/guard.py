"""Who may see the dashboard, and the CSRF check of its actions.

Permission: every view requires ``scheduler.dashboard.permission``. An
application without a security policy grants every permission to
everyone in Pyramid, so the dashboard, which can cancel and purge jobs,
refuses every request instead (403, saying what to do), unless the
permission is ``__no_permission_required__`` (settings.OPEN).

CSRF: every action is a POST whose form carries a token. When the
application has its own CSRF storage (a session factory, or a CSRF
storage policy it set), the token is the application's and Pyramid's
``check_csrf_token`` checks it. Otherwise the dashboard keeps its own token
in a cookie (``pscheduler_csrf``, HttpOnly, SameSite=Strict, its path the
dashboard's prefix) and compares it with the form's: the
application's policy is never replaced or changed. Over HTTPS the Origin
or Referer is checked too (Pyramid's ``check_csrf_origin``).
"""
import hmac
import secrets

from pyramid.csrf import (
    LegacySessionCSRFStoragePolicy, check_csrf_origin, check_csrf_token,
    get_csrf_token)
from pyramid.exceptions import BadCSRFToken
from pyramid.httpexceptions import HTTPForbidden
from pyramid.interfaces import (
    ICSRFStoragePolicy, ISecurityPolicy, ISessionFactory)

FIELD = 'csrf_token'
COOKIE = 'pscheduler_csrf'
TOKEN_BYTES = 32
_ENVIRON_KEY = 'pyramid_scheduler.dashboard.csrf'


def require_security_policy(options):
    """A view decorator: 403 when the app has no security policy (see the
    module docstring), unless the dashboard is open."""
    def decorator(view):
        def guarded(context, request):
            if not options.is_open and request.registry.queryUtility(
                    ISecurityPolicy) is None:
                raise HTTPForbidden(
                    'The scheduler dashboard is refused: this application '
                    'has no security policy, so nothing checks the '
                    f'permission {options.permission!r}. Set a security '
                    'policy that grants it, or set '
                    'scheduler.dashboard.permission = '
                    '__no_permission_required__ to open the dashboard to '
                    'everyone (development only).')
            return view(context, request)
        return guarded
    return decorator


def app_has_csrf_storage(request):
    """True when the application's CSRF storage policy can keep a token."""
    policy = request.registry.queryUtility(ICSRFStoragePolicy)
    if policy is None:
        return False
    if isinstance(policy, LegacySessionCSRFStoragePolicy):
        return request.registry.queryUtility(ISessionFactory) is not None
    return True


def csrf_token(request, options):
    """The token the dashboard's forms carry."""
    if app_has_csrf_storage(request):
        return get_csrf_token(request)
    token = request.environ.get(_ENVIRON_KEY) or request.cookies.get(COOKIE)
    if not _well_formed(token):
        token = secrets.token_hex(TOKEN_BYTES)

        def set_cookie(request, response):
            response.set_cookie(COOKIE, token, path=options.prefix or '/',
                                httponly=True, samesite='Strict',
                                secure=request.scheme == 'https')
        request.add_response_callback(set_cookie)
    request.environ[_ENVIRON_KEY] = token
    return token


def check_csrf(request):
    """BadCSRFToken (403) unless the POST carries the right token."""
    check_csrf_origin(request, raises=True)
    if app_has_csrf_storage(request):
        check_csrf_token(request, token=FIELD, header=None, raises=True)
        return
    expected = request.cookies.get(COOKIE, '')
    supplied = request.POST.get(FIELD, '')
    if not (_well_formed(expected) and hmac.compare_digest(
            expected.encode(), supplied.encode())):
        raise BadCSRFToken(
            'The form has no valid CSRF token: reload the dashboard page '
            'and try again (its cookie pscheduler_csrf must be allowed).')


def _well_formed(token):
    return isinstance(token, str) and len(token) == 2 * TOKEN_BYTES and all(
        c in '0123456789abcdef' for c in token)
