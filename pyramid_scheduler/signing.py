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
message signed with it can be left in the broker. The secrets are read from
the ini, a file or the environment by secrets.py.
"""
import hashlib
import hmac
import math
import re
import time

from .errors import InvalidMessage

HEADER = 'x-pscheduler-signature'
SCHEME = 'v1'
_DIGEST_RE = re.compile(r'[0-9a-f]{64}')


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
