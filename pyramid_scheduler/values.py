"""Parsers of single ini values, and the one form of their error.

Each parser takes ``(key, value)``: the key (without ``scheduler.``) is only
for the error, which names the setting, the value given and what is allowed:
``invalid value 'x' for setting "scheduler.KEY": expected ...``. Nothing here
knows which setting uses which parser: that is settings.OPTIONS.
"""
import re
import urllib.parse

from kombu import compression, serialization
from pyramid.exceptions import ConfigurationError
from pyramid.path import DottedNameResolver
from pyramid.settings import asbool, aslist

PREFIX = 'scheduler.'
DEFAULT_QUEUE = 'jobs'

_DURATION_RE = re.compile(
    r'^\s*(?:(?P<d>\d+(?:\.\d+)?)\s*d)?\s*(?:(?P<h>\d+(?:\.\d+)?)\s*h)?'
    r'\s*(?:(?P<m>\d+(?:\.\d+)?)\s*m)?\s*(?:(?P<s>\d+(?:\.\d+)?)\s*s?)?\s*$')
_SIZE_RE = re.compile(r'^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$', re.I)
_QUEUE_NAME_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.-]*$')


def bad_value(key, value, allowed):
    return ConfigurationError(
        f'invalid value {value!r} for setting "{PREFIX}{key}": '
        f'expected {allowed}')


def parse_text(key, value):
    return str(value).strip()


def parse_address(key, value):
    """``'127.0.0.1:9464'``, ``'[::1]:9464'``, ``':9464'`` (every
    interface) -> ``(host, port)``."""
    host, sep, port = str(value).strip().rpartition(':')
    host = host.strip('[]')
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise bad_value(key, value, 'an address to listen on, HOST:PORT, '
                        'such as "127.0.0.1:9464" or "[::1]:9464"')
    return host, int(port)


def parse_duration(key, value):
    """``'24h'``, ``'30m'``, ``'1d 12h'``, ``'90'`` (seconds) -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION_RE.match(str(value))
        if not match or not any(match.groupdict().values()):
            raise bad_value(key, value,
                            'a duration such as "90", "30s", "15m", "24h", '
                            '"1d" or "1h 30m"')
        parts = {k: float(v) for k, v in match.groupdict().items() if v}
        seconds = (parts.get('d', 0) * 86400 + parts.get('h', 0) * 3600
                   + parts.get('m', 0) * 60 + parts.get('s', 0))
    if seconds < 0:
        raise bad_value(key, value, 'a duration that is not negative')
    return seconds


def parse_positive_duration(key, value):
    """A duration above zero."""
    seconds = parse_duration(key, value)
    if seconds <= 0:
        raise bad_value(key, value, 'a duration above zero (such as "1d")')
    return seconds


def parse_grace_time(key, value):
    """A duration in whole seconds, at least 1 (what APScheduler takes)."""
    seconds = parse_duration(key, value)
    if seconds < 1 or seconds != int(seconds):
        raise bad_value(key, value, 'a whole number of seconds, at least 1 '
                                    '(such as "30", "15m" or "1h")')
    return int(seconds)


def parse_size(key, value):
    """``'512MB'``, ``'1GiB'``, ``'1048576'`` -> bytes."""
    match = _SIZE_RE.match(str(value))
    if not match:
        raise bad_value(key, value,
                        'a size such as "512MB", "1GB", "1GiB" or a byte count')
    number, unit = float(match.group(1)), (match.group(2) or '').lower()
    base = 1024 if 'i' in unit else 1000
    power = {'': 0, 'b': 0, 'k': 1, 'm': 2, 'g': 3, 't': 4}[unit[:1]]
    return int(number * base ** power)


def parse_bool(key, value):
    text = str(value).strip().lower()
    if text not in ('true', 'yes', 'on', 'y', 't', '1',
                    'false', 'no', 'off', 'n', 'f', '0'):
        raise bad_value(key, value, 'a boolean: true or false')
    return asbool(text)


def parse_positive_int(key, value):
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number < 1:
        raise bad_value(key, value, 'a whole number of at least 1')
    return number


def parse_count(key, value):
    """A whole number of at least 0."""
    try:
        number = int(str(value).strip())
    except ValueError:
        number = -1
    if number < 0:
        raise bad_value(key, value, 'a whole number of at least 0')
    return number


def parse_list(key, value):
    """Space- or newline-separated words -> a tuple."""
    return tuple(aslist(value))


def resolve_dotted(key, value):
    try:
        return DottedNameResolver().resolve(str(value).strip())
    except Exception as exc:
        raise bad_value(key, value, f'an importable dotted name ({exc})')


def parse_queues(key, value):
    queues = aslist(value) if value is not None else [DEFAULT_QUEUE]
    if not queues:
        raise bad_value(key, value, 'at least one queue name')
    for name in queues:
        if not _QUEUE_NAME_RE.match(name):
            raise bad_value(key, name, 'queue names of letters, digits, '
                                       '"_", "-" and "."')
    if len(set(queues)) != len(queues):
        raise bad_value(key, value, 'queue names without duplicates')
    return tuple(queues)


def parse_serializer(key, value):
    name = str(value).strip()
    try:
        serialization.registry._encoders[name]
    except KeyError:
        known = ', '.join(sorted(serialization.registry._encoders))
        raise bad_value(key, value, f'one of the kombu serializers: {known}')
    return name


def parse_compressor(key, value):
    name = str(value).strip()
    if not name or name.lower() == 'none':
        return None
    try:
        compression.get_encoder(name)
    except Exception:
        known = ', '.join(sorted(compression.encoders()))
        raise bad_value(key, value, f'none or one of: {known}')
    return name


def parse_timezone(key, value):
    from apscheduler.util import astimezone
    try:
        return astimezone(str(value).strip())
    except Exception:
        raise bad_value(key, value, 'an IANA time zone name such as '
                                    '"Europe/Paris" or "UTC"')


def redact_url(url):
    """The URL with any password replaced, fit for logs and errors.

    kombu's failover form ``url1;url2`` has each of its URLs redacted.
    """
    if ';' in str(url):
        return ';'.join(redact_url(part) for part in str(url).split(';'))
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return '<unparseable url>'
    if password is None:
        return url
    netloc = parts.netloc.replace(f':{password}@', ':***@', 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def check_installed(key, url, problem):
    """Refuse a URL whose optional extra or driver is missing."""
    if problem:
        raise ConfigurationError(
            f'setting "{PREFIX}{key}" is {redact_url(url)}: {problem}')
