"""Users, API keys and page sessions: the SQL behind identities (service/api/auth.py says
who may do what; this module only stores and finds).

A key reads `pb_` + 8 characters + `_` + 43 characters, all base62 (letters and digits, so a
double click selects it whole). `pb_` and the first 8 are the *prefix*: random, not part of
the secret, stored in clear and shown in lists, logs and the audit log so a person can tell
their keys apart. The 43 others are the secret: 256 bits from `secrets`.

The table stores SHA-256 of the whole key (hex), unsalted, and finds a key by that digest
through a unique index. Not bcrypt, scrypt or argon2: those are slow on purpose so that
guessing a *low-entropy password* costs the attacker; a 256-bit random secret cannot be
guessed at any hash speed, so slowness would protect nothing, while every API request would
pay ~50-250 ms of CPU for it (an easy denial of service), and a salted hash cannot be looked
up by an index (one would look up by prefix, then verify). A salt defends against tables
precomputed for likely inputs, which do not exist for random 256-bit ones. bcrypt also
ignores everything past 72 bytes. Keys an operator brings (the deployment's
`PLATEAU_ADMIN_KEY`, e.g. `openssl rand -hex 32`) must be at least 32 characters.

Page sessions keep SHA-256 of their random cookie token the same way.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import string
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.errors import AlreadyExists
from db.models import ApiKey, Sweep, User, WebSession, utcnow

ALPHABET = string.ascii_letters + string.digits
KEY_PATTERN = re.compile(r"pb_[A-Za-z0-9]{8}_[A-Za-z0-9]{43}")
PREFIX_LENGTH = len("pb_") + 8
MIN_KEY_LENGTH = 32  # for keys an operator brings; ours are 55 characters
TOUCH_EVERY = dt.timedelta(minutes=1)  # last_used_at is written at most this often


def _random(n: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


def generate_key() -> str:
    """A fresh key (no database involved): `plateau keys generate`, a deployment's secret."""
    return f"pb_{_random(8)}_{_random(43)}"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def prefix_of(token: str) -> str:
    """The part of a key shown in lists: its own prefix for our format; for a key an operator
    brought in another format, `pb_` and 8 hex digits of its digest (revealing nothing)."""
    if KEY_PATTERN.fullmatch(token):
        return token[:PREFIX_LENGTH]
    return "pb_" + digest(token)[:8]


# ---------------------------------------------------------------------------------- users


def get_user(*, session: Session, name: str) -> User | None:
    return session.scalars(select(User).where(User.name == name)).first()


def list_users(*, session: Session) -> Sequence[User]:
    return session.scalars(select(User).order_by(User.name)).all()


def create_user(*, session: Session, name: str, role: str) -> tuple[User, bool]:
    """A team user; (user, adopted). A legacy user of that name (a free-text owner) is
    adopted: it becomes a team user with `role` and keeps its sweeps. A team user of that
    name is AlreadyExists."""
    user = get_user(session=session, name=name)
    if user is not None:
        if user.origin != "legacy":
            raise AlreadyExists(f"user {name!r} exists (role {user.role})")
        user.origin, user.role = "team", role
        session.flush()
        return user, True
    user = User(name=name, role=role, origin="team")
    try:
        with session.begin_nested():
            session.add(user)
    except IntegrityError as e:  # created meanwhile by another process
        raise AlreadyExists(f"user {name!r} exists") from e
    return user, False


def legacy_user(*, session: Session, name: str) -> User:
    """The user a free-text owner name stands for (single-user mode, old specs), created as
    origin 'legacy', role 'viewer' the first time the name is seen."""
    user = get_user(session=session, name=name)
    if user is not None:
        return user
    user = User(name=name, role="viewer", origin="legacy")
    try:
        with session.begin_nested():
            session.add(user)
    except IntegrityError:  # another submission created it meanwhile
        found = get_user(session=session, name=name)
        assert found is not None
        return found
    return user


def set_role(*, session: Session, user: User, role: str) -> None:
    user.role = role
    session.flush()


