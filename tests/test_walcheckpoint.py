"""The SQLite job store's log is checkpointed by a thread, not in commits."""
import os
import sqlite3

import pytest

from pyramid_scheduler.runtime import Runtime
from pyramid_scheduler.settings import parse_settings
from pyramid_scheduler.runtime.walcheckpoint import (
    DISABLE_AUTOCHECKPOINT, WalCheckpointer)
from tests.conftest import poll


def wal_database(path):
    """A WAL database whose commits never checkpoint, holding a table."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute('PRAGMA journal_mode=WAL')
    connection.execute(DISABLE_AUTOCHECKPOINT)
    connection.execute('CREATE TABLE t (x BLOB)')
    return connection


def write_rows(connection, count=200):
    for _ in range(count):
        connection.execute('INSERT INTO t VALUES (?)', (os.urandom(2000),))


@pytest.mark.slow
def test_checkpoints_only_a_changed_log(tmp_path):
    path = str(tmp_path / 'db.sqlite')
    connection = wal_database(path)
    checkpointer = WalCheckpointer(path)
    try:
        write_rows(connection)
        busy, frames, done = checkpointer.checkpoint_if_changed()
        assert busy == 0 and frames > 100 and done == frames
        assert checkpointer.checkpoint_if_changed() is None   # unchanged
        write_rows(connection, 10)
        assert checkpointer.checkpoint_if_changed() is not None
    finally:
        connection.close()
        checkpointer.stop()


def test_without_a_log_there_is_nothing_to_do(tmp_path):
    checkpointer = WalCheckpointer(str(tmp_path / 'none.sqlite'))
    assert checkpointer.checkpoint_if_changed() is None
    assert not (tmp_path / 'none.sqlite').exists()


@pytest.mark.slow
def test_the_thread_moves_the_log_into_the_database(tmp_path):
    path = str(tmp_path / 'db.sqlite')
    connection = wal_database(path)
    checkpointer = WalCheckpointer(path, interval=0.05)
    checkpointer.start()
    try:
        size_before = os.path.getsize(path)
        write_rows(connection)
        # Only a checkpoint writes the pages into the database file itself.
        poll(lambda: os.path.getsize(path) > size_before + 200 * 2000,
             message='the checkpoint thread did not write the database')
    finally:
        checkpointer.stop()
        connection.close()
    assert not checkpointer.running


def test_runtime_job_store_checkpoints_in_its_own_thread(tmp_path):
    settings = parse_settings({}, here=str(tmp_path))
    runtime = Runtime(settings)
    assert runtime.acquire_stores()
    runtime.start()
    try:
        store = runtime.jobstore('jobs')
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql(
                'PRAGMA wal_autocheckpoint').scalar() == 0
        checkpointer = runtime.deferred.checkpointer(settings.database_path)
        assert checkpointer.running
    finally:
        runtime.stop(timeout=5)
    assert not checkpointer.running
