"""The FastAPI app: routers under /api/v1, schema check at start, optional dispatcher."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from db.migrate import ensure_current
from service import auth
from service.api import examples
from service.api.auth import SignInRequired, api_identity, page_identity
from service.api.errors import install_error_handlers
from service.api.guards import BodyGuard, SameOriginGuard
from service.api.routes import (
    audit,
    figures,
    health,
    keys,
    leaderboard,
    metrics,
    page_figures,
    runs,
    schedules,
    studies,
    sweeps,
    users,
)
from service.api.validation import validation_error
from service.limits import LimitExceeded, limit_exceeded_handler
from service.metrics import LatencyTimer
from service.ratelimit import build_limiter
from service.settings import Settings, get_settings
from service.web import routes as web
from service.web import signin

API_PREFIX = "/api/v1"


def create_app(
    settings: Settings | None = None, *, dispatch: bool | None = None, schedule: bool | None = None
) -> FastAPI:
    """The app; `dispatch` and `schedule` (default: the settings') run the dispatcher and the
    scheduler in threads of this process (the embedded default)."""
    settings = settings or get_settings()
    dispatch = settings.dispatch if dispatch is None else dispatch
    schedule = settings.schedule if schedule is None else schedule

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ensure_current(settings.database_url, migrate=settings.auto_migrate)
        auth.prepare(settings)  # refuses to start without a usable key off loopback
        threads = []
        if dispatch:
            from service import dispatcher

            threads.append(dispatcher.start_in_thread(settings))
        if schedule:
            from service import scheduler

            threads.append(scheduler.start_in_thread(settings))
        yield
        for _, stop in threads:
            stop.set()
        for thread, _ in threads:
            thread.join(timeout=10)

    app = FastAPI(
        title="plateau-bench", version="0.1.0", lifespan=lifespan, openapi_url="/openapi.json"
    )
    app.state.settings = settings
    app.state.limiter = build_limiter(settings)
    # With auth on, everything but health, readiness and metrics needs a key (viewers too).
    readers = [Depends(api_identity)]
    app.include_router(health.router, prefix=API_PREFIX)
    app.include_router(sweeps.router, prefix=API_PREFIX, dependencies=readers)
    app.include_router(runs.router, prefix=API_PREFIX, dependencies=readers)
    app.include_router(figures.router, prefix=API_PREFIX, dependencies=readers)
    app.include_router(page_figures.router, prefix=API_PREFIX, dependencies=readers)
    app.include_router(studies.router, prefix=API_PREFIX, dependencies=readers)
    app.include_router(leaderboard.router, prefix=API_PREFIX, dependencies=readers)
    app.include_router(schedules.router, prefix=API_PREFIX, dependencies=readers)
    app.include_router(users.router, prefix=API_PREFIX)
    app.include_router(keys.router, prefix=API_PREFIX)
    app.include_router(audit.router, prefix=API_PREFIX)
    app.include_router(signin.router)  # the sign-in page needs no session
    app.include_router(web.router, dependencies=[Depends(page_identity)])  # pages, at the root
    app.include_router(metrics.router)  # /metrics, at the root as Prometheus expects
    app.mount("/static", StaticFiles(directory=web.STATIC), name="static")
    # Outermost last: the timer sees every answer, the origin check comes before the body.
    # Gzip for clients that ask: the vendored Vega scripts (832 KB, 279 KB compressed) and the
    # figure specs, whose inlined data compress about 5:1.
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.add_middleware(
        BodyGuard, max_bytes=settings.max_body_bytes, max_depth=settings.max_json_depth
    )
    app.add_middleware(SameOriginGuard, trusted=settings.trusted_origin_list())
    app.add_middleware(LatencyTimer)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(LimitExceeded, limit_exceeded_handler)

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> RedirectResponse:
        target = request.url_for("signin_form").include_query_params(next=exc.next_url)
        return RedirectResponse(str(target), status_code=303)

    install_error_handlers(app, retry_after_seconds=settings.retry_after_seconds)
    examples.install(app)
    return app
