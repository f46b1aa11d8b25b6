"""Sending messages: bounded retries, signing, and transaction awareness.

The common case is made cheap, and every failure goes the long way: on a
plain ``redis://`` URL a message is one LPUSH (transports/redis/publish.py);
elsewhere a kombu Producer kept per pooled connection publishes it once,
without kombu's retry wrappers. If that fails, kombu reconnects and retries
until ``scheduler.broker.send_timeout``, then BrokerUnavailable.
"""
import logging
import os
import threading
import time
import weakref

from pyramid.threadlocal import get_current_request

from . import codec, transports, values
from .errors import BrokerUnavailable

log = logging.getLogger(__name__)


class Producer:
    """Publishes message bodies to the broker, safe to share across threads.

    A connection pool is made lazily per process: after a fork the child
    builds its own instead of reusing the parent's sockets.
    """

    def __init__(self, settings, pool_limit=10):
        self.settings = settings
        self._pool_limit = pool_limit
        self._pool = None
        self._pool_pid = None
        self._lock = threading.Lock()
        self._direct = _direct_publisher(settings)
        # One kombu Producer per pooled connection, kept while it works:
        # building one costs more than the publish itself.
        self._producers = weakref.WeakKeyDictionary()

    def _connections(self):
        with self._lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = transports.connect(self.settings).Pool(
                    limit=self._pool_limit)
                self._pool_pid = os.getpid()
                self._producers = weakref.WeakKeyDictionary()
            return self._pool

    def close(self):
        with self._lock:
            if self._pool is not None and self._pool_pid == os.getpid():
                self._pool.force_close_all()
            self._pool = None
            self._producers = weakref.WeakKeyDictionary()
        if self._direct is not None:
            self._direct.close()

    def encode(self, body):
        """``(payload, content_type, content_encoding, headers)``; see
        :func:`pyramid_scheduler.codec.encode`."""
        return codec.encode(self.settings, body)

    def publish(self, body, routing_key, declare=(), timeout=None):
        """Send ``body`` to the queue ``routing_key`` or raise BrokerUnavailable.

        Retries broker errors until ``scheduler.broker.send_timeout`` has
        passed: a web request never waits longer than that on the broker.
        """
        self.publish_encoded(self.encode(body), routing_key, declare, timeout)

    def publish_encoded(self, message, routing_key, declare=(),
                        timeout=None):
        """:meth:`publish` a message :meth:`encode` made (the outbox keeps
        them so)."""
        timeout = self.settings.send_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        if self._direct is not None and self._direct.declares_nothing(
                declare) and self._publish_direct(message, routing_key,
                                                  timeout, deadline):
            return
        self._publish_with_kombu(message, routing_key, declare, timeout,
                                 deadline)

    def _publish_direct(self, message, routing_key, timeout, deadline):
        """One LPUSH; False if it failed and kombu should try (it retries
        until the deadline, and reports errors as it always has)."""
        try:
            self._direct.publish(routing_key, *message,
                                 compression=self.settings.compressor)
            return True
        except self._direct.errors as exc:
            if isinstance(exc, self._direct.connection_errors) and \
                    time.monotonic() >= deadline:
                raise self._unavailable(exc, timeout) from exc
            log.debug('direct publish to Redis failed (%s: %s); trying '
                      'again through kombu', type(exc).__name__, exc)
            return False

    def _publish_with_kombu(self, message, routing_key, declare, timeout,
                            deadline):
        pool = self._connections()
        try:
            with pool.acquire(block=True, timeout=timeout) as connection:
                if not self._publish_once(connection, message, routing_key,
                                          declare, deadline):
                    self._publish_retrying(connection, message, routing_key,
                                           declare, deadline)
        except BrokerUnavailable:
            raise
        except Exception as exc:
            if _is_connection_error(exc, pool) or _is_refusal(exc):
                raise self._unavailable(exc, timeout) from exc
            raise

    def _publish_once(self, connection, message, routing_key, declare,
                      deadline):
        """Publish on a connection that is up, with its kept Producer.

        False if the connection is down or fails: the caller then goes the
        long way, which reconnects and retries until the deadline.
        """
        if not connection.connected:
            self._producers.pop(connection, None)
            return False
        cached = self._producers.get(connection)
        if cached is None:
            cached = self._producers[connection] = _CachedProducer(
                connection.Producer())
        try:
            cached.publish(message, routing_key, declare, self.settings,
                           timeout=_remaining(deadline))
        except (connection.connection_errors + connection.channel_errors +
                (OSError, _refusals())) as exc:
            # Its channel may be gone; a new one comes with the reconnect.
            self._producers.pop(connection, None)
            _forget_unconfirmed(connection)
            log.debug('publish failed (%s: %s); retrying until the deadline',
                      type(exc).__name__, exc)
            return False
        return True

    def _publish_retrying(self, connection, message, routing_key, declare,
                          deadline):
        def give_up_after_deadline(exc, interval):
            if time.monotonic() + interval >= deadline:
                raise exc

        retry = dict(errback=give_up_after_deadline, max_retries=None,
                     interval_start=0, interval_step=0.1, interval_max=0.5)
        connection.ensure_connection(timeout=_remaining(deadline), **retry)
        producer = connection.Producer()
        publish = connection.ensure(producer, producer.publish, **retry)
        _kombu_publish(publish, message, routing_key, list(declare),
                       self.settings.compressor, _remaining(deadline))

    def _unavailable(self, exc, timeout):
        url = values.redact_url(self.settings.broker_url)
        if _is_refusal(exc):
            return BrokerUnavailable(
                f'the broker at {url} refused the message (a negative '
                'publisher confirm: MessageNacked; a full queue that rejects '
                'publishes, or a broker error); the job was not sent')
        return BrokerUnavailable(
            f'the broker at {url} could not be reached within {timeout:g}s '
            f'({type(exc).__name__}: {exc}); the job was not sent. Check '
            'that the broker runs, or raise scheduler.broker.send_timeout')


