"""This consumer process on the broker, and what dead consumers left there.

On Redis, kombu records each delivered, unacknowledged message in a hash
and gives it back only after the visibility timeout (an hour by default).
Here every consumer process has an instance id of its own, made at each
start after the fork, under which its messages are recorded, and a key
that says it is alive (a thread refreshes it). At each (re)connect, and
every few seconds while it runs, the process puts back what consumers
whose key expired held, what a fetch cut short left, and, in a queue's job
store owner, what a version before instances left under its numbered
slots' keys. On the other brokers every call here is a no-op: the broker
gives back a dead consumer's messages itself.
"""
import logging
import time

from .. import transports

log = logging.getLogger(__name__)

# How often the consumer looks for consumer processes that are gone (their
# liveness key expired) and puts back what they held.
DEAD_INSTANCES_SCAN_INTERVAL = 2.0


class Presence:
    """The instance id, its liveness key and the restores of one runtime."""

    def __init__(self, settings, queue_names, owns_stores, held_tags):
        """``queue_names``: the broker queues consumed; ``held_tags()``: the
        delivery tags of messages this process holds (never put back)."""
        self.queue_names = set(queue_names)
        self.owns_stores = owns_stores
        # An SQLite job store serves one host: its owner says so when it
        # sees another host owning the same queue's store (storelock).
        self.one_host_store = owns_stores and settings.jobstore_url.startswith(
            'sqlite') and settings.jobstore_class is None
        self.held_tags = held_tags
        self.channel = None   # the consumer's current channel
        self.instance = transports.consumer_instance(settings)
        self.alive = (None if self.instance is None else
                      transports.alive_key(self.instance, lambda: self.channel,
                                           sorted(self.queue_names)))
        self._next_dead_scan = 0.0

    def start(self):
        if self.alive is not None:
            self.alive.start()

    def stop(self):
        """After the consumer closed its channel (which put back what it
        held): what is left may be put back by anyone now."""
        if self.alive is not None:
            self.alive.stop()

    def connected(self, channel):
        """A (re)connect: say alive before the first fetch, then restore."""
        self.channel = channel
        self._say_alive()
        self._restore(channel)

    def turn(self):
        """A consumer turn: now and then, the consumers that are gone."""
        if (self.instance is not None and self.channel is not None
                and time.monotonic() >= self._next_dead_scan):
            self._restore_dead_instances(self.channel)

    def _say_alive(self):
        # A message recorded under this instance's keys with no liveness
        # key beside them would be taken for a dead process's.
        if self.alive is None:
            return
        try:
            self.alive.refresh()
        except Exception:
            log.exception('could not record this consumer process as alive')

    def _restore(self, channel):
        try:
            # At start, what a dead consumer left. After a reconnect, also
            # what a fetch cut short by the connection loss recorded as
            # unacknowledged without delivering it; not the messages this
            # process holds, whose jobs wait or run here.
            transports.restore_orphaned_messages(channel, self.queue_names,
                                                 keep=self.held_tags())
        except Exception:
            log.exception('could not restore unacknowledged messages; '
                          'they come back after the visibility timeout')
        try:
            # At start and after a reconnect: a fetch is never ours before
            # we consume (a Redis outage may have cut one short).
            transports.restore_fetched_messages(channel, self.queue_names)
        except Exception:
            log.exception('could not restore fetched messages; they come '
                          'back when the queue\'s next consumer starts')
        self._restore_dead_instances(channel)
        if self.owns_stores:
            self._restore_legacy_slots(channel)
        if self.one_host_store:
            self._say_if_another_host_owns(channel)

    def _restore_dead_instances(self, channel):
        """What consumer processes that are gone held (Redis: their
        liveness key expired), whatever queue or daemon they served."""
        self._next_dead_scan = (time.monotonic()
                                + DEAD_INSTANCES_SCAN_INTERVAL)
        try:
            transports.restore_dead_instances(channel, self.instance)
        except Exception:
            log.exception('could not restore the messages of consumer '
                          'processes that are gone; trying again in %gs',
                          DEAD_INSTANCES_SCAN_INTERVAL)

    def _say_if_another_host_owns(self, channel):
        """Two hosts each owning an SQLite job store of the same queues
        fire each deferred job where it was received, and a dead host's
        jobs wait for it: an ERROR that says what to do. Only Redis tells
        (its registry of consumers); the other brokers cannot."""
        stores = {name for name in self.queue_names
                  if name.endswith('.store')}
        try:
            hosts = transports.other_hosts_fetching(channel, stores)
        except Exception:
            log.exception('could not look for other hosts on the broker')
            return
        if hosts:
            log.error('another host (%s) also owns a job store of queue(s) '
                      '%s: the SQLite job store serves one host only, each '
                      'host fires its own deferred jobs and a dead host\'s '
                      'jobs wait for it. For several hosts set '
                      'scheduler.jobstore.url to a PostgreSQL database (see '
                      '"Several machines" in the README)',
                      ', '.join(sorted(hosts)), ', '.join(sorted(stores)))

    def _restore_legacy_slots(self, channel):
        """What processes of a version before consumer instances left
        under their numbered slots' keys (Redis; an upgrade)."""
        try:
            transports.restore_legacy_slots(channel, self.queue_names)
        except Exception:
            log.exception('could not restore the messages left by a '
                          'version before consumer instances')
