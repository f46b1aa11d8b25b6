"""The dashboard's two settings (OPTIONS in pyramid_scheduler.options
documents them): where it is mounted, and the permission that guards it."""
import dataclasses

from pyramid.exceptions import ConfigurationError

from ..options import find_option
from ..settings import strip_prefix

# Pyramid's NO_PERMISSION_REQUIRED: the value that opens the dashboard to
# everyone (development), said explicitly.
OPEN = '__no_permission_required__'


@dataclasses.dataclass(frozen=True)
class DashboardSettings:
    prefix: str          # '/scheduler': no trailing slash
    permission: str      # a permission name, or OPEN

    @property
    def is_open(self):
        return self.permission == OPEN


def read_dashboard_settings(settings):
    conf = strip_prefix(settings)
    prefix = find_option('dashboard.prefix').read(conf).strip()
    if not prefix.startswith('/') or any(c in prefix for c in '?#{} '):
        raise ConfigurationError(
            f'scheduler.dashboard.prefix = {prefix!r}: expected a URL path '
            'starting with "/", such as /scheduler or /admin/jobs')
    permission = find_option('dashboard.permission').read(conf).strip()
    if not permission:
        raise ConfigurationError(
            'scheduler.dashboard.permission is empty: give a permission '
            f'name your security policy grants, or {OPEN} to open the '
            'dashboard to everyone (development only)')
    return DashboardSettings(prefix.rstrip('/') or '', permission)
