"""Storage errors as HTTP answers, in one place.

- The database cannot serve now (refused or dropped connection, server restarting, pool
  exhausted, SQLite busy): 503 with Retry-After, on the API (JSON) and on the pages (HTML),
  logged as one line. Clients and load balancers retry; nothing was half-written, since
  every write is one transaction committed before the answer (service/api/deps.py).
- Any other database error (a constraint, a refused commit): 500 with a JSON message, the
  traceback in the log. The transaction was rolled back, so nothing it wrote was saved.
- db/'s own errors: SchemaNotCurrent 503 (the message names the fix), LeaseLost 409.
- An HTTP error (404 of a missing run, sweep or study, 422 of a bad compare list, ...) on a
  page, or on any path outside /api/ that a browser asks for (Accept: text/html), is an
  HTML page with a link home; the API and other clients keep FastAPI's JSON.
"""

from __future__ import annotations

import logging

import optuna
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from db.errors import DBError, SchemaNotCurrent, database_unavailable

log = logging.getLogger(__name__)

UNAVAILABLE = "the database is unreachable right now; nothing was changed, retry later"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _answer(request: Request, status: int, detail: str, headers: dict[str, str]) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)
    page = (
        f"<!doctype html><title>plateau-bench: unavailable</title><h1>{status}</h1><p>{detail}.</p>"
    )
    return HTMLResponse(page, status_code=status, headers=headers)


def wants_page(request: Request) -> bool:
    """Should an error be answered as an HTML page: a page's route (outside the schema), or
    a path outside /api/ that a browser asked for."""
    if request.url.path.startswith("/api/"):
        return False
    route = request.scope.get("route")
    if route is not None and not getattr(route, "include_in_schema", True):
        return True
    return "text/html" in request.headers.get("accept", "")


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if not wants_page(request):
        return await http_exception_handler(request, exc)
    from service.web.routes import refused  # the pages' templates; not needed by the API

    message = str(exc.detail)
    if exc.status_code == 404 and request.scope.get("route") is None:
        message = f"there is no page at {request.url.path}"
    page = refused(request, exc.status_code, message)
    page.headers.update(exc.headers or {})
    return page


def install_error_handlers(app: FastAPI, *, retry_after_seconds: int) -> None:
    retry = {"Retry-After": str(retry_after_seconds)}

    def database_error(request: Request, exc: Exception) -> Response:
        if database_unavailable(exc):
            log.warning(
                "%s %s: 503, database unavailable (%s)",
                request.method,
                request.url.path,
                _first_line(exc),
            )
            return _answer(request, 503, UNAVAILABLE, retry)
        log.error("%s %s: database error", request.method, request.url.path, exc_info=exc)
        detail = (
            f"the database refused the request ({type(exc).__name__}); "
            "it was rolled back and nothing it wrote was saved"
        )
        return _answer(request, 500, detail, {})

    def db_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, SchemaNotCurrent):
            return _answer(request, 503, str(exc), retry)
        return _answer(request, 409, str(exc), {})

    app.add_exception_handler(SQLAlchemyError, database_error)
    # Optuna wraps SQLAlchemy's errors in its own (studies read Optuna's tables).
    app.add_exception_handler(optuna.exceptions.StorageInternalError, database_error)
    app.add_exception_handler(DBError, db_error)
    app.add_exception_handler(HTTPException, http_error)
