"""How the status records of a batch are written: one upsert per batch
(statusdb.StatusTable.upsert), made for each database.

A later note of a job fills only the columns it has a value for
(KEPT_COLUMNS keep what the record had), and a canceled record stays
canceled: a late ``queued`` from a runtime must not bring it back.
"""
import sqlite3

import sqlalchemy as sa

from . import status as st

# Columns a later write fills only where it has a value.
KEPT_COLUMNS = ('queue', 'func', 'kind', 'created', 'started', 'finished',
                'result', 'result_type', 'error', 'traceback', 'spec',
                'spec_type', 'attempts', 'token')
UPSERT_COLUMNS = ('job_id', 'state', 'updated') + KEPT_COLUMNS


def postgresql_upsert(table):
    """The upsert of :meth:`StatusTable.upsert`, as SQLAlchemy makes it."""
    from sqlalchemy.dialects.postgresql import insert
    statement = insert(table)
    excluded, current = statement.excluded, table.c
    changes = {name: sa.func.coalesce(excluded[name], current[name])
               for name in KEPT_COLUMNS}
    changes['state'] = excluded.state
    changes['updated'] = excluded.updated
    return statement.on_conflict_do_update(
        index_elements=['job_id'], set_=changes,
        where=current.state != st.CANCELED)


def write_sqlite_rows(connection, table, rows):
    """The upsert on SQLite: SQL of its own, many rows per statement.

    SQLAlchemy's handling of each row's 17 values held the GIL the jobs
    need (the upsert took 18% of a child's GIL time running 20,000 no-op
    jobs on Redis; 6% without it, and without the spec of the jobs that
    succeeded: py-spy --gil). One statement per row (executemany) lets go
    of the GIL and takes it back for each row: beside a busy thread, 166
    µs a row, and that thread slowed; one statement for 300 rows, 63 µs.
    """
    largest = max(_variable_limit(connection) // len(UPSERT_COLUMNS), 1)
    start = 0
    for size in statement_sizes(len(rows), largest):
        chunk = rows[start:start + size]
        start += size
        connection.exec_driver_sql(
            sqlite_upsert(table, connection, size),
            tuple(row[name] for row in chunk for name in UPSERT_COLUMNS))


# How many rows one statement writes. A batch of any length is written as
# statements of these sizes only: sqlite3 compiles and keeps each distinct
# statement text (128 per connection, for each pooled connection), and one
# text per batch length (1 to 1,927 rows, up to 32,766 parameters each)
# grew a child's memory by about 0.85 KB a job, to 919 MB after a million
# jobs (python -m bench --cases soak), before it levelled off.
STATEMENT_ROWS = (256, 64, 16, 4, 1)


def statement_sizes(total, largest):
    """The sizes (from STATEMENT_ROWS, none over ``largest``) of the
    statements that write ``total`` rows, the largest first."""
    for size in STATEMENT_ROWS:
        if size <= largest:
            count, total = divmod(total, size)
            yield from [size] * count


def sqlite_upsert(table, connection, count=1):
    """The upsert in SQLite's SQL, for ``count`` rows of UPSERT_COLUMNS."""
    name = connection.dialect.identifier_preparer.quote(table.name)
    changes = ', '.join(
        f'{column} = excluded.{column}' if column not in KEPT_COLUMNS else
        f'{column} = coalesce(excluded.{column}, {name}.{column})'
        for column in UPSERT_COLUMNS[1:])
    row = f'({", ".join("?" for _ in UPSERT_COLUMNS)})'
    return (f'INSERT INTO {name} ({", ".join(UPSERT_COLUMNS)}) VALUES '
            f'{", ".join([row] * count)} ON CONFLICT (job_id) DO UPDATE '
            f"SET {changes} WHERE {name}.state != '{st.CANCELED}'")


def _variable_limit(connection):
    """How many ``?`` one statement may have (999 before SQLite 3.32)."""
    dbapi = connection.connection.dbapi_connection
    try:
        return dbapi.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    except AttributeError:   # Python before 3.11
        return 999

