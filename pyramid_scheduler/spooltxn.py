"""The data manager that makes a transaction's messages part of its commit.

It joins the ``transaction`` package's transaction (pyramid_tm's, or an
explicit-mode one) on the first message added inside it, and follows the
two-phase commit (zope's ``IDataManager``): the vote writes the messages
durably to the spool (spool.py), so a transaction that commits has them on
disk; the finish publishes and removes them. If the broker is down then,
they stay in the spool, and the drainer thread of this process (or the
daemon) sends them once it is back. An abort sends nothing and leaves
nothing; a vote followed by an abort (another data manager refused to
commit) removes what the vote wrote.

Its sort key puts it after every usual data manager (zope.sqlalchemy's
starts with ``~sqlalchemy``): it votes last, so a database that refuses its
vote leaves nothing in the spool, and it publishes only after the database
has committed, so a consumer reading that database finds the rows.
"""
import logging

from .spool import SpoolEntry, publish_entries

log = logging.getLogger(__name__)


class SpoolDataManager:
    """One per transaction that adds messages; see the module docstring."""

    def __init__(self, settings, drainer, producer, transaction_manager=None):
        self.settings = settings
        self.drainer = drainer
        self.spool = drainer.spool
        self.producer = producer
        self.transaction_manager = transaction_manager
        self.entries = []
        self._written = False

    def add(self, body, routing_key):
        self.entries.append(SpoolEntry.of(self.settings, body, routing_key))

    # --- IDataManager --------------------------------------------------------

    def sortKey(self):
        return '~~pyramid_scheduler.spool'

    def abort(self, transaction):
        self.entries = []

    def tpc_begin(self, transaction):
        pass

    def commit(self, transaction):
        pass

    def tpc_vote(self, transaction):
        # Raising here aborts the transaction: better no commit than a
        # commit whose jobs could be lost.
        if self.entries:
            self.spool.write(self.entries)
            self._written = True

    def tpc_finish(self, transaction):
        """The transaction has committed: publish, or leave it to the
        drainer. Never raises: nothing can undo the commit now."""
        entries, self.entries = self.entries, []
        if not entries:
            return
        try:
            sent = publish_entries(self.settings, self.spool, self.producer,
                                   entries)
        except Exception:
            log.exception('could not send %d message(s) after their '
                          'transaction committed; they are kept in the '
                          'outbox %s', len(entries), self.spool.path)
            sent = False
        if not sent:
            self.drainer.ensure_running()

    def tpc_abort(self, transaction):
        entries, self.entries = self.entries, []
        if self._written and entries:
            self._written = False
            self.spool.remove(entries)

    def savepoint(self):
        return _Savepoint(self, len(self.entries))


class _Savepoint:
    """Rolling back to a savepoint forgets the messages added since."""

    def __init__(self, manager, size):
        self.manager = manager
        self.size = size

    def rollback(self):
        del self.manager.entries[self.size:]


def data_manager_of(transaction, owner, make):
    """The data manager ``owner`` joined to ``transaction``, joining one
    made by ``make()`` first if there is none."""
    try:
        return transaction.data(owner)
    except KeyError:
        manager = make()
        transaction.join(manager)
        transaction.set_data(owner, manager)
        return manager
