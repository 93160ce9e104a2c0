"""Who is asking, and what they may do: typed dependencies over service/auth.py.

- `CurrentIdentity`: with auth on, a valid API key (`Authorization: Bearer <key>`, or
  `X-API-Key: <key>`) or, for reads only, a page session cookie; 401 otherwise (a revoked
  key, a disabled user, no key). In single-user mode, the one user, with every right.
- `MemberIdentity`, `AdminIdentity`: the same with at least that role; 403 otherwise.
- `ensure_may_change(identity, owner, what, doing)`: 403 unless an admin or the owning
  member (cancel today; delete and retry call it the same way).
- `PageIdentity`: for pages; a browser without a session is sent to /signin.

The identity is resolved in a unit of work of its own, before the request's session does
anything: recording a key's last use is a write, and on SQLite a request whose own
transaction already held the write lock would wait on itself.

Cookies never authorize API writes (send the key); a page's own forms do, with a CSRF token
tied to the session (signed in) or a double-submit cookie (single-user mode, sign-in form).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from db import auth as db_auth
from db.models import User, utcnow
from db.session import read_scope, session_scope
from service.api.deps import SettingsDep
from service.auth import Identity, forced
from service.settings import Settings

SESSION_COOKIE = "plateau_session"
CSRF_COOKIE = "plateau_csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
NEEDS_KEY = (
    "this service requires an API key: send `Authorization: Bearer <key>` (the plateau CLI "
    "sends $PLATEAU_API_KEY); an admin creates keys with `plateau keys create`"
)
MAX_FORM_BYTES = 16 * 1024  # a sign-in or cancel form is a few hundred bytes
MAX_FORM_FIELDS = 20

bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer <key>`")
api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="an API key, as an alternative header"
)


class SignInRequired(Exception):
    """A page was asked for without a session: main.py answers with a redirect to /signin."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def auth_on(request: Request, settings: Settings, session: Session) -> bool:
    """Are keys required for this request? Once on, on for the life of the process."""
    state = request.app.state
    if getattr(state, "auth_on", False):
        return True
    decided = forced(settings)
    on = decided if decided is not None else db_auth.team_configured(session=session)
    if on:
        state.auth_on = True
    return on


def resolve(
    request: Request, settings: Settings, token: str | None, *, allow_session: bool
) -> Identity | None:
    """The identity of a key or (if allowed) a page session; None when there is neither.
    Raises 401 for a key that is wrong, revoked or of a disabled user.

    Read in a read-only unit of work, so that on SQLite a request's identity never waits for
    the write lock; the key's last use is written afterwards, in a unit of its own, only
    when the stored one is older than db.auth.TOUCH_EVERY."""
    url = settings.database_url
    now = utcnow()
    with read_scope(url) as session:
        if not auth_on(request, settings, session):
            return Identity(user=None)
        key = None
        identity: Identity | None = None
        if token:
            key = db_auth.find_key(session=session, token=token)
            if key is None:
                raise unauthorized("invalid API key")
            if key.revoked_at is not None:
                raise unauthorized(
                    f"API key {key.prefix} was revoked on {key.revoked_at:%Y-%m-%d %H:%M} UTC"
                )
            if key.user.disabled_at is not None:
                raise unauthorized(f"user {key.user.name!r} is disabled")
            identity = Identity(user=key.user, via="key", key_prefix=key.prefix)
        else:
            cookie = request.cookies.get(SESSION_COOKIE)
            web = (
                db_auth.find_session(session=session, token=cookie, now=now)
                if cookie and allow_session
                else None
            )
            if web and web.key.revoked_at is None and web.key.user.disabled_at is None:
                key = web.key
                identity = Identity(
                    user=key.user, via="session", key_prefix=key.prefix, session_token=cookie
                )
    last = key.last_used_at if key is not None else None
    if key is not None and (last is None or last < now - db_auth.TOUCH_EVERY):
        with session_scope(url) as session:
            db_auth.touch_key(session=session, key_id=key.id, now=now)
    return identity


def _token(credentials: HTTPAuthorizationCredentials | None, header_key: str | None) -> str | None:
    return credentials.credentials if credentials is not None else header_key


def api_identity(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    header_key: Annotated[str | None, Depends(api_key_header)],
) -> Identity:
    safe = request.method in SAFE_METHODS
    identity = resolve(request, settings, _token(credentials, header_key), allow_session=safe)
    if identity is None:
        if not safe and SESSION_COOKIE in request.cookies:
            raise unauthorized(
                "a page session does not authorize API writes: send your API key "
                "(`Authorization: Bearer <key>`), or use the page's own form"
            )
        raise unauthorized(NEEDS_KEY)
    request.state.identity = identity
    return identity


