"""Leases: taking rows, who holds them, whether alive, taking them back.

A received message is *leased* (:func:`lease_batch`): its row records the
owner's token, node (host and pid namespace), pid and process start time.
A consumer that dies without a word (SIGKILL, OOM) leaves leased rows
behind; :func:`reclaim` makes visible again those whose owner is gone (pid
not alive, or alive with another start time) and those leased longer than
the visibility timeout (a hung owner, or one on another node whose
liveness cannot be checked). Consumers reclaim when they start and every
few seconds (waiting.py); the runtime's :func:`housekeeping` also drops
stale reply queues.
"""
import logging
import os
import socket
import time

from .database import (
    BUSY_TIMEOUT, HAS_RETURNING, MESSAGE_TABLE, QUEUE_TABLE, UNLEASE,
    Database, ensure_database)
from .wakeups import remove_stale_sockets, wake_directory

log = logging.getLogger(__name__)

VISIBILITY_TIMEOUT = 3600.0
# Auto-delete queues (command replies) idle this long are dropped by
# housekeeping with whatever is left in them.
STALE_QUEUE_AGE = 86400.0


def current_node():
    """This host and pid namespace: where a pid means the same process."""
    try:
        namespace = os.readlink('/proc/self/ns/pid')
    except OSError:
        namespace = ''
    return f'{socket.gethostname()}/{namespace}'


class LeaseIdentity:
    """``(node, pid, process start time)`` of this process, as a lease
    records its owner.

    Computed on first use (psutil reads ``/proc``) and again whenever
    ``os.getpid()`` changes: a forked child never leases rows under its
    parent's identity. One is held by each transport; the cached pair is
    rebound whole, so threads that race here compute the same value.
    """

    def __init__(self):
        self._cached = (None, None)  # (pid, identity)

    def __call__(self):
        pid = os.getpid()
        cached_pid, value = self._cached
        if cached_pid != pid:
            import psutil
            started = round(psutil.Process(pid).create_time(), 3)
            value = (current_node(), pid, started)
            self._cached = (pid, value)
        return value


# What a lease sets: the owner's token, node, pid and start time, the time.
LEASE_COLUMNS = ('lease_token = ?, lease_node = ?, lease_pid = ?, '
                 'lease_started = ?, leased_at = ?, '
                 'deliveries = deliveries + 1')


def has_ready(db, queue):
    """True if ``queue`` has a visible row: a read, no write lock."""
    return bool(db.run(
        f'SELECT 1 FROM {MESSAGE_TABLE} WHERE queue = ? AND '
        'lease_token IS NULL LIMIT 1', (queue,)))


def lease_batch(db, queue, limit, values):
    """Lease up to ``limit`` oldest visible rows of ``queue`` in one
    statement (SQLite 3.35 and later: RETURNING).

    ``values()`` gives the :data:`LEASE_COLUMNS` values. Returns
    ``[(id, payload, deliveries)]`` in FIFO order; rows another consumer
    took meanwhile are skipped.
    """
    got = db.run(
        f'UPDATE {MESSAGE_TABLE} SET {LEASE_COLUMNS} '
        f'WHERE id IN (SELECT id FROM {MESSAGE_TABLE} '
        'WHERE queue = ? AND lease_token IS NULL '
        'ORDER BY id LIMIT ?) '
        'RETURNING id, payload, deliveries',
        (*values(), queue, limit))
    got.sort()  # RETURNING has no ORDER BY
    return got


def lease_one_without_returning(db, queue, values):
    """SQLite < 3.35: read a candidate, lease it unless taken, read it."""
    for _ in range(10):
        candidate = db.run(
            f'SELECT id FROM {MESSAGE_TABLE} WHERE queue = ? AND '
            'lease_token IS NULL ORDER BY id LIMIT 1', (queue,))
        if not candidate:
            return []
        row_id = candidate[0][0]
        if db.change(f'UPDATE {MESSAGE_TABLE} SET {LEASE_COLUMNS} '
                     'WHERE id = ? AND lease_token IS NULL',
                     (*values(), row_id)):
            return [(row_id, *db.run(
                f'SELECT payload, deliveries FROM {MESSAGE_TABLE} '
                'WHERE id = ?', (row_id,))[0])]
        # Another consumer leased it between our two statements.
    return []


