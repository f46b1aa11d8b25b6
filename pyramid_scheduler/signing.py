"""HMAC signatures on broker messages (``scheduler.broker.secret``).

The signature is HMAC-SHA256 over the serialized body as the consumer sees
it (before compression: kombu decompresses before a consumer gets the body),
its content type and encoding, and a timestamp, so an altered body, a
swapped content type (say, pickle sent to a JSON consumer) or a replay older
than ``scheduler.broker.max_message_age`` (1 day by default) is refused.
The header is ``x-pscheduler-signature: v1:<timestamp>:<hex digest>``.

Rotation without downtime: set the new secret as ``scheduler.broker.secret``
and the old one in ``scheduler.broker.secret.previous`` everywhere (both
verify, only the new one signs), restart, then drop the previous one once no
message signed with it can be left in the broker.
"""
import hashlib
import hmac
import math
import os
import re
import time

from .errors import InvalidMessage

HEADER = 'x-pscheduler-signature'
SCHEME = 'v1'
MIN_SECRET_LENGTH = 16
_DIGEST_RE = re.compile(r'[0-9a-f]{64}')


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
        names = ', '.join(f'scheduler.{key}' for key in sources)
        raise bad_value(sources[1], '<hidden>', f'only one of {names}')
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
                            'a readable file holding the secret '
                            f'({exc.strerror})')
    elif conf.get('broker.secret.env'):
        name = conf['broker.secret.env'].strip()
        current = os.environ.get(name, '').strip()
        if not current:
            raise bad_value('broker.secret.env', name,
                            'the name of a set, non-empty environment '
                            'variable')
    previous = (conf.get('broker.secret.previous') or '').split()
    if previous and not current:
        raise bad_value('broker.secret.previous', '<hidden>',
                        'to be used together with a current secret')
    if current is not None and len(current) < MIN_SECRET_LENGTH:
        # The value itself is never shown, not even a short (or wrong) one.
        raise bad_value(sources[0], '<hidden>',
                        f'a secret of at least {MIN_SECRET_LENGTH} characters')
    return tuple(s.encode('utf-8') for s in [current, *previous] if s)


def _as_bytes(value):
    if value is None:
        return b''
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode('utf-8', 'surrogatepass')


def _digest(secret, timestamp, body, content_type, content_encoding):
    # Each part length-prefixed: no byte can move from one part to the next
    # (say, from the content type into the encoding) under the same digest.
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for part in (SCHEME, timestamp, content_type, content_encoding, body):
        data = _as_bytes(part)
        mac.update(len(data).to_bytes(8, 'big') + data)
    return mac.hexdigest()


def sign(secret, body, content_type, content_encoding, now=None):
    timestamp = f'{now or time.time():.3f}'
    digest = _digest(secret, timestamp, body, content_type, content_encoding)
    return f'{SCHEME}:{timestamp}:{digest}'


def verify(secrets, signature, body, content_type, content_encoding,
           max_age=0, now=None):
    """Raise InvalidMessage unless one of ``secrets`` signed this message.

    Whatever the message holds (it comes from anyone who can write to the
    broker), nothing but InvalidMessage is raised.
    """
    if not signature:
        raise InvalidMessage('unsigned message (scheduler.broker.secret is '
                             'set, so every message must be signed)')
    if not isinstance(signature, str):
        raise InvalidMessage('malformed signature header')
    try:
        scheme, timestamp, digest = signature.split(':')
        sent = float(timestamp)
    except ValueError:
        raise InvalidMessage('malformed signature header') from None
    if scheme != SCHEME:
        raise InvalidMessage(f'unknown signature scheme {scheme[:20]!r}')
    if not math.isfinite(sent) or not _DIGEST_RE.fullmatch(digest):
        raise InvalidMessage('malformed signature header')
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
                             'scheduler.broker.max_message_age '
                             f'({max_age:.0f}s)')
