"""Tables of our own in the job store database (``scheduler.jobstore.url``):
the outbox copies received (runtime.received) and the job status records
(statusdb). What both need of the database: made once by whichever process
comes first, and written without waiting for the disk.

A row lost in a power cut (not a process crash: SQLite's WAL with
synchronous=NORMAL keeps it; PostgreSQL's commit without a flush likewise)
costs at worst a second run of a job sent twice, or a status record that
lags; a flush per write would cost every one of them (24 ms here).
"""
import sqlalchemy as sa


def relax_sqlite(engine):
    """WAL and synchronous=NORMAL on each SQLite connection of ``engine``."""
    if engine.dialect.name == 'sqlite':
        sa.event.listen(engine, 'connect', _sqlite_pragmas)


def relax_commit(connection):
    """The same for PostgreSQL, for this transaction."""
    if connection.dialect.name == 'postgresql':
        connection.exec_driver_sql('SET LOCAL synchronous_commit TO OFF')


def create_table(engine, table):
    """Create ``table`` if it does not exist, whoever else is doing so."""
    try:
        table.create(engine, checkfirst=True)
    except sa.exc.DBAPIError:
        # Another process made it between the check and the create.
        if not sa.inspect(engine).has_table(table.name):
            raise


def _sqlite_pragmas(dbapi_connection, connection_record):
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute('PRAGMA journal_mode=WAL')
        cursor.execute('PRAGMA synchronous=NORMAL')
    finally:
        cursor.close()
