from __future__ import annotations

from fastapi import APIRouter, Request

from db import queries
from service.api.auth import CurrentIdentity
from service.api.deps import RunDep, RunsQueryDep, SessionDep
from service.api.views import result_dict, run_public, runs_page
from service.schemas import (
    INVALID,
    NOT_FOUND,
    ProbePublic,
    ProbesPublic,
    RunDetail,
    RunsPublic,
)

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get("", responses=INVALID)
def read_runs(
    session: SessionDep,
    identity: CurrentIdentity,
    query: RunsQueryDep,
) -> RunsPublic:
    """The runs of every sweep, newest first (one sweep's, in grid order: /sweeps/{id}/runs)."""
    full = identity.has("admin")  # tracebacks for admins, the message for others
    return runs_page(session=session, sweep_id=None, query=query, full_error=full)


@router.get("/{run_id}", responses=NOT_FOUND | INVALID)
def read_run(
    run: RunDep, session: SessionDep, request: Request, identity: CurrentIdentity
) -> RunDetail:
    """The run: status, config, result with its diagnosis, per-step curves, activation
    statistics."""
    return RunDetail(
        **run_public(run, full_error=identity.has("admin")),
        config=run.config,
        result=result_dict(run),
        curves=queries.run_curves(session=session, run=run),
        activation_stats=queries.activation_stats(session=session, run=run),
        probes_url=str(request.url_for("read_probes", run_id=run.id)),
    )


@router.get("/{run_id}/probes", responses=NOT_FOUND | INVALID)
def read_probes(run: RunDep, session: SessionDep) -> ProbesPublic:
    """The run's landscape probes (Hessian eigenvalues, trace, density, slices), by step."""
    probes = queries.list_probes(session=session, run=run)
    return ProbesPublic(data=[ProbePublic.model_validate(p) for p in probes], count=len(probes))
