"""Ownership of a queue's job store on another SQLAlchemy database (MySQL,
MariaDB, ...): a lease row with an expiry and a fencing token.

One row per queue in ``<scheduler.id>_owners``, beside the job stores: who
owns the store, until when (``expires``, seconds since the epoch) and a
token that grows at each change of owner. The owner renews the row every
``beat`` (storelock.Timing), by its token: a renewal that changes no row
means another took the store over, and the lock is lost for good. A standby
takes the row once it has expired, raising the token. The owner fires only
within ``fence`` of *sending* its last successful renewal, which set
``expires`` ``lease`` later; so it stops ``lease - fence`` (0.2 F) before
anyone can take over, provided the hosts' clocks agree to better than that
(they compare ``expires`` with their own clock: run NTP). PostgreSQL does
without (advisorylock); SQLite needs none (one host).
"""
import logging
import threading
import time

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from .. import refusals
from .storelock import Timing, identity, parse_identity

log = logging.getLogger(__name__)


def owners_table(settings):
    return sa.Table(
        f'{settings.scheduler_id}_owners'.replace('.', '_'), sa.MetaData(),
        sa.Column('queue', sa.Unicode(191), primary_key=True),
        sa.Column('owner', sa.Unicode(191), nullable=False),
        sa.Column('token', sa.BigInteger, nullable=False),
        sa.Column('expires', sa.Float, nullable=False))


def read_owner(settings, queue):
    """``{'host', 'pid'}`` of the lease holder of ``queue``, or None."""
    table = owners_table(settings)
    engine = sa.create_engine(settings.jobstore_url,
                              poolclass=sa.pool.NullPool)
    try:
        table.create(engine, checkfirst=True)
        with engine.connect() as connection:
            row = connection.execute(sa.select(table.c.owner).where(
                table.c.queue == queue,
                table.c.expires > time.time())).first()
    finally:
        engine.dispose()
    return None if row is None else parse_identity(row.owner)


class LeaseLock:
    """``queue``'s lease; see the module docstring."""

    def __init__(self, settings, queue, engine=None):
        self.settings = settings
        self.queue = queue
        self.timing = Timing.of(settings.failover)
        self.table = owners_table(settings)
        self.me = identity()
        self.token = None         # ours, while we hold the lease
        self.lost = None          # why, once the lease is lost for good
        self._engine = engine
        self._confirmed = None    # monotonic time of the last good send
        self._stop = threading.Event()
        self._thread = None

    @property
    def engine(self):
        if self._engine is None:   # after the fork: in the process using it
            self._engine = sa.create_engine(self.settings.jobstore_url,
                                            pool_pre_ping=True)
            self.table.create(self._engine, checkfirst=True)
        return self._engine

    def try_acquire(self):
        if self.token is not None:
            return True
        sent = time.monotonic()
        try:
            token = self._take()
        except Exception as exc:
            refused = refusals.store_configuration_error(exc, self.settings)
            if refused is not None:   # retrying cannot help: say so
                raise refused from exc
            log.warning('queue %s: cannot reach the job store to take its '
                        'ownership: %s', self.queue, str(exc).strip())
            return False
        if token is None:
            return False
        self.token, self._confirmed = token, sent
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._keep_alive, daemon=True,
            name=f'pscheduler-ownership-{self.queue}')
        self._thread.start()
        return True

    def _take(self):
        """Our new token if the row was free (or expired), else None."""
        table, now = self.table, time.time()
        with self.engine.begin() as connection:
            row = connection.execute(sa.select(table.c.token).where(
                table.c.queue == self.queue)).first()
            if row is None:
                try:
                    connection.execute(table.insert().values(
                        queue=self.queue, owner=self.me, token=1,
                        expires=now + self.timing.lease))
                except IntegrityError:
                    return None    # another standby inserted it first
                return 1
            token = row.token + 1
            taken = connection.execute(table.update().where(
                table.c.queue == self.queue, table.c.token == row.token,
                table.c.expires < now).values(
                    owner=self.me, token=token,
                    expires=now + self.timing.lease)).rowcount
            return token if taken == 1 else None

    def acquire(self, timeout, should_stop=lambda: False):
        deadline = time.monotonic() + timeout
        while not self.try_acquire():
            if should_stop() or time.monotonic() >= deadline:
                return False
            time.sleep(min(self.timing.beat,
                           max(deadline - time.monotonic(), 0)))
        return True

    def _renew(self, expires):
        table = self.table
        with self.engine.begin() as connection:
            return connection.execute(table.update().where(
                table.c.queue == self.queue, table.c.owner == self.me,
                table.c.token == self.token).values(
                    expires=expires)).rowcount == 1

    def _keep_alive(self):
        while not self._stop.wait(self.timing.beat):
            sent = time.monotonic()
            try:
                renewed = self._renew(time.time() + self.timing.lease)
            except Exception as exc:
                log.warning('queue %s: could not renew the ownership of its '
                            'job store: %s', self.queue, str(exc).strip())
                continue   # fenced meanwhile; the next renewal may succeed
            if not renewed:
                self.lost = (f'lost the ownership of queue {self.queue}\'s '
                             f'job store (another process took its lease)')
                log.error('queue %s: %s', self.queue, self.lost)
                return
            self._confirmed = sent

    @property
    def held(self):
        return self.token is not None

    def may_fire(self):
        confirmed = self._confirmed
        return (self.token is not None and self.lost is None
                and confirmed is not None
                and time.monotonic() - confirmed < self.timing.fence)

    def owner(self):
        return read_owner(self.settings, self.queue)

    def release(self):
        """Give the lease up at once (expired), for a standby to take."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timing.lease + 1)
            self._thread = None
        if self.token is not None and self.lost is None:
            try:
                self._renew(0.0)
            except Exception:
                log.exception('queue %s: could not give up the ownership of '
                              'its job store; it expires by itself',
                              self.queue)
        self.token = None