def set_disabled(*, session: Session, user: User, disabled: bool) -> None:
    """A disabled user's keys and page sessions stop working at once (they stay listed)."""
    user.disabled_at = utcnow() if disabled else None
    session.flush()


def owner_names(*, session: Session) -> list[str]:
    """Names of the users who own at least one sweep (the leaderboard's owner filter)."""
    owners = select(Sweep.owner_id).distinct().scalar_subquery()
    return list(session.scalars(select(User.name).where(User.id.in_(owners)).order_by(User.name)))


def team_configured(*, session: Session) -> bool:
    """Has anyone set up a team here: a team user, or any key? (Legacy users, which come
    from free text, do not count.) PLATEAU_AUTH=auto is on exactly then."""
    team = exists().where(User.origin == "team")
    keys = exists().where(ApiKey.id.is_not(None))
    return bool(session.scalar(select(or_(team, keys))))


def usable_key_exists(*, session: Session) -> bool:
    """Is there a key that could sign in now (not revoked, its user not disabled)?"""
    return bool(
        session.scalar(
            select(
                exists()
                .where(ApiKey.revoked_at.is_(None), ApiKey.user_id == User.id)
                .where(User.disabled_at.is_(None))
            )
        )
    )


# ----------------------------------------------------------------------------------- keys


def create_key(
    *, session: Session, user: User, name: str = "", token: str | None = None
) -> tuple[ApiKey, str]:
    """A new key of `user`: (row, key). The key is returned this once and never stored."""
    token = token or generate_key()
    key = ApiKey(user=user, prefix=prefix_of(token), key_hash=digest(token), name=name)
    session.add(key)
    session.flush()
    return key, token


def find_key(*, session: Session, token: str) -> ApiKey | None:
    """The key (with its user) whose secret is `token`, revoked or not; None if none is."""
    return session.scalars(select(ApiKey).where(ApiKey.key_hash == digest(token))).first()


def get_key(*, session: Session, prefix: str) -> ApiKey | None:
    return session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).first()


def list_keys(
    *, session: Session, user: User | None = None, include_revoked: bool = False
) -> Sequence[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.id)
    if user is not None:
        query = query.where(ApiKey.user_id == user.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return session.scalars(query).all()


def revoke_key(*, session: Session, key: ApiKey) -> bool:
    """Revoke `key` and end its page sessions; False when it was revoked already."""
    if key.revoked_at is not None:
        return False
    key.revoked_at = utcnow()
    session.execute(delete(WebSession).where(WebSession.key_id == key.id))
    session.flush()
    return True


def touch_key(*, session: Session, key_id: int, now: dt.datetime) -> None:
    """Record that the key was used, unless that was recorded less than TOUCH_EVERY ago (a
    write per request would turn every read into a write)."""
    session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id)
        .where(or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - TOUCH_EVERY))
        .values(last_used_at=now)
    )


# ------------------------------------------------------------------------------- sessions


def create_session(
    *, session: Session, key: ApiKey, lifetime: dt.timedelta
) -> tuple[WebSession, str]:
    """A page session for a browser that signed in with `key`: (row, cookie token)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    row = WebSession(
        token_hash=digest(token), key_id=key.id, created_at=now, expires_at=now + lifetime
    )
    session.add(row)
    session.flush()
    return row, token


def find_session(*, session: Session, token: str, now: dt.datetime) -> WebSession | None:
    """The unexpired session of a cookie token, with its key and user (revoked or disabled
    ones too: the caller says why they do not count)."""
    return session.scalars(
        select(WebSession).where(
            WebSession.token_hash == digest(token), WebSession.expires_at > now
        )
    ).first()


def end_session(*, session: Session, token: str) -> None:
    session.execute(delete(WebSession).where(WebSession.token_hash == digest(token)))


def purge_sessions(*, session: Session, now: dt.datetime) -> int:
    """Delete expired page sessions; how many."""
    result = session.execute(delete(WebSession).where(WebSession.expires_at <= now))
    return cast(CursorResult[Any], result).rowcount


def enabled_admins(*, session: Session) -> int:
    query = select(func.count()).where(User.role == "admin", User.disabled_at.is_(None))
    return session.scalar(query) or 0
