"""Consumer instances on Redis: who records what, and who is alive.

Every runtime that consumes from Redis takes a new *instance* id when it
starts (:func:`new_instance_id`: host, pid and a random part) and records
the messages it holds under that id's keys (channel.instance_options). It
says it is alive with ``_pscheduler.alive.<instance>``, a key that expires
:data:`ALIVE_TTL` seconds after its last refresh (:class:`AliveKey`, from a
thread of its own every :data:`ALIVE_REFRESH` seconds, so a consumer thread
busy for a while, say waiting for a locked job store, is not taken for
dead). A process killed (SIGKILL, host lost) stops refreshing it; within
:data:`ALIVE_TTL` seconds the key is gone, and any consumer puts back what
that instance held (restore.restore_dead_instances). Each instance also
lists itself, with the queues it fetches from, in the hash
``_pscheduler.instances`` (:data:`REGISTRY`), so that finding the dead
ones reads one hash, not the whole keyspace; the one that puts back a dead
instance's messages removes its entry. A process of this
host that is gone (its pid no longer exists in this pid namespace) counts
as dead at once: a SIGKILLed child's replacement puts back what it held as
it starts. A live process's keys are never touched, whichever daemon or
host it belongs to.

Why not the numbered slots: two daemons started on one ini (a standby, a
deployment overlapping its predecessor) had a process in each slot number;
the second put back the first one's live messages at start (they ran
twice), and what the first one's killed process held stayed until the
visibility timeout (an hour).
"""
import json
import logging
import os
import re
import secrets
import socket
import threading
import time

from kombu.utils.encoding import bytes_to_str

log = logging.getLogger(__name__)

ALIVE_PREFIX = '_pscheduler.alive.'
REGISTRY = '_pscheduler.instances'
# Seconds an instance's liveness key outlives its last refresh: how soon a
# dead process's messages come back, and how long the refreshing thread may
# be late (a loaded host) before a live process is taken for dead.
ALIVE_TTL = 10
ALIVE_REFRESH = 1.0

_NOT_IN_ID = re.compile(r'[^A-Za-z0-9_-]+')


def new_instance_id():
    """``<short host>-<pid>-<random>``: no '.', no '#' (key parsing), and
    never a number (the keys of numbered slots, before instances)."""
    host = _NOT_IN_ID.sub('_', socket.gethostname().split('.')[0]) or 'host'
    return f'{host}-{os.getpid()}-{secrets.token_hex(4)}'


def alive_key(instance):
    return ALIVE_PREFIX + instance


def registered(client):
    """``{instance: [queue names it fetches from]}``, as each registered."""
    found = {}
    for instance, raw in client.hgetall(REGISTRY).items():
        try:
            queues = json.loads(raw)['queues']
        except (ValueError, TypeError, KeyError):
            queues = []
        found[bytes_to_str(instance)] = list(queues)
    return found


def forget(client, instance):
    """Take a dead instance out of the registry (its messages are back)."""
    client.hdel(REGISTRY, instance)


def is_alive(client, instance):
    """Whether ``instance`` is alive: its liveness key is there and, if it
    ran on this host (and in this pid namespace), its process too. A
    process that died here (a SIGKILLed child, whose replacement starts
    within a second) need not wait for its key to expire."""
    raw = client.get(alive_key(instance))
    if raw is None:
        return False
    try:
        owner = json.loads(raw)
        here, pid = owner['host'] == host_identity(), int(owner['pid'])
    except (ValueError, TypeError, KeyError):
        return True   # not ours to judge: wait for the key to expire
    if owner['host'] is None:
        return True
    return not here or _process_exists(pid)


def other_hosts_fetching(client, queue_names):
    """The hosts (``host_identity``) other than this one whose live
    instances fetch from any of ``queue_names``."""
    here, found = host_identity(), set()
    for instance, queues in registered(client).items():
        if not set(queues) & set(queue_names):
            continue
        raw = client.get(alive_key(instance))
        try:
            host = json.loads(raw)['host'] if raw is not None else None
        except (ValueError, TypeError, KeyError):
            host = None
        if host is not None and host != here:
            found.add(host)
    return found


def host_identity():
    """This host, as the processes that can see each other's pids share
    it: the host name and the pid namespace (containers given one host
    name do not see each other's processes)."""
    try:
        namespace = os.stat('/proc/self/ns/pid').st_ino
    except OSError:
        return None   # no way to tell: never judge by the pid
    return f'{socket.gethostname()}/{namespace}'


def _process_exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True   # exists, someone else's
    return True


class AliveKey:
    """A thread keeping ``_pscheduler.alive.<instance>`` in Redis while the
    process lives; :meth:`stop` removes it (a clean stop: whatever the
    instance still holds may be put back at once).

    It uses a client of its own on the channel's connection pool (redis-py
    clients are thread-safe); ``channel()`` gives the consumer's current
    channel, None while it has none; ``queues``: the names of the queues it
    fetches from (where its fetched lists are).
    """

    def __init__(self, instance, channel, queues):
        self.instance = instance
        self._channel = channel
        self._registration = json.dumps({'queues': sorted(queues)})
        self._stopped = threading.Event()
        self._thread = None
        self._client = None
        self._client_of = None   # the channel self._client draws on
        self.refreshed_at = None   # time.time() of the last refresh

    def start(self):
        self._thread = threading.Thread(
            target=self._run, name='pscheduler-alive', daemon=True)
        self._thread.start()

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def _run(self):
        while not self._stopped.is_set():
            try:
                self.refresh()
            except Exception as exc:
                # The consumer's reconnects say the broker is down.
                log.debug('could not refresh %s: %s',
                          alive_key(self.instance), exc)
            self._stopped.wait(ALIVE_REFRESH)

    def _current_client(self):
        channel = self._channel()
        if channel is None or not hasattr(channel, '_create_client'):
            return None
        if self._client is None or channel is not self._client_of:
            # A new channel (a reconnect): a client on its pool.
            self._client, self._client_of = channel._create_client(), channel
        return self._client

    def refresh(self):
        client = self._current_client()
        if client is None:
            return
        # Alive first, then listed: a restorer never finds it listed and
        # not alive while it lives (nor drops it from the list for good:
        # each refresh lists it again).
        client.set(alive_key(self.instance), json.dumps(
            {'host': host_identity(), 'pid': os.getpid()}), ex=ALIVE_TTL)
        client.hset(REGISTRY, self.instance, self._registration)
        self.refreshed_at = time.time()

    def stop(self):
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            client = self._current_client()
            if client is not None:
                client.delete(alive_key(self.instance))
        except Exception as exc:
            log.debug('could not remove %s: %s', alive_key(self.instance),
                      exc)
