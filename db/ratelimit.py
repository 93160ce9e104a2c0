"""Fixed-window rate-limit counters in the database, so every API replica counts together.

`hit` is one atomic upsert: a window that has expired restarts at `amount` with a new
expiry, a live one adds `amount`. Postgres takes the row's lock for the ON CONFLICT update,
so concurrent hits of one key from several replicas serialize and none is lost; SQLite's
writers already take turns. service/ratelimit.py adapts these functions to the `limits`
library's storage interface.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import CursorResult, case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.models import RateLimitCounter, utcnow


def hit(
    *,
    session: Session,
    key: str,
    amount: int,
    expiry_seconds: float,
    now: dt.datetime | None = None,
) -> tuple[int, dt.datetime]:
    """Add `amount` to the key's current window; returns (count, window's end)."""
    now = now or utcnow()
    expires = now + dt.timedelta(seconds=expiry_seconds)
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    c = RateLimitCounter.__table__.c
    stmt = insert(RateLimitCounter).values(key=key, count=amount, expires_at=expires)
    expired = c.expires_at <= now
    stmt = stmt.on_conflict_do_update(
        index_elements=[c.key],
        set_={
            "count": case((expired, amount), else_=c.count + amount),
            "expires_at": case((expired, expires), else_=c.expires_at),
        },
    ).returning(c.count, c.expires_at)
    count, end = session.execute(stmt).one()
    return count, end


def current(
    *, session: Session, key: str, now: dt.datetime | None = None
) -> tuple[int, dt.datetime] | None:
    """(count, window's end) of the key's live window; None when it has none."""
    now = now or utcnow()
    row = session.execute(
        select(RateLimitCounter.count, RateLimitCounter.expires_at).where(
            RateLimitCounter.key == key, RateLimitCounter.expires_at > now
        )
    ).first()
    return None if row is None else (row[0], row[1])


def clear(*, session: Session, key: str | None = None) -> int:
    """Forget one key's window, or every window (key None); returns the rows removed."""
    stmt = delete(RateLimitCounter)
    if key is not None:
        stmt = stmt.where(RateLimitCounter.key == key)
    return cast(CursorResult[Any], session.execute(stmt)).rowcount


def purge_expired(*, session: Session, now: dt.datetime | None = None) -> int:
    """Delete windows that have ended (a hit would restart them anyway)."""
    now = now or utcnow()
    stmt = delete(RateLimitCounter).where(RateLimitCounter.expires_at <= now)
    return cast(CursorResult[Any], session.execute(stmt)).rowcount
