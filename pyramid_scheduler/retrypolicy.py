"""The retry options of a job: checked when it is added, and on receipt.

``retries``, ``retry_backoff``, ``retry_delay`` and ``retry_on`` travel in
the spec's options. ``retry_on`` is given as exception classes or their
names and kept as canonical dotted names (``module.QualName``, say
``builtins.ConnectionError``) so it survives any serializer; the runtime
compares them with the names of the raised exception's classes, without
importing anything a message names (runtime/retries.py applies the policy).
"""
import math
import re

from .errors import InvalidJob
from .references import resolve_reference

RETRY_OPTIONS = ('retries', 'retry_backoff', 'retry_delay', 'retry_on')

_DOTTED_NAME = re.compile(r'^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$')


def prepare_retry_options(options):
    """At add time: ``retry_on`` as names (classes checked), then
    :func:`check_retry_options`. Changes ``options`` in place."""
    if 'retry_on' in options:
        options['retry_on'] = exception_names(options['retry_on'])
    check_retry_options(options)


def check_retry_options(options):
    """InvalidJob naming the retry option that is wrong and what to pass
    (also run on receipt, where ``retry_on`` holds names only)."""
    retries = options.get('retries')
    if 'retries' in options and (isinstance(retries, bool) or not isinstance(
            retries, int) or retries < 0):
        raise InvalidJob(f'retries must be a whole number of at least 0 (how '
                         f'many times a failed run is tried again), not '
                         f'{retries!r}')
    if 'retry_delay' in options and not _is_seconds(options['retry_delay']):
        raise InvalidJob(f'retry_delay must be a number of seconds of at '
                         f'least 0, not {options["retry_delay"]!r}')
    backoff = options.get('retry_backoff')
    if 'retry_backoff' in options and not isinstance(backoff, bool) and not (
            _is_seconds(backoff) and backoff > 0):
        raise InvalidJob(f'retry_backoff must be True, False or the base '
                         f'delay in seconds (a number above 0), not '
                         f'{backoff!r}')
    if 'retry_delay' in options and backoff not in (None, False):
        raise InvalidJob('retry_delay and retry_backoff exclude each other: '
                         'pass retry_delay for a fixed delay between tries, '
                         'or retry_backoff for one that doubles at each try')
    if 'retry_on' in options:
        _check_names(options['retry_on'])


def check_retry_fields(spec):
    """On receipt: a retry's ``retry_of`` and ``attempt`` (runtime/retries.py
    makes them) are what the runtime will compare and count with."""
    if 'retry_of' not in spec and 'attempt' not in spec:
        return
    retry_of, attempt = spec.get('retry_of'), spec.get('attempt')
    if not isinstance(retry_of, str) or not retry_of or isinstance(
            attempt, bool) or not isinstance(attempt, int) or attempt < 2:
        raise InvalidJob(f'a retry needs retry_of (the id of its job) and '
                         f'attempt (a whole number of at least 2), not '
                         f'{retry_of!r:.80} and {attempt!r:.40}')


def _is_seconds(value):
    return not isinstance(value, bool) and isinstance(
        value, (int, float)) and math.isfinite(value) and value >= 0


def _check_names(names):
    if not isinstance(names, list) or not names or not all(
            isinstance(name, str) and _DOTTED_NAME.match(name)
            for name in names):
        raise InvalidJob(f'retry_on must be a non-empty list of dotted names '
                         f'of exception classes (such as '
                         f'"builtins.ConnectionError"), not {names!r:.200}')


def exception_names(value):
    """The canonical dotted names of ``value``: an exception class, its
    name (``'ConnectionError'``, ``'myapp.errors.Busy'`` or
    ``'myapp.errors:Busy'``), or a list or tuple of them."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise InvalidJob('retry_on must name at least one exception class; '
                         'leave it out to retry on any Exception')
    return [_canonical_name(_exception_class(item)) for item in items]


def _exception_class(item):
    if isinstance(item, str):
        item = _resolve(item.strip())
    if not (isinstance(item, type) and issubclass(item, Exception)):
        raise InvalidJob(f'retry_on takes exception classes (subclasses of '
                         f'Exception) or their dotted names, not {item!r:.200}')
    return item


def _resolve(name):
    module, _, attribute = name.rpartition('.')
    reference = name if ':' in name else f'{module or "builtins"}:{attribute}'
    try:
        return resolve_reference(reference)
    except InvalidJob as exc:
        raise InvalidJob(f'retry_on: cannot find the exception class '
                         f'{name!r} ({exc}); pass the class, or its dotted '
                         f'name such as "requests.exceptions.Timeout"') from exc


def _canonical_name(cls):
    """``module.QualName``, if importing it gives ``cls`` back."""
    name = f'{cls.__module__}.{cls.__qualname__}'
    try:
        found = resolve_reference(f'{cls.__module__}:{cls.__qualname__}')
    except InvalidJob:
        found = None
    if found is not cls or not _DOTTED_NAME.match(name):
        raise InvalidJob(f'retry_on: the exception class {name} cannot be '
                         'found again by its name (a class defined in a '
                         'function, or in __main__?); define it at the top '
                         'of an importable module')
    return name
