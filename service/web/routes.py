"""The pages: `/` leaderboard, `/sweeps/{id}`, `/runs/{id}`, `/compare?runs=…`,
`/studies/{id}`. Tables are rendered here; plots are drawn in the browser by static/plot.js
from the JSON endpoints, so a page URL is also a stable, shareable view of the data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from db import queries
from db.leaderboard import METRICS, devices_of_sweep
from db.models import MAX_ID, Study
from service.api.deps import RunDep, SessionDep, StudyId, SweepDep
from service.api.views import run_list_item, sweep_public
from service.reports import METRIC_HELP, LeaderboardQuery, leaderboard_page, steps_text
from workers.config import ARCH_INPUT_KINDS, TASK_INPUT_KIND

HERE = Path(__file__).parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["num"] = lambda v, spec=".4g": "—" if v is None else format(v, spec)
templates.env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, default=str)

router = APIRouter(include_in_schema=False)

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
    ("software", None),
    ("runs", None),
)


@router.get("/", response_class=HTMLResponse)
def leaderboard_view(request: Request, session: SessionDep) -> HTMLResponse:
    params = dict(request.query_params)
    context: dict[str, Any] = {
        "columns": COLUMNS,
        "metrics": METRIC_HELP,
        "tasks": sorted(TASK_INPUT_KIND),
        "architectures": sorted(ARCH_INPUT_KINDS),
        "steps_text": steps_text,
        "form": params,
    }
    try:
        query = LeaderboardQuery.model_validate(params)
    except ValidationError as e:
        problems = [f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in e.errors()]
        context.update(query=None, page=None, errors=problems)
        return templates.TemplateResponse(request, "leaderboard.html", context, status_code=422)
    page = leaderboard_page(session=session, query=query)
    direction = query.order or METRICS[query.metric]
    sorts: dict[str, tuple[str, str]] = {}
    for _, metric in COLUMNS:
        if metric == query.metric:  # the active column: a click flips the direction
            flipped = "desc" if direction == "asc" else "asc"
            arrow = "▲" if direction == "asc" else "▼"
            sorts[metric] = (_self(request, query, metric=metric, order=flipped), arrow)
        elif metric is not None:
            sorts[metric] = (_self(request, query, metric=metric, order=None), "")
    context.update(query=query, page=page, errors=[], sorts=sorts, direction=direction)
    return templates.TemplateResponse(request, "leaderboard.html", context)


def _self(request: Request, query: LeaderboardQuery, **changes: Any) -> str:
    url = request.url_for("leaderboard_view")
    return str(url.include_query_params(**query.params(offset=None, **changes)))


@router.get("/sweeps/{sweep_id}", response_class=HTMLResponse)
def sweep_view(request: Request, sweep: SweepDep, session: SessionDep) -> HTMLResponse:
    counts = queries.run_counts(session=session, sweep_ids=[sweep.id])[sweep.id]
    runs, _ = queries.list_runs(session=session, sweep_id=sweep.id, offset=0, limit=sweep.n_runs)
    context = {
        "sweep": sweep_public(sweep, counts, detail=True),
        "runs": [run_list_item(r) for r in runs],
        "devices": devices_of_sweep(session=session, sweep_id=sweep.id),
    }
    return templates.TemplateResponse(request, "sweep.html", context)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_view(request: Request, run: RunDep, session: SessionDep) -> HTMLResponse:
    sweep = queries.get_sweep(session=session, sweep_id=run.sweep_id)
    context = {
        "run": run_list_item(run),
        "config": run.config,
        "result": run.result,
        "sweep": sweep,
        "diagnosis": (run.result.diagnosis if run.result else None) or None,
        "segments": ((run.result.plateaus or {}).get("segments", []) if run.result else []),
        "activation_stats": queries.activation_stats(session=session, run=run),
        "probes": queries.list_probes(session=session, run=run),
    }
    return templates.TemplateResponse(request, "run.html", context)


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
    return templates.TemplateResponse(request, "compare.html", {"runs": items})


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_view(request: Request, study_id: StudyId, session: SessionDep) -> HTMLResponse:
    study = session.get(Study, study_id)
    if study is None:
        raise HTTPException(404, f"study {study_id} not found")
    return templates.TemplateResponse(request, "study.html", {"study": study})
