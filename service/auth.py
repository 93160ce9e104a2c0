"""Identities without HTTP: who is asking (`Identity`), whether keys are required, and the
deployment's first admin. The FastAPI dependencies are in service/api/auth.py; the SQL in
db/auth.py.

Two modes:
- *Single-user* (auth off): nobody needs a key; whoever reaches the port is the one user,
  with every right. What `plateau serve` gives on 127.0.0.1 with a fresh database.
- *Team* (auth on): every request but /api/v1/health and /api/v1/ready (and the OpenAPI
  document, the sign-in page and static files) needs an API key of a user, or a page
  session signed in with one; a user's role says what it may do.

`PLATEAU_AUTH` chooses: `on`; `off` (refused unless the API binds a loopback address);
`auto`, the default: on when the API binds any other address, or once the database has a
team user or any key (`plateau users create`, `plateau keys create`, the admin key secret).
Legacy users, which come from free-text owners, do not count. On stays on for the process.

A deployment gives its first admin key as a secret: `PLATEAU_ADMIN_KEY` or a file named by
`PLATEAU_ADMIN_KEY_FILE`; at start, if no key with that secret exists, the user
`PLATEAU_ADMIN_USER` ("admin") and that key are created. A revoked one stays revoked.
"""

from __future__ import annotations

import getpass
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import audit
from db import auth as db_auth
from db.errors import AlreadyExists
from db.models import ROLES, ApiKey, User
from db.session import session_scope
from service.settings import Settings

log = logging.getLogger(__name__)

ROLE_RANK = {role: i for i, role in enumerate(ROLES)}  # viewer < member < admin
SINGLE_USER: Literal["single-user"] = "single-user"

HOW_TO_CONFIGURE = (
    "Give the first admin's key as a secret: PLATEAU_ADMIN_KEY=<key> (or "
    "PLATEAU_ADMIN_KEY_FILE=<file holding it>), a random string of at least "
    f"{db_auth.MIN_KEY_LENGTH} characters (`plateau keys generate`, or `openssl rand -hex 32`); "
    "or create one in the database first: `plateau users create NAME --role admin`, then "
    "`plateau keys create --user NAME`. For a single-user server, bind to 127.0.0.1 (the default)."
)


class AuthConfigError(RuntimeError):
    """The identity settings cannot work; the message says how to fix them."""