class _CachedProducer:
    """A kombu Producer kept with its connection, and what it declared.

    kombu remembers declared entities per connection too, but finds that out
    only after binding a copy of each entity to the channel, on every
    publish. Dropped (with what it declared) when its connection fails.
    """

    def __init__(self, producer):
        self.producer = producer
        self.declared = set()

    def publish(self, message, routing_key, declare, settings, timeout):
        undeclared = [e for e in declare if e.name not in self.declared]
        _kombu_publish(self.producer.publish, message, routing_key,
                       undeclared, settings.compressor, timeout)
        self.declared.update(e.name for e in undeclared)


def _kombu_publish(publish, message, routing_key, declare, compression,
                   timeout):
    """``publish`` (a kombu Producer's, maybe wrapped by ``ensure``) one
    encoded message to the queue ``routing_key``, persistent, through the
    default exchange."""
    payload, content_type, encoding, headers = message
    publish(payload, routing_key=routing_key, exchange='',
            content_type=content_type, content_encoding=encoding,
            headers=dict(headers), declare=declare, delivery_mode=2,
            compression=compression, timeout=timeout)


def _forget_unconfirmed(connection):
    """Close a connection in confirm mode whose publish failed.

    Its channel may still receive the broker's ack of that publish, which
    would be taken for the ack of the next one (RabbitMQ confirms in order,
    and py-amqp waits for "an" ack): the retry must start on a new
    connection (kombu reconnects it). Other connections are left as they
    are.
    """
    if not (connection.transport_options or {}).get('confirm_publish'):
        return
    try:
        connection.close()
    except Exception as exc:
        log.debug('closing a connection after a failed publish: %s: %s',
                  type(exc).__name__, exc)


def _remaining(deadline):
    return max(deadline - time.monotonic(), 0.05)


def _direct_publisher(settings):
    """The one-LPUSH publisher for a plain redis:// URL, or None.

    transports decides (its scheme table), and imports redis, an extra,
    only for a Redis URL.
    """
    return transports.direct_publisher(settings)


def _is_connection_error(exc, pool):
    import socket
    errors = (OSError, socket.timeout, TimeoutError)
    try:
        with pool.acquire(block=False) as connection:
            errors = errors + tuple(connection.connection_errors) + tuple(
                connection.channel_errors)
    except Exception:
        pass
    from kombu.exceptions import OperationalError
    return isinstance(exc, errors + (OperationalError,))


def _refusals():
    """The error of a publish the broker confirmed negatively (a RabbitMQ
    nack: say, a full queue with ``x-overflow = reject-publish``): the
    message was not taken, as if the broker were down."""
    from amqp.exceptions import MessageNacked  # kombu's own dependency
    return MessageNacked


def _is_refusal(exc):
    """True for a nack, also when kombu's retry re-raised it as its own
    OperationalError."""
    refusal = _refusals()
    return isinstance(exc, refusal) or isinstance(exc.__cause__, refusal) \
        or isinstance(exc.__context__, refusal)


class AfterCommitSender:
    """Makes a send part of the caller's transaction, if it has one.

    pyramid_tm marks the request's environ with ``tm.active`` while its
    transaction is open; an explicit-mode ``transaction`` manager says so by
    returning a transaction from ``get()``. Then the message joins the
    transaction through the outbox (spooltxn.SpoolDataManager): written to
    disk when it commits, published after, and kept until the broker has it.
    Otherwise there is nobody who will commit, and the message goes out at
    once (or BrokerUnavailable).
    """

    def __init__(self, enabled, settings=None, producer=None):
        self.enabled = enabled
        # Looked up once: current_transaction() runs on every send.
        self._transaction = _transaction_package() if enabled else None
        self._settings = settings
        self._producer = producer
        self._drainer = None
        if self._transaction is not None and settings is not None:
            from .spool import SpoolDrainer
            # Its thread starts only when a commit could not publish.
            self._drainer = SpoolDrainer(settings,
                                         lambda: Producer(settings))

    def close(self):
        """Stop this process' outbox retry thread, if it runs: what it
        has not sent stays in the outbox, for the daemon or the next run."""
        if self._drainer is not None:
            self._drainer.stop()

    def current_transaction(self):
        transaction = self._transaction
        if transaction is None:
            return None
        request = get_current_request()
        environ = getattr(request, 'environ', None) or {}
        if environ.get('tm.active'):
            manager = environ.get('tm.manager') or transaction.manager
            return manager.get()
        if transaction.manager.explicit:
            try:
                return transaction.manager.get()
            except transaction.interfaces.NoTransaction:
                return None
        return None

    def send(self, send, body=None, routing_key=None):
        """Call ``send()`` now, or spool ``body`` for ``routing_key`` with
        the current transaction."""
        txn = self.current_transaction()
        if txn is None:
            return send()
        if self._drainer is None or body is None:
            raise RuntimeError('AfterCommitSender needs settings and the '
                               'message to join a transaction')
        from .spooltxn import SpoolDataManager, data_manager_of
        self._drainer.resume_once()
        manager = data_manager_of(txn, self, lambda: SpoolDataManager(
            self._settings, self._drainer, self._producer, None))
        manager.add(body, routing_key)
        return None


def _transaction_package():
    try:
        import transaction
    except ImportError:
        return None
    return transaction
