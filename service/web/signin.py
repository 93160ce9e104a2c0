"""Signing in to the pages with an API key, and out again.

A browser posts its key once to /signin; the service answers with a session cookie:
HttpOnly (scripts cannot read it), SameSite=Lax (another site's form posts and scripts do
not carry it; following a link from another site does), Secure when the browser came over
https (PLATEAU_COOKIE_SECURE overrides), lasting PLATEAU_SESSION_HOURS. The cookie holds a
random token; the database its SHA-256, so signing out, revoking the key or disabling the
user ends the session on every replica at once. The sign-in form itself carries a
double-submit CSRF token, so another site cannot sign a browser in as someone else.
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from db import auth as db_auth
from db.models import utcnow
from service.api.auth import (
    SESSION_COOKIE,
    FormFields,
    PageIdentity,
    auth_on,
    cookie_secure,
    csrf_ok,
    csrf_token,
)
from service.api.deps import SessionDep, SettingsDep
from service.web.routes import CSRF_MISMATCH, refused, render

router = APIRouter(include_in_schema=False)


def safe_next(target: str | None) -> str:
    """Only a path on this site: never `//elsewhere` or `https://elsewhere` (open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _form(
    request: Request, next_url: str, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    request.state.csrf = csrf_token(request, None)
    context = {"next": safe_next(next_url), "error": error}
    return render(request, "signin.html", context, status_code=status_code)


@router.get("/signin", response_class=HTMLResponse)
def signin_form(
    request: Request, settings: SettingsDep, session: SessionDep, next: str = "/"
) -> Response:
    if not auth_on(request, settings, session):  # single-user mode: nothing to sign in to
        return RedirectResponse(safe_next(next), 303)
    return _form(request, next)


@router.post("/signin", response_class=HTMLResponse)
def signin(
    request: Request, settings: SettingsDep, session: SessionDep, form: FormFields
) -> Response:
    next_url = safe_next(form.get("next"))
    if not csrf_ok(request, None, form.get("csrf_token")):
        return _form(request, next_url, CSRF_MISMATCH, 403)
    token = form.get("key", "").strip()
    now = utcnow()
    key = db_auth.find_key(session=session, token=token) if token else None
    if key is None or key.revoked_at is not None or key.user.disabled_at is not None:
        problem = "that key is not valid (mistyped, revoked, or its user is disabled)"
        return _form(request, next_url, problem, 401)
    db_auth.purge_sessions(session=session, now=now)
    _, cookie = db_auth.create_session(
        session=session, key=key, lifetime=dt.timedelta(hours=settings.session_hours)
    )
    db_auth.touch_key(session=session, key_id=key.id, now=now)
    response = RedirectResponse(next_url, 303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=int(settings.session_hours * 3600),
        httponly=True,
        samesite="lax",
        secure=cookie_secure(request, settings),
    )
    return response


@router.post("/signout", response_class=HTMLResponse)
def signout(
    request: Request, session: SessionDep, identity: PageIdentity, form: FormFields
) -> Response:
    if not csrf_ok(request, identity, form.get("csrf_token")):
        return refused(request, 403, CSRF_MISMATCH)
    if identity.session_token:
        db_auth.end_session(session=session, token=identity.session_token)
    response = RedirectResponse(str(request.url_for("signin_form")), 303)
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="lax")
    return response
