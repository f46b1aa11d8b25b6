"""Is an item of a virtual transport's queue a kombu envelope at all?

kombu's virtual transports (the embedded SQLite one, Redis) keep each
message as a JSON *envelope*: ``{"body", "headers", "content-type",
"properties": {"delivery_tag", "delivery_info", "body_encoding"}}``. An item
that is not one (a row inserted by hand, a raw ``LPUSH``, a message of
another program) makes kombu raise while it builds the message, before the
runtime, which dead-letters what it cannot read, ever sees it; the error
then looks like a broken connection, the batch goes back, and the same item
stops the queue again at the next try.

So the transports check every item with :func:`envelope_problem` first, and
move one that is not an envelope to the dead-letter queue in their own terms
(its text kept, an ERROR logged): the queue behind it goes on.
"""
import binascii
import json

from kombu.utils.json import object_hook as kombu_object_hook

# The runtime's queue names (naming.py): ``<id>.<queue>`` and its admin and
# store queues share the dead-letter queue ``<id>.<queue>.dead``.
_SUFFIXES = ('.admin', '.store')
DEAD_SUFFIX = '.dead'


def dead_letter_queue_for(queue):
    """The dead-letter queue of the broker queue ``queue`` (naming.py)."""
    for suffix in _SUFFIXES:
        if queue.endswith(suffix):
            queue = queue[:-len(suffix)]
            break
    return queue + DEAD_SUFFIX


def is_dead_letter_queue(queue):
    return queue.endswith(DEAD_SUFFIX)


def envelope_decoder():
    """A function that loads an envelope's JSON text as kombu's ``loads``
    does (a ``{"__type__", "__value__"}`` object is kombu's typed value),
    for one thread: one per channel. Its decoder is built once, where
    ``json.loads`` builds one per call, and kombu's hook, which builds a
    set for every object, is asked only of objects that may be typed
    values: an envelope has four objects, none of them one."""
    return json.JSONDecoder(object_hook=_typed_value_hook).decode


def _typed_value_hook(obj):
    if len(obj) == 2 and '__type__' in obj:
        return kombu_object_hook(obj)
    return obj


def envelope_problem(payload, needs_tag=True, needs_route=False):
    """Why kombu cannot make a message of ``payload`` (decoded JSON), or
    None.

    ``needs_tag``: it must carry its delivery tag (the embedded transport
    gives one to an envelope that has none); ``needs_route``: its
    ``delivery_info`` must name an exchange and routing key (what the Redis
    transport records of an unacknowledged message).
    """
    if not isinstance(payload, dict):
        return f'not a JSON object but {type(payload).__name__}'
    properties = payload.get('properties')
    if not isinstance(properties, dict):
        return 'no "properties" object'
    tag = properties.get('delivery_tag')
    if not isinstance(tag, str) and (needs_tag or tag is not None):
        return 'no string "delivery_tag"'
    problem = _fields_problem(payload, properties)
    if problem is None and needs_route:
        info = properties['delivery_info']
        if not (isinstance(info, dict)
                and isinstance(info.get('exchange'), str)
                and isinstance(info.get('routing_key'), str)):
            problem = 'no "exchange" and "routing_key" in "delivery_info"'
    return problem


# The envelope's fields that kombu reads, and the type each must have
# (checked for every message delivered: one lookup each).
_FIELD_TYPES = (('headers', dict), ('body', str), ('content-type', str),
                ('content-encoding', str))


def _fields_problem(payload, properties):
    for key, kind in _FIELD_TYPES:
        value = payload.get(key)
        if value is not None and not isinstance(value, kind):
            return f'"{key}" is not a {kind.__name__}'
    info = properties.get('delivery_info')
    if info is not None and not isinstance(info, dict):
        return '"delivery_info" is not an object'
    encoding = properties.get('body_encoding')
    body = payload.get('body')
    if body and encoding is not None:
        if encoding != 'base64':
            return f'unknown body encoding {encoding!r:.40}'
        try:
            binascii.a2b_base64(body)
        except (binascii.Error, ValueError):
            return 'body is not base64'
    return None
