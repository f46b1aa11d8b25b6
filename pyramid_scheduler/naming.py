"""Queue names on the broker, and the kombu ``Queue`` objects for them.

Every name starts with ``scheduler.id``, so several applications share one
broker without seeing each other's messages. These names are persisted (they
are the keys, rows and queues of running systems) and part of the wire
contract: never change them.

- ``<id>.<queue>``: jobs of ``<queue>``;
- ``<id>.<queue>.admin``: admin commands (``pscheduler --message``);
- ``<id>.<queue>.store``: deferred jobs and cancels, for the one process that
  owns the queue's job store;
- ``<id>.<queue>.dead``: dead letters;
- ``<id>.reply.<request_id>``: the replies to one admin command.

Nothing here touches a broker: a ``Queue`` is bound to a channel by whoever
uses it.
"""
import kombu


def queue_name(settings, queue):
    return f'{settings.scheduler_id}.{queue}'


def admin_queue_name(settings, queue):
    return f'{settings.scheduler_id}.{queue}.admin'


def store_queue_name(settings, queue):
    """Where deferred jobs and cancels go when several processes serve a
    queue: only the one that owns the queue's job store consumes it."""
    return f'{settings.scheduler_id}.{queue}.store'


# A dead letter's headers: why it was rejected, and the broker queue it
# came from (where ``requeue-dead-letters`` puts it back).
REASON_HEADER = 'x-pscheduler-reason'
FROM_QUEUE_HEADER = 'x-pscheduler-queue'


def dead_letter_queue_name(settings, queue):
    return f'{settings.scheduler_id}.{queue}.dead'


def reply_queue_name(settings, request_id):
    """The private reply queue of one admin command."""
    return f'{settings.scheduler_id}.reply.{request_id}'


def kombu_queue(name, durable=True, auto_delete=False):
    # The default exchange routes by queue name: one broker round trip per
    # publish on Redis instead of two through a named exchange.
    return kombu.Queue(name, exchange=kombu.Exchange(''), routing_key=name,
                       durable=durable, auto_delete=auto_delete)


def reply_queue(name):
    """A command's private reply queue: gone once the sender is done."""
    return kombu_queue(name, durable=False, auto_delete=True)


def job_queue(settings, queue):
    return kombu_queue(queue_name(settings, queue))


def admin_queue(settings, queue):
    return kombu_queue(admin_queue_name(settings, queue))


def store_queue(settings, queue):
    return kombu_queue(store_queue_name(settings, queue))


def dead_letter_queue(settings, queue):
    return kombu_queue(dead_letter_queue_name(settings, queue))
