"""Finding a queue's deferred jobs by a piece of their id or name.

What the admin ``jobs`` command's ``search`` argument reads (and, through
it, the dashboard's search box). The search is a case-sensitive substring
of the job's id or its name (the function's dotted name unless the job was
given one).

In a SQLAlchemy job store the database does the narrowing, so that a search
among 100,000 stored jobs reads only the rows that may match: a row is a
candidate when its id contains the text, or when its pickled state does (a
name is stored in the pickle as UTF-8). Only candidates are unpickled and
checked exactly. The count of matches stops at ``COUNT_LIMIT``: past it,
the answer says "more than".
"""
import logging

from sqlalchemy import func, or_, select

log = logging.getLogger(__name__)

# Matches counted at most (the dashboard says "1000+").
COUNT_LIMIT = 1000
# Candidate rows fetched from the database at a time.
BATCH = 500


def matches(job, text):
    return text in job.id or text in (job.name or '')


def search_memory_store(store, text, offset, limit):
    """``(page, total, capped)`` of a store that is not SQLAlchemy's: its
    jobs are in memory (or behind its own API) already."""
    found = [job for job in store.get_all_jobs() if matches(job, text)]
    capped = len(found) > COUNT_LIMIT
    return (found[offset:offset + limit], min(len(found), COUNT_LIMIT),
            capped)


def search_sql_store(store, text, offset, limit):
    """``(page, total, capped)``: the page of matches from ``offset``, how
    many match (at most COUNT_LIMIT), and whether there are more."""
    table = store.jobs_t
    query = (select(table.c.id, table.c.job_state)
             .where(_candidates(store, text))
             .order_by(table.c.next_run_time.asc().nulls_last(), table.c.id))
    page, total = [], 0
    wanted = max(offset + limit, COUNT_LIMIT + 1)
    with store.engine.connect() as conn:
        result = conn.execution_options(stream_results=True,
                                        yield_per=BATCH).execute(query)
        for row in result:
            job = _match(store, row, text, need_job=offset <= total <
                         offset + limit)
            if job is None:
                continue
            if offset <= total < offset + limit:
                page.append(job)
            total += 1
            if total >= wanted:
                break
        result.close()
    return page, min(total, COUNT_LIMIT), total > COUNT_LIMIT


def _candidates(store, text):
    """A WHERE clause true for every row that may match (and few more)."""
    table = store.jobs_t
    in_state = text.encode('utf-8')
    if store.engine.dialect.name == 'sqlite':
        # instr() compares a BLOB byte by byte; LIKE would read it as text
        # (and stop at its first NUL byte).
        return or_(func.instr(table.c.id, text) > 0,
                   func.instr(table.c.job_state, in_state) > 0)
    # PostgreSQL's LIKE works on bytea, MySQL's on BLOB. A "%" or "_" in
    # the text is a wildcard here: it only widens the candidates, which
    # are checked exactly afterwards.
    return or_(table.c.id.contains(text),
               table.c.job_state.like(b'%' + in_state + b'%'))


def _match(store, row, text, need_job):
    """The row's job if it matches (None otherwise); unpickled only when
    the id alone does not decide, or the job is shown."""
    if text in row.id and not need_job:
        return True
    try:
        job = store._reconstitute_job(row.job_state)
    except Exception:
        log.exception('job %s does not load', row.id)
        return None
    return job if matches(job, text) else None
