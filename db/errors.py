"""Errors raised by db/. service/ maps them to HTTP; workers/ treats LeaseLost as 'stop now'."""

from __future__ import annotations


class DBError(Exception):
    """Base of storage errors."""


class LeaseLost(DBError):
    """The attempt no longer owns the run (lease expired and reaped, or run cancelled)."""

    def __init__(self, run_id: int, attempt: int) -> None:
        super().__init__(f"run {run_id} attempt {attempt} no longer holds its lease")
        self.run_id = run_id
        self.attempt = attempt


class SchemaNotCurrent(DBError):
    """The database schema is behind the code; the message says which command fixes it."""


class AlreadyExists(DBError):
    """A row with that name (a user) is there already; the API answers 409."""


# SQLite's OperationalError also names programming errors ("no such table", a write through a
# read-only session); only these mean "the database cannot serve now".
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database", "disk i/o error")


def database_unavailable(exc: BaseException) -> bool:
    """True when `exc`, or an exception it was raised from (Optuna wraps SQLAlchemy's), means
    the database cannot be reached or cannot serve right now: a refused or dropped connection,
    a server shutting down or starting up, an exhausted pool, SQLite's busy timeout. Such an
    error is worth retrying later (HTTP 503 with Retry-After; a dispatcher backs off);
    anything else is a bug or a refusal (constraint, read-only transaction) and is not."""
    import sqlite3

    import psycopg
    from sqlalchemy import exc as sa

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sa.TimeoutError | sa.DisconnectionError):
            return True
        if isinstance(current, sa.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, psycopg.OperationalError | psycopg.InterfaceError):
            return True
        if isinstance(current, sqlite3.OperationalError):
            return any(m in str(current).lower() for m in _SQLITE_UNAVAILABLE)
        orig = getattr(current, "orig", None)  # SQLAlchemy's wrapper of the driver's error
        current = (
            orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
        )
    return False


class SweepCancelled(DBError):
    """A change that would undo a sweep's cancel (retrying its failed runs)."""

    def __init__(self, sweep_id: int) -> None:
        super().__init__(
            f"sweep {sweep_id} is cancelled: its failed runs are not retried (submit it again)"
        )
        self.sweep_id = sweep_id
