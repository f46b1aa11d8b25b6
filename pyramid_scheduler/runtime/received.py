"""Outbox copies already received: a message sent twice runs once.

The outbox (spool.py) may publish an entry twice: a crash between its
publish and its removal leaves the entry, and a drainer sends it again.
Every copy carries the entry's id and a copy token of its own; the first
copy received records both in the job store database (the table below,
shared by every process serving the queue), and a later copy with another
token is a duplicate, dropped with an INFO. The same copy again is a
redelivery (its consumer died before acknowledging it) and is handled as
usual. Messages without the headers (not from the outbox) cost nothing.

Rows are kept twice ``scheduler.outbox.retry_for``: a copy is published
only within that time of its entry's commit. The record is written without
waiting for the disk (see storedb).
"""
import logging
import time

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..spool import COPY_HEADER, ENTRY_HEADER
from ..storedb import create_table, relax_commit, relax_sqlite

log = logging.getLogger(__name__)

# How often old rows are deleted (seconds).
PRUNE_INTERVAL = 60.0


def table_name(settings):
    return f'{settings.scheduler_id}_outbox_received'


class ReceivedCopies:
    """The outbox entries this queue's consumers have received."""

    def __init__(self, settings):
        self.settings = settings
        self._engine = None
        self._table = None
        self._pruned_at = 0.0

    def is_duplicate(self, message):
        """True for a second copy of an outbox entry (to be dropped)."""
        headers = message.headers or {}
        entry, copy = headers.get(ENTRY_HEADER), headers.get(COPY_HEADER)
        if not isinstance(entry, str) or not isinstance(copy, str):
            return False
        table = self._ready()
        now = time.time()
        try:
            with self._engine.begin() as connection:
                relax_commit(connection)   # no flush to wait for (storedb)
                connection.execute(table.insert().values(
                    entry=entry[:64], copy=copy[:64], received=now))
        except IntegrityError:
            with self._engine.connect() as connection:
                first = connection.execute(
                    sa.select(table.c.copy).where(
                        table.c.entry == entry[:64])).scalar()
            if first != copy[:64]:
                log.info('dropped a second copy of outbox entry %s (sent '
                         'again after a crash); its first copy was received',
                         entry)
                return True
        self._prune(now)
        return False

    def _ready(self):
        if self._table is None:
            # No pre-ping (a round trip per message): a dropped connection
            # fails the check, and the dispatcher retries a transient error.
            engine = sa.create_engine(self.settings.jobstore_url)
            relax_sqlite(engine)
            table = sa.Table(
                table_name(self.settings), sa.MetaData(),
                sa.Column('entry', sa.String(64), primary_key=True),
                sa.Column('copy', sa.String(64), nullable=False),
                sa.Column('received', sa.Float, nullable=False, index=True))
            create_table(engine, table)
            self._engine, self._table = engine, table
        return self._table

    def _prune(self, now):
        if now - self._pruned_at < PRUNE_INTERVAL:
            return
        self._pruned_at = now
        horizon = now - 2 * self.settings.outbox_retry_for
        with self._engine.begin() as connection:
            connection.execute(self._table.delete().where(
                self._table.c.received < horizon))

