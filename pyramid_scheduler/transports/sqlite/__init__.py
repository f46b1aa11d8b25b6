"""A kombu transport on one SQLite file, for the embedded default.

Messages live in the table ``pscheduler_message`` of the same SQLite file as
the APScheduler job stores; any number of processes on one machine publish
and consume through it. What it guarantees:

At-least-once delivery
    Receiving a message *leases* its row (``lease_token`` and the owner's
    node, pid and process start time); ``ack`` deletes the row (if the lease
    is still ours); ``reject(requeue=True)``, closing the channel and a
    consumer that stops make the row visible again in place (same id, so it
    stays first in line and is never duplicated). A consumer leases as many
    rows as its prefetch window allows (up to ``LEASE_BATCH``) in one
    statement and delivers them all in one ``drain_events``;
    ``Channel.basic_ack_many`` deletes a consumer turn's acknowledged rows
    in one statement too. A consumer that dies without a word (SIGKILL, OOM,
    power cut of a container) leaves leased rows behind: every consumer
    reclaims, when it starts and every few seconds, the rows whose owner
    process is gone (pid not alive, or alive with another start time), and
    rows leased longer ago than the visibility timeout (a hung owner, or one
    in another pid namespace whose liveness cannot be checked).

Low latency without polling
    Each consumed queue binds a unix datagram socket in a directory beside
    the database (``<db>.wake/<queue hash>.<pid>.<random>.sock``). A producer,
    once its insert is committed, sends one byte to every socket of that
    queue; a waiting consumer sleeps in ``poll()`` on its sockets and queries
    the database only when woken, after a delivery (there may be more), when
    an ack frees prefetch room, and every ``polling_interval`` seconds as a
    fallback against a lost wake-up. An idle consumer costs one indexed
    ``SELECT`` per queue per fallback interval.

Multi-process safety
    WAL journal (readers never block the writer), a 30 s busy timeout, every
    statement its own short transaction (no read transaction is ever upgraded
    to a write, the classic cause of an immediate "database is locked"),
    tables created once under an ``flock``, and nothing crosses a fork: the
    SQLite connection, the wake-up sockets and the lease identity are made
    lazily and re-made when ``os.getpid()`` changes.

Use::

    kombu.Connection('sqlite:///' + path, transport=SQLiteTransport)

(``pyramid_scheduler.sqlite_transport:SQLiteTransport`` names the same
class, for code written before this package existed.)

(the SQLAlchemy convention: ``sqlite:////abs/path`` for an absolute path).
Transport options: ``polling_interval`` (fallback poll, default 2 s),
``busy_timeout`` (30 s), ``visibility_timeout`` (1 h), ``reclaim_interval``
(5 s), ``synchronous`` (``NORMAL``: durable across process crashes; use
``FULL`` to survive power loss too, at a few milliseconds per message).
``interrupt()`` makes a ``drain_events`` waiting in another thread return
(``socket.timeout``) at once. Fanout exchanges and priorities are not
supported. Same machine only: wake-ups and liveness checks are local (other
hosts on a shared file would get the fallback poll and the visibility
timeout), and SQLite on a network file system is unsafe anyway.

The modules, each with one concern:

- ``database.py``: the file's path, schema and one-time setup, and the
  autocommit connection wrapper;
- ``leases.py``: taking leases, who holds one, owner liveness, reclaim,
  housekeeping;
- ``wakeups.py``: the wake-up sockets (WakeBox) and the in-process
  handshake with a sleeping consumer (WakeFlags);
- ``queues.py``: one process' SQL on the tables and the leases it holds
  (Queues);
- ``waiting.py``: one process' wake-ups, who listens, and the drain loop
  (Waiter);
- ``channel.py``: the kombu Channel;
- ``transport.py``: the kombu Transport: options, fork safety, and kombu's
  hooks handed to the Queues and the Waiter.
"""
from .database import (
    BUSY_TIMEOUT, MESSAGE_TABLE, QUEUE_TABLE, Database, ensure_database,
    path_from_url)
from .leases import housekeeping, reclaim
from .transport import SQLiteTransport, Transport
from .wakeups import WakeBox, wake_directory

__all__ = [
    'BUSY_TIMEOUT', 'MESSAGE_TABLE', 'QUEUE_TABLE', 'Database',
    'SQLiteTransport',
    'Transport', 'WakeBox', 'ensure_database', 'housekeeping',
    'path_from_url', 'reclaim', 'wake_directory',
]
