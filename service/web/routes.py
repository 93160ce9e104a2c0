"""The pages: `/` leaderboard, `/sweeps/{id}`, `/runs/{id}`, `/compare?runs=…`,
`/studies/{id}`. Tables are rendered here; charts are drawn in the browser by vega-embed
from the Vega-Lite specs the JSON endpoints serve (service/figures/), so a page URL is also a
stable, shareable view of the data."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy import select

from db import auth as db_auth
from db import pages as db_pages
from db import queries
from db.leaderboard import METRICS, devices_of_sweep
from db.models import MAX_ID, Study
from service import studies
from service.api.auth import (
    CSRF_COOKIE,
    FormFields,
    PageIdentity,
    cookie_secure,
    csrf_ok,
)
from service.api.deps import RunDep, SessionDep, StudyId, SweepDep
from service.api.routes.schedules import ScheduleDep
from service.api.views import run_list_item, sweep_public
from service.figures import sig3
from service.leaderboard import METRIC_HELP, LeaderboardQuery, leaderboard_page
from service.pages import study_document
from service.sweeps import cancel_sweep
from service.tables import steps_text
from workers.config import ARCH_INPUT_KINDS

HERE = Path(__file__).parent
STATIC = HERE / "static"


def _identity(request: Request) -> dict[str, Any]:
    """What base.html shows of who is signed in, and the CSRF token its forms carry."""
    return {
        "identity": getattr(request.state, "identity", None),
        "csrf_token": getattr(request.state, "csrf", ""),
    }


templates = Jinja2Templates(directory=HERE / "templates", context_processors=[_identity])
templates.env.filters["num"] = lambda v, spec=".4g": "—" if v is None else format(v, spec)
templates.env.filters["sig3"] = sig3
# Settings' long floats (orthogonal(scale=0.5933775325479784)) to 3 significant digits.
templates.env.filters["rounded"] = lambda text: re.sub(
    r"\d+\.\d{4,}(?:e-?\d+)?", lambda m: sig3(float(m.group())), str(text)
)
templates.env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, default=str)

router = APIRouter(include_in_schema=False)
CSRF_MISMATCH = (
    "this form's security token is missing or out of date, so nothing was changed; "
    "reload the page and try again"
)


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    """A page, with the double-submit CSRF cookie when this browser had none yet. No page
    may be framed by another site (its buttons could be clicked through a decoy)."""
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    token = getattr(request.state, "new_csrf_cookie", None)
    if token:
        settings = request.app.state.settings
        response.set_cookie(
            CSRF_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=cookie_secure(request, settings),
        )
    return response


def refused(request: Request, status_code: int, message: str) -> HTMLResponse:
    return render(request, "error.html", {"status": status_code, "message": message}, status_code)


# Columns of the leaderboard table: (label, metric it sorts by, or None).
COLUMNS = (
    ("#", None),
    ("configuration", None),
    ("runs", "n_runs"),
    ("steps→target", "steps"),
    ("reached", "reached_rate"),
    ("final loss", "final_loss"),
    ("test acc", "test_accuracy"),
    ("plateau", "plateau_fraction"),
    ("diverged", "divergence_rate"),
    ("verdicts", None),
    ("runs", None),
)
# The settings of a configuration, in the order the table names them (config summaries).
SETTINGS = ("task", "architecture", "optimizer", "init", "normalization", "grad_clip")
ALL_TASKS = ""  # ?task= (empty): every task ranked together, as the API does by default


@router.get("/", response_class=HTMLResponse)
def leaderboard_view(request: Request, session: SessionDep) -> HTMLResponse:
    """One task at a time: without ?task the task with the most results (the picker lists
    every task with results; ?task= ranks them all together, the API's default)."""
    params = dict(request.query_params)
    tasks = db_pages.results_per_task(session=session)
    all_tasks = params.get("task") == ALL_TASKS
    if "task" not in params and tasks:
        params["task"] = tasks[0][0]
    keep = {"task": ALL_TASKS} if all_tasks else {}  # so links keep "all tasks"
    context: dict[str, Any] = {
        "columns": COLUMNS,
        "metrics": METRIC_HELP,
        "tasks": tasks,
        "task": None if all_tasks else params.get("task"),
        "keep": keep,
        "architectures": sorted(ARCH_INPUT_KINDS),
        "steps_text": steps_text,
        "form": params,
        "owners": db_auth.owner_names(session=session),
    }
    try:
        query = LeaderboardQuery.model_validate(params)
    except ValidationError as e:
        problems = [f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in e.errors()]
        context.update(query=None, page=None, errors=problems)
        return render(request, "leaderboard.html", context, status_code=422)
    page = leaderboard_page(session=session, query=query)
    direction = query.order or METRICS[query.metric]
    sorts: dict[str, tuple[str, str]] = {}
    for _, metric in COLUMNS:
        if metric == query.metric:  # the active column: a click flips the direction
            flipped = "desc" if direction == "asc" else "asc"
            arrow = "▲" if direction == "asc" else "▼"
            sorts[metric] = (_self(request, query, metric=metric, order=flipped, **keep), arrow)
        elif metric is not None:
            sorts[metric] = (_self(request, query, metric=metric, order=None, **keep), "")
    summaries = [row.summary | {"task": row.task} for row in page.data]
    differing = [k for k in SETTINGS if len({str(s.get(k)) for s in summaries}) > 1]
    shared = {k: summaries[0].get(k) for k in SETTINGS if k not in differing} if summaries else {}
    context.update(
        query=query,
        page=page,
        errors=[],
        sorts=sorts,
        direction=direction,
        differing=differing,
        shared=shared,
    )
    return render(request, "leaderboard.html", context)


def _self(request: Request, query: LeaderboardQuery, **changes: Any) -> str:
    url = request.url_for("leaderboard_view")
    return str(url.include_query_params(**query.params(offset=None, **changes)))


@router.get("/sweeps/{sweep_id}", response_class=HTMLResponse)
def sweep_view(
    request: Request, sweep: SweepDep, session: SessionDep, identity: PageIdentity
) -> HTMLResponse:
    counts = queries.run_counts(session=session, sweep_ids=[sweep.id])[sweep.id]
    runs, _ = queries.list_runs(session=session, sweep_id=sweep.id, offset=0, limit=sweep.n_runs)
    view = sweep_public(sweep, counts, detail=True)
    full = identity.has("admin")
    context = {
        "sweep": view,
        "runs": [run_list_item(r, full_error=full) for r in runs],
        "devices": devices_of_sweep(session=session, sweep_id=sweep.id),
        "can_cancel": identity.may_change(sweep.owner_id)
        and view.status not in ("finished", "cancelled"),
    }
    return render(request, "sweep.html", context)


@router.post("/sweeps/{sweep_id}/cancel", response_class=HTMLResponse)
def cancel_sweep_form(
    request: Request,
    sweep: SweepDep,
    session: SessionDep,
    identity: PageIdentity,
    form: FormFields,
) -> Response:
    """The sweep page's cancel button: a form with the page's CSRF token. A post without a
    matching token (e.g. from another site) changes nothing."""
    if not csrf_ok(request, identity, form.get("csrf_token")):
        return refused(request, 403, CSRF_MISMATCH)
    if not identity.may_change(sweep.owner_id):
        return refused(
            request,
            403,
            f"sweep {sweep.id} belongs to {sweep.owner}; only its owner or an admin may "
            f"cancel it (you are {identity.name}, {identity.role})",
        )
    cancel_sweep(session=session, sweep=sweep, identity=identity)
    session.commit()  # acknowledged means committed
    return RedirectResponse(str(request.url_for("sweep_view", sweep_id=sweep.id)), 303)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_view(
    request: Request, run: RunDep, session: SessionDep, identity: PageIdentity
) -> HTMLResponse:
    sweep = queries.get_sweep(session=session, sweep_id=run.sweep_id)
    context = {
        "run": run_list_item(run, full_error=identity.has("admin")),
        "config": run.config,
        "result": run.result,
        "sweep": sweep,
        "diagnosis": (run.result.diagnosis if run.result else None) or None,
        "segments": ((run.result.plateaus or {}).get("segments", []) if run.result else []),
        "activation_stats": queries.activation_stats(session=session, run=run),
        "probes": queries.list_probes(session=session, run=run),
    }
    return render(request, "run.html", context)


def _run_id(text: str) -> bool:
    # isdigit() alone admits other scripts' digits; ten digits bound int()'s work.
    return text.isascii() and text.isdigit() and len(text) <= 10 and 1 <= int(text) <= MAX_ID


@router.get("/compare", response_class=HTMLResponse)
def compare_view(
    request: Request,
    session: SessionDep,
    runs: str = Query(..., max_length=1000, description="comma-separated run ids, e.g. 3,7,12"),
) -> HTMLResponse:
    parts = [part.strip() for part in runs.split(",") if part.strip()]
    if not 1 <= len(parts) <= 20:
        raise HTTPException(422, f"compare takes 1 to 20 runs, got {len(parts)}")
    if not all(_run_id(part) for part in parts):
        raise HTTPException(422, f"runs must be comma-separated run ids, got {runs[:200]!r}")
    ids = [int(part) for part in parts]
    found = [queries.get_run(session=session, run_id=i) for i in ids]
    missing = [i for i, r in zip(ids, found, strict=True) if r is None]
    if missing:
        raise HTTPException(404, f"run(s) not found: {', '.join(map(str, missing))}")
    items = [run_list_item(r) for r in found if r is not None]
    return render(request, "compare.html", {"runs": items})


def get_study(study_id: StudyId, session: SessionDep) -> Study:
    study = session.get(Study, study_id)
    if study is None:
        raise HTTPException(404, f"study {study_id} not found")
    return study


StudyDep = Annotated[Study, Depends(get_study)]


@router.get("/schedules/{schedule_id}", response_class=HTMLResponse)
def schedule_view(
    request: Request, schedule: ScheduleDep, session: SessionDep, identity: PageIdentity
) -> HTMLResponse:
    """A schedule's nights as columns and its configurations as rows (each cell: the
    night's median steps to target over its seeds, their range, divergences, the verdicts),
    its alerts, its history of edits, and the trend plot."""
    from db.models import ScheduleAlert, ScheduleEvent
    from service.nightwatch import history
    from service.webhooks import shown_url

    context = {
        "schedule": schedule,
        "webhook": schedule.webhook_url
        if identity.may_change(schedule.owner_id)
        else shown_url(schedule.webhook_url),
        "history": history(session, schedule.id),
        "events": session.scalars(
            select(ScheduleEvent)
            .where(ScheduleEvent.schedule_id == schedule.id)
            .order_by(ScheduleEvent.id)
        ).all(),
        "alerts": session.scalars(
            select(ScheduleAlert)
            .where(ScheduleAlert.schedule_id == schedule.id)
            .order_by(ScheduleAlert.firing_id.desc(), ScheduleAlert.id)
            .limit(100)
        ).all(),
    }
    return render(request, "schedule.html", context)


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_view(
    request: Request, study: StudyDep, session: SessionDep, identity: PageIdentity
) -> HTMLResponse:
    can_cancel = identity.may_change(study.owner_id) and study.state == "running"
    url = request.app.state.settings.database_url
    doc = study_document(session=session, row=study, url=url)
    params = list(dict.fromkeys(k for t in doc["trials"] for k in t["params"]))
    context = {"study": study, "doc": doc, "params": params, "can_cancel": can_cancel}
    return render(request, "study.html", context)


@router.post("/studies/{study_id}/cancel", response_class=HTMLResponse)
def cancel_study_form(
    request: Request,
    study: StudyDep,
    session: SessionDep,
    identity: PageIdentity,
    form: FormFields,
) -> Response:
    """The study page's cancel button (as the sweep page's)."""
    if not csrf_ok(request, identity, form.get("csrf_token")):
        return refused(request, 403, CSRF_MISMATCH)
    if not identity.may_change(study.owner_id):
        return refused(
            request,
            403,
            f"study {study.id} belongs to {study.owner}; only its owner or an admin may "
            f"cancel it (you are {identity.name}, {identity.role})",
        )
    if study.state == "running":
        studies.cancel(session=session, study=study, identity=identity)
        session.commit()
    return RedirectResponse(str(request.url_for("study_view", study_id=study.id)), 303)
