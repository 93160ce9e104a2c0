from __future__ import annotations

from fastapi import APIRouter, Query, Request

from db import queries
from service import sweeps
from service.api.auth import CurrentIdentity, MemberIdentity, ensure_may_change, spec_owner
from service.api.deps import SessionDep, SettingsDep, SweepDep
from service.api.views import run_list_item, sweep_public
from service.schemas import (
    RunsPublic,
    SweepCreate,
    SweepCreated,
    SweepDetail,
    SweepPublic,
    SweepsPublic,
)
from service.sweeps import submit_sweep

router = APIRouter(prefix="/sweeps", tags=["sweeps"])


@router.post("", status_code=201)
def create_sweep(
    spec: SweepCreate,
    identity: MemberIdentity,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> SweepCreated:
    sweep = submit_sweep(
        session=session,
        spec=spec,
        source="api",
        max_attempts=settings.max_attempts,
        owner=spec_owner(identity, spec.owner),
    )
    return SweepCreated(
        id=sweep.id, runs=sweep.n_runs, url=str(request.url_for("read_sweep", sweep_id=sweep.id))
    )


@router.get("")
def read_sweeps(
    session: SessionDep, offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=500)
) -> SweepsPublic:
    sweeps, count = queries.list_sweeps(session=session, offset=offset, limit=limit)
    counts = queries.run_counts(session=session, sweep_ids=[s.id for s in sweeps])
    return SweepsPublic(data=[sweep_public(s, counts[s.id]) for s in sweeps], count=count)


@router.get("/{sweep_id}")
def read_sweep(sweep: SweepDep, session: SessionDep) -> SweepDetail:
    counts = queries.run_counts(session=session, sweep_ids=[sweep.id])[sweep.id]
    view = sweep_public(sweep, counts, detail=True)
    assert isinstance(view, SweepDetail)
    return view


@router.get("/{sweep_id}/runs")
def read_sweep_runs(
    sweep: SweepDep,
    session: SessionDep,
    identity: CurrentIdentity,
    offset: int = Query(0, ge=0),
    limit: int = Query(100, ge=1, le=1000),
    status: str | None = None,
) -> RunsPublic:
    runs, count = queries.list_runs(
        session=session, sweep_id=sweep.id, offset=offset, limit=limit, status=status
    )
    full = identity.has("admin")  # tracebacks for admins, the message for others
    return RunsPublic(data=[run_list_item(r, full_error=full) for r in runs], count=count)


@router.post("/{sweep_id}/cancel")
def cancel_sweep(identity: MemberIdentity, sweep: SweepDep, session: SessionDep) -> SweepPublic:
    """Cancel the sweep's queued and running runs: its owner or an admin (403 otherwise)."""
    ensure_may_change(identity, sweep.owner_user, f"sweep {sweep.id}", "cancel")
    sweeps.cancel_sweep(session=session, sweep=sweep, identity=identity)
    session.flush()
    session.refresh(sweep)
    counts = queries.run_counts(session=session, sweep_ids=[sweep.id])[sweep.id]
    return sweep_public(sweep, counts)