@dataclass(frozen=True)
class Identity:
    """Who is asking. `user` is None in single-user mode, where the one user may do all."""

    user: User | None
    via: Literal["key", "session", "single-user"] = SINGLE_USER
    key_prefix: str | None = None
    session_token: str | None = field(default=None, repr=False)  # pages: CSRF derives from it

    @property
    def role(self) -> str:
        return "admin" if self.user is None else self.user.role

    @property
    def name(self) -> str:
        return SINGLE_USER if self.user is None else self.user.name

    @property
    def actor(self) -> User | str:
        """What db.audit.record takes as `actor`."""
        return SINGLE_USER if self.user is None else self.user

    def has(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    def record(self, *, session: Session, action: str, target: str, detail: dict[str, Any]) -> None:
        """An audit event of something this identity did (db.audit.record)."""
        audit.record(
            session=session,
            actor=self.actor,
            action=action,
            target=target,
            detail=detail,
            key_prefix=self.key_prefix,
        )

    def may_change(self, owner_id: int) -> bool:
        """May cancel (delete, retry) a sweep or study of the user `owner_id`: an admin, or
        the member who owns it."""
        if self.user is None or self.role == "admin":
            return True
        return self.role == "member" and self.user.id == owner_id


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`. A hostname may resolve to anything: not loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def forced(settings: Settings) -> bool | None:
    """True or False when the settings alone decide whether keys are required; None when
    the database decides (auto, on a loopback address): see db.auth.team_configured."""
    if settings.auth == "on" or not is_loopback(settings.host):
        return True
    if settings.auth == "off":
        return False
    return None


def cli_actor() -> str:
    """The audit log's actor for commands run on the database directly."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (e.g. a container's)
        return "cli"


def prepare(settings: Settings) -> None:
    """At start, with the schema current: refuse settings that cannot work, and create the
    admin from the deployment's secret. Raises AuthConfigError with what to do."""
    if settings.auth == "off" and not is_loopback(settings.host):
        raise AuthConfigError(
            f"PLATEAU_AUTH=off is refused on {settings.host}: anyone who reaches the port "
            "could submit and cancel. Bind to 127.0.0.1 for a single-user server, or leave "
            "PLATEAU_AUTH unset (auto) and configure a key. " + HOW_TO_CONFIGURE
        )
    for attempt in range(2):  # replicas starting together race to create the admin
        try:
            with session_scope(settings.database_url) as session:
                if settings.admin_key is not None:
                    _ensure_admin_key(session, settings)
                if forced(settings) and not db_auth.usable_key_exists(session=session):
                    raise AuthConfigError(
                        f"the API on {settings.host} requires API keys, and no usable key "
                        "exists (none, or all revoked or of disabled users). " + HOW_TO_CONFIGURE
                    )
            return
        except (IntegrityError, AlreadyExists):
            if attempt:
                raise


def _ensure_admin_key(session: Session, settings: Settings) -> None:
    assert settings.admin_key is not None
    token = settings.admin_key.get_secret_value()
    found = db_auth.find_key(session=session, token=token)
    if found is not None:
        if found.revoked_at is not None:
            log.warning(
                "the admin key secret (%s) was revoked on %s and stays revoked; replace the secret",
                found.prefix,
                found.revoked_at.date(),
            )
        return
    name = settings.admin_user
    user = db_auth.get_user(session=session, name=name)
    if user is None:
        user = create_user(session=session, name=name, role="admin", actor="bootstrap")
    elif user.role != "admin" or user.disabled_at is not None or user.origin != "team":
        state = "disabled" if user.disabled_at is not None else f"role {user.role}"
        raise AuthConfigError(
            f"the admin key secret names user {name!r}, which exists ({state}, origin "
            f"{user.origin}); the secret will not make it an admin. Set PLATEAU_ADMIN_USER to "
            f"another name, or make it one: `plateau users create {name} --role admin` "
            f"(adopts a legacy user) / `plateau users update {name} --role admin --enable`"
        )
    key, _ = db_auth.create_key(session=session, user=user, name="PLATEAU_ADMIN_KEY", token=token)
    audit.record(
        session=session,
        actor="bootstrap",
        action="key.create",
        target=f"key:{key.prefix}",
        detail={"user": name, "role": "admin", "name": key.name},
    )
    log.info("created API key %s of admin %r from the admin key secret", key.prefix, name)


# ------------------------------------------------------------- managing users and keys
# Shared by the API (admins) and the CLI (on the database directly); each records itself in
# the audit log. `actor` and `key_prefix` as db.audit.record takes them.


class LastAdminError(ValueError):
    """The change would leave the team without an enabled admin."""


def create_user(
    *, session: Session, name: str, role: str, actor: User | str, key_prefix: str | None = None
) -> User:
    """A team user (db.errors.AlreadyExists if one has the name; a legacy one is adopted)."""
    user, adopted = db_auth.create_user(session=session, name=name, role=role)
    audit.record(
        session=session,
        actor=actor,
        action="user.create",
        target=f"user:{user.name}",
        detail={"role": user.role, "adopted_legacy": adopted},
        key_prefix=key_prefix,
    )
    return user


def update_user(
    *,
    session: Session,
    user: User,
    role: str | None,
    disabled: bool | None,
    actor: User | str,
    key_prefix: str | None = None,
) -> dict[str, list[object]]:
    """Change a user's role, disable or enable it; the changes made, {field: [old, new]}.
    A disabled user's keys and page sessions stop working at once. LastAdminError when no
    enabled admin would be left."""
    losing_admin = user.role == "admin" and user.disabled_at is None
    losing_admin &= (role not in (None, "admin")) or disabled is True
    if losing_admin and db_auth.enabled_admins(session=session) <= 1:
        raise LastAdminError(f"{user.name!r} is the last enabled admin; make another admin first")
    changes: dict[str, list[object]] = {}
    if role is not None and role != user.role:
        changes["role"] = [user.role, role]
        db_auth.set_role(session=session, user=user, role=role)
    if disabled is not None and disabled != (user.disabled_at is not None):
        changes["disabled"] = [not disabled, disabled]
        db_auth.set_disabled(session=session, user=user, disabled=disabled)
    if changes:
        audit.record(
            session=session,
            actor=actor,
            action="user.update",
            target=f"user:{user.name}",
            detail=changes,
            key_prefix=key_prefix,
        )
    return changes


def create_key(
    *, session: Session, user: User, name: str, actor: User | str, key_prefix: str | None = None
) -> tuple[ApiKey, str]:
    """A new key of `user`: (row, the key), the key shown this once."""
    key, token = db_auth.create_key(session=session, user=user, name=name)
    audit.record(
        session=session,
        actor=actor,
        action="key.create",
        target=f"key:{key.prefix}",
        detail={"user": user.name, "role": user.role, "name": name},
        key_prefix=key_prefix,
    )
    return key, token


def revoke_key(
    *, session: Session, key: ApiKey, actor: User | str, key_prefix: str | None = None
) -> bool:
    """Revoke a key (and end its page sessions); False if it was revoked already."""
    if not db_auth.revoke_key(session=session, key=key):
        return False
    audit.record(
        session=session,
        actor=actor,
        action="key.revoke",
        target=f"key:{key.prefix}",
        detail={"user": key.user.name, "name": key.name},
        key_prefix=key_prefix,
    )
    return True
