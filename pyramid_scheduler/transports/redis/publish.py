"""Publishing to Redis in one LPUSH, the message kombu would have written.

A kombu publish through the default exchange on Redis ends in a single
``LPUSH <queue> <envelope>`` (``Channel._put`` in kombu/transport/redis.py),
but on the way it builds a Producer, binds and copies entities, wraps the
call in ``ensure`` and goes through the virtual transport: several times the
cost of the round trip itself. :class:`RedisPublisher` writes the same
envelope on redis-py connections, so any kombu consumer (ours in
transports/redis/channel.py, or a plain one) reads these messages unchanged.

It covers one case exactly, and :func:`publisher_for` and
:func:`declares_nothing` say when: a plain ``redis://`` URL without query
options (no TLS, sentinel, unix socket, key prefix or other transport
option), and queues whose declaration sends nothing to Redis. Everything
else, and every retry, goes through kombu: producer.py chooses.
"""
import base64
import os
import uuid

import redis
from kombu.compression import compress
from kombu.utils.json import dumps
from kombu.utils.url import url_to_parts
from redis.backoff import NoBackoff
from redis.retry import Retry

# kombu's defaults for a URL that leaves them out (kombu/transport/redis.py).
DEFAULT_HOST = '127.0.0.1'
DEFAULT_PORT = 6379
# What kombu's virtual transport puts in every message it stores
# (virtual/base.py): the body in base64, and AMQP's "persistent" mode.
BODY_ENCODING = 'base64'
PERSISTENT = 2


def publisher_for(settings):
    """A RedisPublisher for the broker of ``settings``, or None.

    None unless the broker URL is one this module handles exactly.
    """
    options = connection_options(settings.broker_url, settings.send_timeout)
    return None if options is None else RedisPublisher(options)


def connection_options(url, send_timeout):
    """redis-py options for a plain ``redis://`` URL, as kombu reads it.

    None for anything else: another scheme (``rediss``, ``sentinel``,
    ``redis+socket``), a failover list, or query options, which kombu turns
    into transport options.
    """
    url = str(url)
    if ';' in url or not url.lower().startswith('redis://'):
        return None
    parts = url_to_parts(url)
    db = _database_number(parts.path)
    if parts.query or db is None:
        return None
    # A request must not wait on Redis longer than send_timeout: bounded
    # waits, and no retry inside redis-py (the producer retries, through
    # kombu, until its deadline).
    timeout = max(send_timeout, 0.5)
    return dict(host=parts.hostname or DEFAULT_HOST,
                port=parts.port or DEFAULT_PORT, db=db,
                username=parts.username, password=parts.password,
                socket_connect_timeout=timeout, socket_timeout=timeout,
                socket_keepalive=True, retry=Retry(NoBackoff(), 0))


def _database_number(path):
    """The database of the URL's path, as kombu reads it; None if invalid."""
    if not path or path == '/':
        return 0
    if path.startswith('/'):
        path = path[1:]
    try:
        return int(path)
    except ValueError:
        return None     # kombu says why, on the fallback path


def declares_nothing(entities):
    """True if declaring ``entities`` sends nothing to Redis.

    On kombu's Redis transport, declaring a queue of the default exchange
    only records it in the channel (no binding set, since the exchange has
    no name); a queue with an expiry or auto-delete, or bound to a named
    exchange, needs kombu.
    """
    return all(
        not entity.exchange.name and not entity.bindings
        and not entity.auto_delete and entity.expires is None
        and not entity.queue_arguments
        for entity in entities)


def envelope(queue, body, content_type, content_encoding, headers,
             compression=None):
    """The text kombu's Redis transport pushes for this message.

    As ``kombu.Producer.publish`` with ``exchange=''``, ``delivery_mode=2``
    and priority 0 on a virtual channel: ``Producer._prepare``, then
    ``Channel.prepare_message`` and ``basic_publish``.
    """
    if isinstance(body, str):
        content_encoding = content_encoding or 'utf-8'
        body = body.encode(content_encoding)
    elif not content_encoding:
        content_encoding = 'binary'
    headers = dict(headers)
    if compression:
        body, headers['compression'] = compress(body, compression)
    return dumps({
        'body': base64.b64encode(body).decode('ascii'),
        'content-encoding': content_encoding,
        'content-type': content_type,
        'headers': headers,
        'properties': {
            'delivery_mode': PERSISTENT,
            'delivery_info': {'exchange': '', 'routing_key': queue},
            'priority': 0,
            'body_encoding': BODY_ENCODING,
            'delivery_tag': str(uuid.uuid4()),
        },
    })


class RedisPublisher:
    """Pushes kombu messages onto the queues of one Redis server.

    Connections are redis-py's own (they connect, authenticate and select
    the database) and are kept in a list of idle ones, per process: a
    forked child opens its own instead of sharing the parent's sockets.
    redis-py's client would check each connection for stray data and record
    metrics around every command, which costs more than the LPUSH itself;
    here a connection goes back to the list only after a complete reply, so
    it never holds stray data, and one that fails is dropped.
    """

    #: What publish() raises when Redis fails or cannot be reached.
    errors = (redis.RedisError, OSError)
    #: Of those, what says that Redis could not be reached (in time).
    connection_errors = (redis.ConnectionError, redis.TimeoutError, OSError)
    declares_nothing = staticmethod(declares_nothing)

    def __init__(self, options):
        self._options = options
        self._idle = []
        self._pid = os.getpid()

    def publish(self, queue, body, content_type, content_encoding, headers,
                compression=None):
        message = envelope(queue, body, content_type, content_encoding,
                           headers, compression)
        connection = self._acquire()
        try:
            connection.send_packed_command([lpush_command(queue, message)])
            connection.read_response()    # raises the error Redis replies
        except BaseException:
            connection.disconnect()
            raise
        self._idle.append(connection)

    def _acquire(self):
        if self._pid != os.getpid():
            # The parent's connections are left to it (and to the garbage
            # collector, which closes this process' copies without a
            # shutdown, so the parent's sockets keep working).
            self._idle, self._pid = [], os.getpid()
        try:
            return self._idle.pop()     # atomic: safe across threads
        except IndexError:
            return redis.Connection(**self._options)

    def close(self):
        idle, self._idle = self._idle, []
        if self._pid == os.getpid():
            for connection in idle:
                connection.disconnect()


def lpush_command(queue, message):
    """``LPUSH queue message`` in Redis's protocol (RESP), built here:
    redis-py's general packer costs about a tenth of an enqueue."""
    key, value = queue.encode(), message.encode()
    return b'*3\r\n$5\r\nLPUSH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n' % (
        len(key), key, len(value), value)
