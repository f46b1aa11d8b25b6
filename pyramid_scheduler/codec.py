"""Messages to and from bytes: the one encode path and the one decode path.

Every message this package sends (jobs, cancels and commands from the
producer, replies from a runtime) is serialized and signed by
:func:`encode`; every message it receives (by a runtime, or an admin reply
by the sender of a command) is verified and loaded by :func:`decode`, so
the signature, the content types accepted and the envelope checks are the
same on both ends (see signing and wire).

Replies are always JSON, whatever ``scheduler.broker.serializer`` says:
the command line reads them, and they never carry a job's arguments.
"""
from kombu import serialization

from . import signing, wire
from .errors import InvalidMessage

REPLY_SERIALIZER = 'json'


def content_type_of(serializer):
    """The content type kombu's serializer ``serializer`` writes."""
    return serialization.registry.name_to_type[serializer]


def encode(settings, body, serializer=None):
    """``(payload, content_type, content_encoding, headers)`` of ``body``.

    ``serializer`` defaults to ``scheduler.broker.serializer``. The
    signature covers the serialized payload before compression (kombu
    decompresses before a consumer sees the body).
    """
    content_type, encoding, payload = serialization.dumps(
        body, serializer or settings.serializer)
    headers = {}
    if settings.secrets:
        headers[signing.HEADER] = signing.sign(
            settings.secrets[0], payload, content_type, encoding)
    return payload, content_type, encoding, headers


def decode(settings, message, serializer=None):
    """The validated envelope of a kombu ``message``, or InvalidMessage.

    With a secret set, the signature is checked first, before anything
    reads the body; then only the content type of ``serializer`` (by
    default ``scheduler.broker.serializer``) is accepted, so a pickle body
    never reaches a JSON consumer's loads.
    """
    if settings.secrets:
        signing.verify(settings.secrets,
                       (message.headers or {}).get(signing.HEADER),
                       message.body, message.content_type,
                       message.content_encoding, settings.max_message_age)
    expected = content_type_of(serializer or settings.serializer)
    if message.content_type != expected:
        configured = ('' if serializer else
                      f' (scheduler.broker.serializer = '
                      f'{settings.serializer})')
        raise InvalidMessage(
            f'content type {message.content_type!r} refused: this '
            f'consumer accepts only {expected!r}{configured}')
    try:
        body = serialization.loads(message.body, message.content_type,
                                   message.content_encoding,
                                   accept=[expected])
    except Exception as exc:
        raise InvalidMessage(f'body does not decode: {exc}') from exc
    return wire.validate(body)


def decode_reply(settings, message):
    """A ``reply`` envelope, or InvalidMessage (the other types included)."""
    body = decode(settings, message, REPLY_SERIALIZER)
    if body['type'] != wire.REPLY:
        raise InvalidMessage(f'expected a reply, got {body["type"]}')
    return body
