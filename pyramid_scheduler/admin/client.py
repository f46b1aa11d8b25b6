"""The sender's end of the admin commands (see the package docstring):
publish a command to each queue's admin queue, collect the replies, which
are decoded (and verified) by codec."""
import logging
import time
import uuid

from .. import codec, naming, transports, wire
from ..errors import AdminTimeout, InvalidMessage

log = logging.getLogger(__name__)


def send_command(settings, name, queues=None, args=None, timeout=None,
                 wait=True):
    """Send ``name`` to each queue's runtime; return their replies.

    With ``wait`` the call collects one reply per queue until ``timeout``
    and returns ``(replies, missing_queues)``; without, it returns at once.
    """
    from ..producer import Producer
    queues = tuple(queues or settings.queues)
    for queue in queues:
        settings.check_queue(queue)
    timeout = settings.admin_timeout if timeout is None else timeout
    request_id = uuid.uuid4().hex
    reply_name = f'{settings.scheduler_id}.reply.{request_id}'
    reply_queue = naming.reply_queue(reply_name)
    producer = Producer(settings, pool_limit=1)
    connection = transports.connect(settings)
    try:
        if wait:
            reply_queue(connection.default_channel).declare()
        for queue in queues:
            body = wire.command(name, request_id,
                                reply_to=reply_name if wait else None,
                                args=args, ttl=max(timeout, 1) * 2)
            body['queue'] = queue
            target = naming.admin_queue(settings, queue)
            producer.publish(body, target.name, declare=[target])
        if not wait:
            return [], ()
        replies = _collect(settings, connection, reply_queue, request_id,
                           len(queues), timeout)
        answered = {r['queue'] for r in replies}
        return replies, tuple(q for q in queues if q not in answered)
    finally:
        try:
            if wait:
                reply_queue(connection.default_channel).delete()
        except Exception:
            pass
        connection.release()
        producer.close()


def _collect(settings, connection, reply_queue, request_id, expected, timeout):
    replies = []
    deadline = time.monotonic() + timeout

    def on_message(message):
        try:
            body = codec.decode_reply(settings, message)
        except InvalidMessage as exc:
            log.warning('ignoring a bad reply: %s', exc)
        else:
            if body['request_id'] == request_id:
                replies.append(body)
        message.ack()

    with connection.Consumer([reply_queue], on_message=on_message,
                             accept=None):
        while len(replies) < expected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                connection.drain_events(timeout=min(remaining, 0.2))
            except TimeoutError:
                continue
            except OSError:
                continue
    return replies


def require_all(replies, missing, name):
    if missing:
        raise AdminTimeout(
            f'no answer to {name!r} from the queue(s) {", ".join(missing)}: '
            'is pscheduler running for them (or combined mode serving)?')
    return replies
