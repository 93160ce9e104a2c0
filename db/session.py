"""Engines and units of work.

Two kinds of unit of work, one context manager each:

- `session_scope(url)` writes: it commits on success, rolls back on error, closes always,
  and on SQLite it takes the write lock at BEGIN (`BEGIN IMMEDIATE`), so writers serialize.
- `read_scope(url)` reads: a read-only transaction (Postgres `BEGIN READ ONLY`, SQLite a
  deferred `BEGIN` with `PRAGMA query_only`) that never commits and never takes SQLite's
  write lock, so readers do not wait for workers' writes. A write through it fails at once.

Code outside db/ gets sessions only from these two. Engines are cached per URL and per
process, and are never pickled: objects handed to Ray carry neither the engine nor the URL
(workers read the URL from their own environment, workers/settings.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    import sqlite3

    from sqlalchemy.pool import ConnectionPoolEntry

SQLITE_BUSY_TIMEOUT_MS = 30_000
# An execution option of the read-only engine: SQLite's BEGIN listener reads it.
_READ_ONLY = "plateau_read_only"


def normalize_url(url: str) -> str:
    """Accept the URL forms people paste (postgres://, postgresql://) and pick psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def resolve_url(url: str) -> str:
    """`normalize_url`, and a relative SQLite path made absolute: Ray workers do not share
    the driver's working directory. A string that is no database URL is a ValueError that
    does not repeat it (it may hold a password)."""
    url = normalize_url(url)
    try:
        make_url(url)
    except ArgumentError:
        raise ValueError(
            "not a database URL; expected e.g. postgresql://user:password@host:5432/db "
            "or sqlite:///path/to/file.db"
        ) from None
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str(Path(url[len(prefix) :]).resolve())
    return url


def masked_url(url: str) -> str:
    """The URL as it may be printed: the password (in the authority or as a `password` query
    parameter) replaced by `***`. Everything that shows a database URL to a person or a log
    goes through this."""
    try:
        parsed = make_url(normalize_url(url))
    except ArgumentError:
        return "<unparseable database URL>"
    hidden = [k for k in parsed.query if k.lower() in ("password", "passwd", "pwd")]
    parsed = parsed.update_query_dict(dict.fromkeys(hidden, "***"))
    return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


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
        if conn.get_execution_options().get(_READ_ONLY):
            # A reader: a deferred transaction reads a WAL snapshot without any lock that
            # writers wait for; query_only turns an accidental write into an error.
            conn.exec_driver_sql("PRAGMA query_only=1")
            conn.exec_driver_sql("BEGIN")
            return
        # A writer takes the write lock at BEGIN: SQLite's equivalent of FOR UPDATE SKIP
        # LOCKED for a claim is to serialize claimers, and a deferred transaction that
        # upgrades to a write lock later can fail instead of waiting.
        conn.exec_driver_sql("PRAGMA query_only=0")
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _read_only_engine(url: str) -> Engine:
    """The same engine and pool, with every transaction read-only."""
    engine = get_engine(url)
    if engine.dialect.name == "postgresql":
        return engine.execution_options(postgresql_readonly=True)
    return engine.execution_options(**{_READ_ONLY: True})


_sessionmakers: dict[tuple[str, bool], sessionmaker[Session]] = {}


def _sessionmaker(url: str, *, read_only: bool = False) -> sessionmaker[Session]:
    key = (normalize_url(url), read_only)
    if key not in _sessionmakers:
        bind = _read_only_engine(url) if read_only else get_engine(url)
        _sessionmakers[key] = sessionmaker(bind, expire_on_commit=False)
    return _sessionmakers[key]


def open_session(url: str, *, read_only: bool = False) -> Session:
    """A new session of either kind, for callers that manage commit and close themselves
    (the API's request dependency); everything else uses the scopes below."""
    return _sessionmaker(url, read_only=read_only)()


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A write unit of work: commit on success, rollback on error, close always."""
    session = open_session(url)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def read_scope(url: str) -> Iterator[Session]:
    """A read-only unit of work: never commits, never takes SQLite's write lock."""
    session = open_session(url, read_only=True)
    try:
        yield session
    finally:
        session.close()  # ends the transaction (a rollback) and returns the connection


def ping(url: str) -> None:
    """Raise (SQLAlchemyError) unless the database answers a trivial query."""
    with get_engine(url).connect() as conn:
        conn.execute(text("SELECT 1"))


def dispose_engines() -> None:
    """Close and forget cached engines (between tests that recreate a database)."""
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()
    _sessionmakers.clear()
