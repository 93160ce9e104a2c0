"""Engines and units of work.

`session_scope` is the one way code outside db/ gets a session: commit on success,
rollback on error, close always. Engines are cached per URL and per process, and are
never pickled: objects handed to Ray carry the URL, not the engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    import sqlite3

    from sqlalchemy.pool import ConnectionPoolEntry

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str) -> str:
    """Accept the URL forms people paste (postgres://, postgresql://) and pick psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


_engines: dict[str, Engine] = {}


def get_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url not in _engines:
        if url.startswith("sqlite"):
            _engines[url] = _sqlite_engine(url)
        else:
            # pool_pre_ping: dispatchers and workers outlive database restarts.
            # READ COMMITTED whatever the server's default: db.leaderboard.refresh_rollup
            # relies on each statement seeing what committed before it (see there).
            _engines[url] = create_engine(
                url,
                pool_pre_ping=True,
                pool_size=5,
                max_overflow=5,
                isolation_level="READ COMMITTED",
            )
    return _engines[url]


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the driver, issue BEGIN (see _on_begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # WAL lets readers proceed while one process writes; the busy timeout makes writers
        # wait instead of failing with "database is locked" (optuna#820).
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Take the write lock at BEGIN: SQLite's equivalent of FOR UPDATE SKIP LOCKED for a
        # claim is to serialize claimers, and a deferred transaction that upgrades to a write
        # lock later can fail instead of waiting.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


_sessionmakers: dict[str, sessionmaker[Session]] = {}


def _sessionmaker(url: str) -> sessionmaker[Session]:
    url = normalize_url(url)
    if url not in _sessionmakers:
        _sessionmakers[url] = sessionmaker(get_engine(url), expire_on_commit=False)
    return _sessionmakers[url]


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    session = _sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Close and forget cached engines (between tests that recreate a database)."""
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()
    _sessionmakers.clear()
