"""The queues of one process' transport: SQL on the tables, leases held.

A :class:`Queues` is what a process owns of the database side of a
transport: its one SQLite connection (``check_same_thread=False``, guarded
by an RLock: every channel and thread of a kombu Connection shares it), its
lease token and the delivery tags of the rows it has leased. It runs
statements and returns what happened; waking consumers is the transport's
business. The transport makes one per process and never uses its parent's
after a fork (transport.py).
"""
import json
import logging
import sqlite3
import threading
import time
import uuid
from queue import Empty

from . import leases
from ..envelopes import (
    dead_letter_queue_for, envelope_problem, is_dead_letter_queue)
from .database import (
    HAS_RETURNING, MESSAGE_TABLE, QUEUE_TABLE, UNLEASE, Database,
    ensure_database)
from .leases import has_ready, lease_batch, lease_one_without_returning

log = logging.getLogger(__name__)

# Row ids per acknowledging statement (SQLite before 3.32 allows 999
# parameters).
MAX_SETTLED = 500


class Queues:
    """The queue and message tables, as one process' transport uses them.

    ``identity()`` gives ``(node, pid, process start time)``, what a lease
    records of its owner (a :class:`~.leases.LeaseIdentity`).
    """

    def __init__(self, path, busy_timeout, synchronous, identity):
        self.path = path
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous
        self._identity = identity
        self._lock = threading.RLock()
        self._db = None
        self.token = uuid.uuid4().hex
        self._closed_statements = 0  # run by connections closed since
        self._leased = {}  # delivery tag -> (row id, queue)
        self._known = set()  # declared by this process already
        self._streak = set()  # queues whose last lease found a message

    @property
    def db(self):
        """The :class:`Database`, made on first use (hold the lock)."""
        if self._db is None:
            ensure_database(self.path, self.busy_timeout)
            self._db = Database(self.path, self.busy_timeout,
                                self.synchronous)
        return self._db

    @property
    def statements(self):
        """SQL statements run so far (tests, benchmarks)."""
        return self._closed_statements + (
            self._db.statements if self._db else 0)

    def _run(self, sql, params=()):
        with self._lock:
            return self.db.run(sql, params)

    # --- queues ---
    def declare(self, queue, auto_delete=False):
        if queue in self._known:
            return
        rows = self._run(
            f'SELECT 1 FROM {QUEUE_TABLE} WHERE name = ?', (queue,))
        if not rows:
            self._run(
                f'INSERT OR IGNORE INTO {QUEUE_TABLE} '
                '(name, auto_delete, created) VALUES (?, ?, ?)',
                (queue, int(auto_delete), time.time()))
        self._known.add(queue)

    def has(self, queue):
        return bool(self._run(
            f'SELECT 1 FROM {QUEUE_TABLE} WHERE name = ? UNION ALL '
            f'SELECT 1 FROM {MESSAGE_TABLE} WHERE queue = ? LIMIT 1',
            (queue, queue)))

    def size(self, queue):
        return self._run(
            f'SELECT COUNT(*) FROM {MESSAGE_TABLE} '
            'WHERE queue = ? AND lease_token IS NULL', (queue,))[0][0]

    def purge(self, queue):
        with self._lock:
            return self.db.change(
                f'DELETE FROM {MESSAGE_TABLE} '
                'WHERE queue = ? AND lease_token IS NULL', (queue,))

    def delete(self, queue):
        with self._lock:
            self.db.run(f'DELETE FROM {MESSAGE_TABLE} WHERE queue = ?',
                        (queue,))
            self.db.run(f'DELETE FROM {QUEUE_TABLE} WHERE name = ?',
                        (queue,))
        self._known.discard(queue)

    # --- messages ---
    def put(self, queue, message):
        self._run(
            f'INSERT INTO {MESSAGE_TABLE} (queue, payload, created) '
            'VALUES (?, ?, ?)', (queue, json.dumps(message), time.time()))

    def lease_rows(self, queue, limit):
        """Lease up to ``limit`` oldest visible rows of ``queue``.

        Returns ``[(id, payload text, deliveries)]`` in FIFO order; raises
        Empty. Usually a read (is there one?) then one conditional write
        leasing up to ``limit`` rows (those another consumer took meanwhile
        are skipped), so an empty queue costs no write lock. In a burst (the
        last lease of this queue got all it asked for) the write alone.
        :meth:`received` turns the rows into payloads.
        """
        with self._lock:
            db = self.db
            if not HAS_RETURNING:
                got = lease_one_without_returning(db, queue,
                                                  self._lease_values)
            elif queue in self._streak or has_ready(db, queue):
                got = lease_batch(db, queue, limit, self._lease_values)
            else:
                got = []
        if len(got) < limit:
            self._streak.discard(queue)
        else:
            self._streak.add(queue)
        if not got:
            raise Empty()
        return got

    def _lease_values(self):
        """What a lease records: our token, who we are, when."""
        return (self.token, *self._identity(), time.time())

    def received(self, queue, rows):
        """The payloads of leased ``rows``, each remembered by its
        delivery tag (given one if it has none) for :meth:`settle`.

        A row that is not a kombu envelope is not among them: it goes to
        the dead-letter queue (:meth:`_dead_letter`), and the rows behind it
        are delivered.
        """
        payloads = []
        for row_id, text, deliveries in rows:
            payload, problem = _parse(text)
            if problem is None:
                payloads.append(
                    self._payload(row_id, queue, payload, deliveries))
            else:
                self._dead_letter(row_id, queue, text, problem)
        return payloads

    def _payload(self, row_id, queue, payload, deliveries):
        properties = payload['properties']
        tag = properties.get('delivery_tag')
        if tag is None:
            tag = properties['delivery_tag'] = uuid.uuid4().hex
        if deliveries > 1:
            properties.setdefault('delivery_info', {})['redelivered'] = True
        self._leased[tag] = (row_id, queue)
        return payload

    def _dead_letter(self, row_id, queue, text, problem):
        """Move a leased row that is not a kombu envelope, text unchanged,
        to the queue's dead-letter queue (the runtime, which dead-letters
        what it cannot read, never gets it: kombu fails to make a message
        of it first).

        A row of a dead-letter queue stays where it is, leased until this
        connection closes: whoever reads that queue gets the rows behind it.
        """
        if is_dead_letter_queue(queue):
            log.error('a message of %s is not a kombu message (%s): '
                      'skipped; %.200r', queue, problem, text)
            return
        target = dead_letter_queue_for(queue)
        self.declare(target)
        self._run(f'UPDATE {MESSAGE_TABLE} SET queue = ?, {UNLEASE} '
                  'WHERE id = ? AND lease_token = ?',
                  (target, row_id, self.token))
        log.error('rejected a message from %s: not a kombu message (%s); '
                  'moved to %s as it is: %.200r', queue, problem, target, text)

    def settle(self, delivery_tags, delete):
        """Delete (ack) or make visible again (requeue, restore) our rows.

        One statement for up to ``MAX_SETTLED`` tags: a consumer turn's
        acknowledgements cost one transaction, not one each. Returns the
        set of queues whose rows were settled (empty: none were ours).
        """
        entries = [self._leased.pop(tag, None) for tag in delivery_tags]
        entries = [entry for entry in entries if entry is not None]
        if not entries:
            return set()
        # Only while the lease is ours: one taken back after the visibility
        # timeout belongs to its new holder, and row ids can be reused.
        change = (f'DELETE FROM {MESSAGE_TABLE}' if delete else
                  f'UPDATE {MESSAGE_TABLE} SET {UNLEASE}')
        row_ids = sorted(row_id for row_id, _ in entries)
        for start in range(0, len(row_ids), MAX_SETTLED):
            chunk = row_ids[start:start + MAX_SETTLED]
            self._run(f'{change} WHERE lease_token = ? AND id IN '
                      f'({",".join("?" * len(chunk))})',
                      (self.token, *chunk))
        return {queue for _, queue in entries}

    def reclaim(self, visibility_timeout):
        """Take back the leases of dead or expired owners other than us:
        ``{queue: count}`` (:func:`~.leases.reclaim`)."""
        with self._lock:
            return leases.reclaim(self.db, visibility_timeout,
                                  exclude_token=self.token)

    def close(self):
        """Give back the leases still ours and close the connection; a
        later call makes a new one."""
        if self._db is not None:
            try:
                # Anything our closed channels did not give back.
                with self._lock:
                    self._db.run(
                        f'UPDATE {MESSAGE_TABLE} SET {UNLEASE} '
                        'WHERE lease_token = ?', (self.token,))
            except sqlite3.Error:
                log.warning('could not release the leases of a '
                            'closing connection; they come back '
                            'when this process exits', exc_info=True)
            self._closed_statements += self._db.statements
            self._db.close()
        self._db = None
        self._leased = {}


def _parse(text):
    """``(payload, None)``, or ``(None, why it is not a kombu envelope)``."""
    try:
        payload = json.loads(text)
    except (TypeError, ValueError) as exc:
        return None, f'not JSON: {exc}'
    return payload, envelope_problem(payload, needs_tag=False)
