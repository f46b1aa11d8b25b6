"""HMAC signatures on broker messages (``scheduler.broker.secret``).

The signature covers the serialized body exactly as it travels (after
compression), its content type and encoding, and a timestamp, so an altered
body, a swapped content type (say, pickle sent to a JSON consumer) or a
replay older than ``scheduler.broker.max_message_age`` is refused.
The header is ``x-pscheduler-signature: v1:<timestamp>:<hex digest>``.
"""
import hashlib
import hmac
import os
import time

from .errors import InvalidMessage

HEADER = 'x-pscheduler-signature'
SCHEME = 'v1'


def load_secrets(conf, bad_value):
    """(current, previous...) secrets from the ini, a file or the environment.

    ``broker.secret`` (literal), ``broker.secret.file`` (a path) or
    ``broker.secret.env`` (a variable name) give the current secret;
    ``broker.secret.previous`` (space-separated) still verifies during a
    rotation but never signs.
    """
    sources = [k for k in ('broker.secret', 'broker.secret.file',
                           'broker.secret.env') if conf.get(k)]
    if len(sources) > 1:
        raise bad_value(sources[1], '<hidden>',
                        f'only one of scheduler.{", scheduler.".join(sources)}')
    current = None
    if conf.get('broker.secret'):
        current = conf['broker.secret'].strip()
    elif conf.get('broker.secret.file'):
        path = conf['broker.secret.file'].strip()
        try:
            with open(path, encoding='utf-8') as handle:
                current = handle.read().strip()
        except OSError as exc:
            raise bad_value('broker.secret.file', path,
                            f'a readable file holding the secret ({exc.strerror})')
    elif conf.get('broker.secret.env'):
        name = conf['broker.secret.env'].strip()
        current = os.environ.get(name, '').strip()
        if not current:
            raise bad_value('broker.secret.env', name,
                            'the name of a set, non-empty environment variable')
    previous = (conf.get('broker.secret.previous') or '').split()
    if previous and not current:
        raise bad_value('broker.secret.previous', '<hidden>',
                        'to be used together with a current secret')
    if current is not None and len(current) < 16:
        raise bad_value('broker.secret', '<hidden>',
                        'a secret of at least 16 characters')
    return tuple(s.encode('utf-8') for s in [current, *previous] if s)


def _digest(secret, timestamp, body, content_type, content_encoding):
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for part in (SCHEME, timestamp, content_type or '', content_encoding or ''):
        mac.update(part.encode('utf-8') + b'\0')
    mac.update(body if isinstance(body, bytes) else body.encode('utf-8'))
    return mac.hexdigest()


def sign(secret, body, content_type, content_encoding, now=None):
    timestamp = f'{now or time.time():.3f}'
    digest = _digest(secret, timestamp, body, content_type, content_encoding)
    return f'{SCHEME}:{timestamp}:{digest}'


def verify(secrets, signature, body, content_type, content_encoding,
           max_age=0, now=None):
    """Raise InvalidMessage unless one of ``secrets`` signed this message."""
    if not signature:
        raise InvalidMessage('unsigned message (scheduler.broker.secret is '
                             'set, so every message must be signed)')
    try:
        scheme, timestamp, digest = str(signature).split(':')
        sent = float(timestamp)
    except ValueError:
        raise InvalidMessage('malformed signature header') from None
    if scheme != SCHEME:
        raise InvalidMessage(f'unknown signature scheme {scheme!r}')
    for secret in secrets:
        expected = _digest(secret, timestamp, body, content_type,
                           content_encoding)
        if hmac.compare_digest(expected, digest):
            break
    else:
        raise InvalidMessage('bad signature: forged, altered, or signed with '
                             'another secret')
    age = (now or time.time()) - sent
    if max_age and age > max_age:
        raise InvalidMessage(f'message signed {age:.0f}s ago, older than '
                             f'scheduler.broker.max_message_age ({max_age:.0f}s)')