def owner_alive(node, pid, started, here=None):
    """True, False, or None when this process cannot tell (other node).

    ``here``: this process' node (:func:`current_node`), if known already.
    """
    if node != (current_node() if here is None else here):
        return None
    import psutil
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - started) > 0.01:
            return False  # the pid was reused
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def reclaim(db, visibility_timeout=VISIBILITY_TIMEOUT, exclude_token=None):
    """Make visible again the rows leased by dead or expired owners.

    Returns ``{queue: count}`` of the rows made visible. ``db`` is an
    autocommit connection; the read is one indexed query over leased rows
    only (a handful), so this is cheap to call every few seconds.
    """
    owners = db.run(
        f'SELECT lease_node, lease_pid, lease_started, MIN(leased_at) '
        f'FROM {MESSAGE_TABLE} WHERE lease_token IS NOT NULL '
        f'GROUP BY lease_node, lease_pid, lease_started')
    reclaimed = {}
    if not owners:
        return reclaimed
    now = time.time()
    here = current_node()
    for node, pid, started, oldest in owners:
        alive = owner_alive(node, pid, started, here)
        expired = (visibility_timeout and oldest is not None
                   and now - oldest > visibility_timeout)
        if alive is not False and not expired:
            continue
        # Of a live owner, only the expired rows.
        queues = unlease_owner(
            db, (node, pid, started),
            None if alive is False else now - visibility_timeout,
            exclude_token)
        for queue in queues:
            reclaimed[queue] = reclaimed.get(queue, 0) + 1
        if queues:
            why = ('its lease is older than the visibility timeout '
                   f'({visibility_timeout:g}s)' if alive is not False
                   else 'the process that received it is gone')
            log.warning('made %d unacknowledged message(s) of pid %s on %s '
                        'visible again: %s', len(queues), pid, node, why)
    return reclaimed


def unlease_owner(db, owner, leased_before=None, exclude_token=None):
    """Make visible again the rows leased by ``owner`` (node, pid, start
    time): all of them, or those leased before ``leased_before``, never
    those leased under ``exclude_token``.

    Returns the queue of each row made visible (one entry per row).
    """
    where = ('lease_node IS ? AND lease_pid IS ? AND lease_started IS ? '
             'AND lease_token IS NOT NULL')
    params = list(owner)
    if leased_before is not None:
        where += ' AND leased_at < ?'
        params.append(leased_before)
    if exclude_token is not None:
        where += ' AND lease_token != ?'
        params.append(exclude_token)
    rows = db.run(f'UPDATE {MESSAGE_TABLE} SET {UNLEASE} '
                  f'WHERE {where} RETURNING queue'
                  if HAS_RETURNING else
                  f'SELECT queue FROM {MESSAGE_TABLE} WHERE {where}',
                  params)
    if not HAS_RETURNING and rows:
        db.run(f'UPDATE {MESSAGE_TABLE} SET {UNLEASE} '
               f'WHERE {where}', params)
    return [queue for (queue,) in rows]


def housekeeping(path, visibility_timeout=VISIBILITY_TIMEOUT,
                 stale_queue_age=STALE_QUEUE_AGE,
                 busy_timeout=BUSY_TIMEOUT):
    """Reclaim abandoned leases and drop stale reply queues.

    Acknowledged messages are deleted at once, so there is nothing consumed
    to clean. What can pile up: leases of consumers that died while nobody
    consumed their queue since, and auto-delete queues (command replies)
    whose sender gave up before the reply came. Returns the number of
    message rows deleted.
    """
    ensure_database(path, busy_timeout)
    db = Database(path, busy_timeout)
    try:
        reclaimed = reclaim(db, visibility_timeout)
        cutoff = time.time() - stale_queue_age
        stale = [name for (name,) in db.run(
            f'SELECT name FROM {QUEUE_TABLE} '
            f'WHERE auto_delete AND created < ?', (cutoff,))]
        deleted = 0
        for name in stale:
            deleted += db.change(
                f'DELETE FROM {MESSAGE_TABLE} WHERE queue = ?', (name,))
            db.run(f'DELETE FROM {QUEUE_TABLE} WHERE name = ?', (name,))
        remove_stale_sockets(wake_directory(path))
        if reclaimed or stale:
            log.info('embedded broker housekeeping: %d message(s) made '
                     'visible again, %d stale reply queue(s) dropped with '
                     '%d message(s)', sum(reclaimed.values()), len(stale),
                     deleted)
        return deleted
    finally:
        db.close()