CurrentIdentity = Annotated[Identity, Depends(api_identity)]


def require(role: str) -> Callable[[Request, Identity], Identity]:
    def check(request: Request, identity: CurrentIdentity) -> Identity:
        if not identity.has(role):
            needed = "role admin" if role == "admin" else f"role {role} or admin"
            raise HTTPException(
                403,
                f"user {identity.name!r} has role {identity.role}; "
                f"{request.method} {request.url.path} needs {needed}",
            )
        return identity

    return check


MemberIdentity = Annotated[Identity, Depends(require("member"))]
AdminIdentity = Annotated[Identity, Depends(require("admin"))]


def ensure_may_change(identity: Identity, owner: User, what: str, doing: str) -> None:
    """403 unless `identity` may change an object of `owner` (its member, or an admin)."""
    if not identity.may_change(owner.id):
        raise HTTPException(
            403,
            f"{what} belongs to {owner.name}; only its owner or an admin may {doing} it",
        )


def spec_owner(identity: Identity, claimed: str | None) -> User | str:
    """The owner of a submission: the key's user. In single-user mode the spec's free-text
    `owner` (default "anonymous") names a legacy user, as before 2026-12. With auth on a
    spec may repeat its user's name but not name anyone else (422)."""
    if identity.user is None:
        return claimed or "anonymous"
    if claimed is not None and claimed != identity.user.name:
        raise HTTPException(
            422,
            [
                {
                    "loc": ["body", "owner"],
                    "msg": f"the owner is the API key's user ({identity.user.name!r}), not "
                    f"{claimed!r}: remove `owner` from the spec (it is deprecated)",
                    "type": "value_error",
                }
            ],
        )
    return identity.user


# ------------------------------------------------------------------------------- pages


def page_identity(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    header_key: Annotated[str | None, Depends(api_key_header)],
) -> Identity:
    identity = resolve(request, settings, _token(credentials, header_key), allow_session=True)
    if identity is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(path if request.method in SAFE_METHODS else "/")
    request.state.identity = identity
    request.state.csrf = csrf_token(request, identity)
    return identity


PageIdentity = Annotated[Identity, Depends(page_identity)]


def _session_csrf(session_token: str) -> str:
    """The CSRF token of a signed-in browser: derived from its HttpOnly session cookie, which
    another site can neither read nor set."""
    return hmac.new(session_token.encode(), b"plateau csrf", hashlib.sha256).hexdigest()


def csrf_token(request: Request, identity: Identity | None) -> str:
    """The token a page's forms carry. Without a session, a double-submit cookie: made here
    when the browser has none, and set by service.web.routes.render."""
    if identity is not None and identity.session_token:
        return _session_csrf(identity.session_token)
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if len(cookie) >= 32:
        return cookie
    token = secrets.token_urlsafe(32)
    request.state.new_csrf_cookie = token
    return token


def csrf_ok(request: Request, identity: Identity | None, submitted: str | None) -> bool:
    """Does a form's token match? A request authenticated by a key header needs none (a
    browser never adds that header by itself)."""
    if identity is not None and identity.via == "key":
        return True
    if identity is not None and identity.session_token:
        expected = _session_csrf(identity.session_token)
    else:
        expected = request.cookies.get(CSRF_COOKIE, "")
    return bool(submitted) and bool(expected) and hmac.compare_digest(submitted or "", expected)


async def form_fields(request: Request) -> dict[str, str]:
    """A small url-encoded form's fields (first value each); {} for any other body, so a
    cross-site text/plain or multipart post carries no token."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, f"a form of at most {MAX_FORM_BYTES} bytes is expected")
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=MAX_FORM_FIELDS)
    except ValueError as e:  # more fields than max_num_fields
        raise HTTPException(422, f"a form of at most {MAX_FORM_FIELDS} fields is expected") from e
    return {k: v[0] for k, v in fields.items() if v}


FormFields = Annotated[dict[str, str], Depends(form_fields)]


def cookie_secure(request: Request, settings: Settings) -> bool:
    """Secure cookies when the browser came over https (as uvicorn sees it: behind a TLS
    proxy, with --forwarded-allow-ips), unless PLATEAU_COOKIE_SECURE says otherwise."""
    if settings.cookie_secure is not None:
        return settings.cookie_secure
    return request.url.scheme == "https"
