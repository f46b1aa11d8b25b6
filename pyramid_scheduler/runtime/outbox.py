"""What the consumer thread sends: dead letters, messages passed on, replies,
jobs requeued by an admin command.

kombu connections are not thread-safe, and all three are sent while a
message is handled, in the consumer thread: they go out on the consumer's
own channel, which the consumer gives the outbox at each (re)connect
(:meth:`Outbox.use`). A test, or anything that drives the dispatcher
without a broker, gives a dispatcher an outbox of its own
(``Dispatcher.with_outbox``).

On RabbitMQ the consumer's connection is in confirm mode, as every amqp
connection is (transports/__init__.py): each publish here returns once the
broker has written the message, before the message it came from is
acknowledged. A job passed on to the store owner is a job; a dead letter
is the only trace of a refused one. A delivery that arrives while a publish
waits for its confirm is queued by the consumer (``_one_at_a_time``), not
handled inside the wait.
"""
import os

from kombu.transport import virtual

from .. import codec, naming, wire


class Outbox:
    """Publishes on the consumer's current channel (consumer thread)."""

    def __init__(self, settings, channel=None):
        self.settings = settings
        self.channel = channel

    def use(self, channel):
        """Publish on ``channel`` from now on (the consumer, at connect)."""
        self.channel = channel

    def bind(self, entity):
        """A kombu entity (a queue) bound to the channel, to declare,
        count or purge it (the admin commands)."""
        return entity(self.channel)

    def republish(self, message, target, headers, compression=None):
        """Send a received message's body on to the queue ``target``, with
        ``headers`` but their ``compression``: kombu has decompressed the
        body, and ``compression`` says how to compress it again."""
        headers = {key: value for key, value in headers.items()
                   if key != 'compression'}
        self._producer().publish(
            message.body, routing_key=target.name, exchange='',
            content_type=message.content_type or 'application/data',
            content_encoding=message.content_encoding or 'binary',
            headers=headers, declare=[target], delivery_mode=2,
            compression=compression)

    def send(self, body, target):
        """Send a new message ``body`` to the queue ``target`` (a job an
        admin command requeues: failedjobs)."""
        payload, content_type, encoding, headers = codec.encode(
            self.settings, body)
        self._producer().publish(
            payload, routing_key=target.name, exchange='',
            content_type=content_type, content_encoding=encoding,
            headers=headers, declare=[target], delivery_mode=2,
            compression=self.settings.compressor)

    def reply(self, body, queue, result=None, error=None):
        """Answer the command ``body``, if its sender waits for an answer."""
        if not body.get('reply_to'):
            return
        reply = wire.reply(body['request_id'], queue, os.getpid(),
                           result=result, error=error)
        payload, content_type, encoding, headers = codec.encode(
            self.settings, reply, codec.REPLY_SERIALIZER)
        # On RabbitMQ published, never declared: the sender declared its
        # reply queue, and declaring it here as we think it is would close
        # the channel when a queue of that name exists otherwise (durable,
        # say): its acks lost, every message redelivered, again and again.
        # A virtual transport (SQLite, Redis) closes nothing: there the
        # declare stays, so that the embedded broker's housekeeping drops a
        # reply its sender no longer waited for (an auto-delete queue).
        target = naming.reply_queue(body['reply_to'])
        self._producer().publish(
            payload, routing_key=target.name, exchange='',
            content_type=content_type, content_encoding=encoding,
            headers=headers, declare=[target] if isinstance(
                self.channel, virtual.Channel) else [])

    def _producer(self):
        return self.channel.connection.client.Producer(self.channel)
