"""The two units of work (db/session.py), on both backends: a read-only session refuses
writes and, on SQLite, takes no write lock; write sessions still serialize. And the rule
for which database errors mean "unavailable, retry later"."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from db import queue
from db.errors import database_unavailable
from db.models import Sweep
from db.session import masked_url, read_scope, session_scope


def test_a_read_session_refuses_writes_and_writes_nothing(migrated_url):
    with session_scope(migrated_url) as s:
        queue.enqueue_sweep(session=s, name="kept", owner="me", spec={}, runs=[])
    with pytest.raises(DBAPIError), read_scope(migrated_url) as s:
        assert s.scalar(select(func.count()).select_from(Sweep)) == 1
        queue.enqueue_sweep(session=s, name="refused", owner="me", spec={}, runs=[])
        s.flush()
    with read_scope(migrated_url) as s:
        assert s.scalars(select(Sweep.name)).all() == ["kept"]
    # The connection went back to the pool writable again.
    with session_scope(migrated_url) as s:
        queue.enqueue_sweep(session=s, name="after", owner="me", spec={}, runs=[])
    with read_scope(migrated_url) as s:
        assert s.scalar(select(func.count()).select_from(Sweep)) == 2


def test_sqlite_reads_do_not_wait_for_a_writer_but_writers_serialize(sqlite_url, tmp_path):
    """Another process holds SQLite's write lock (an open BEGIN IMMEDIATE with a write in
    it): a read session answers at once with the last committed state; a write session
    waits until the lock is released, then commits."""
    from db.migrate import upgrade

    upgrade(sqlite_url)
    with session_scope(sqlite_url) as s:
        queue.enqueue_sweep(session=s, name="committed", owner="me", spec={}, runs=[])
    writer = sqlite3.connect(tmp_path / "plateau.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute(
        "INSERT INTO sweep (name, owner_id, source, spec, n_runs, software, created_at) "
        "SELECT 'uncommitted', id, 'api', '{}', 0, '{}', '2026-12-01 00:00:00' "
        "FROM app_user WHERE name = 'me'"
    )
    started = time.monotonic()
    with read_scope(sqlite_url) as s:
        names = s.scalars(select(Sweep.name)).all()
    assert names == ["committed"] and time.monotonic() - started < 1.0

    waited: list[float] = []

    def write() -> None:
        t0 = time.monotonic()
        with session_scope(sqlite_url) as s:
            queue.enqueue_sweep(session=s, name="second writer", owner="me", spec={}, runs=[])
        waited.append(time.monotonic() - t0)

    thread = threading.Thread(target=write)
    thread.start()
    time.sleep(1.0)
    assert not waited, "a second writer got in while the write lock was held"
    writer.execute("COMMIT")
    thread.join(10)
    assert waited and waited[0] >= 0.9
    with read_scope(sqlite_url) as s:
        assert set(s.scalars(select(Sweep.name)).all()) == {
            "committed",
            "uncommitted",
            "second writer",
        }


def test_database_unavailable_names_the_errors_worth_retrying(migrated_url):
    import psycopg

    refused = OperationalError("SELECT 1", {}, psycopg.OperationalError("connection refused"))
    assert database_unavailable(refused)
    assert database_unavailable(PoolTimeout("QueuePool limit reached"))
    locked = OperationalError("x", {}, sqlite3.OperationalError("database is locked"))
    assert database_unavailable(locked)
    # wrapped, as Optuna wraps SQLAlchemy's errors
    try:
        try:
            raise refused
        except OperationalError as e:
            raise RuntimeError("storage failed") from e
    except RuntimeError as wrapped:
        assert database_unavailable(wrapped)
    # programming errors and refusals are not
    assert not database_unavailable(
        OperationalError("x", {}, sqlite3.OperationalError("no such table: run"))
    )
    assert not database_unavailable(IntegrityError("x", {}, Exception("duplicate key")))
    assert not database_unavailable(ValueError("bad"))
    with pytest.raises(DBAPIError) as info, session_scope(migrated_url) as s:
        s.execute(text("SELECT * FROM no_such_table"))
    assert not database_unavailable(info.value)


@pytest.mark.parametrize(
    "url,shown",
    [
        (
            "postgresql://plateau:s3cret-pw@db:5432/plateau",
            "postgresql+psycopg://plateau:***@db:5432/plateau",
        ),
        (
            "postgres://u@db/p?password=s3cret-pw&sslmode=require",
            "postgresql+psycopg://u@db/p?password=***&sslmode=require",
        ),
        ("sqlite:////var/lib/plateau.db", "sqlite:////var/lib/plateau.db"),
        ("not a url s3cret-pw", "<unparseable database URL>"),
    ],
)
def test_masked_url_hides_the_password(url, shown):
    assert masked_url(url) == shown
    assert "s3cret-pw" not in masked_url(url)
