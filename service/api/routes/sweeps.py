from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from db import queries, queue
from service import sweeps
from service.api.auth import CurrentIdentity, MemberIdentity, ensure_may_change, spec_owner
from service.api.deps import (
    Offset,
    RunsQueryDep,
    SessionDep,
    SettingsDep,
    SweepDep,
)
from service.api.identity import request_team
from service.api.views import runs_page, sweep_public
from service.limits import check_runs, reserve_queue, sweep_runs
from service.ratelimit import limit_submissions
from service.schemas import (
    CONFLICT,
    INVALID,
    NOT_FOUND,
    RunsPublic,
    SweepCreate,
    SweepCreated,
    SweepDeleted,
    SweepDetail,
    SweepPublic,
    SweepRetried,
    SweepsPublic,
)
from service.sweeps import submit_sweep

router = APIRouter(prefix="/sweeps", tags=["sweeps"])


@router.post("", status_code=201, dependencies=[Depends(limit_submissions)], responses=INVALID)
def create_sweep(
    spec: SweepCreate,
    identity: MemberIdentity,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> SweepCreated:
    """Queue a sweep: one run per point of the spec's grid (the Cartesian product of its
    list-valued axes). Axis entries may be written short, as in the README."""
    check_runs(sweep_runs(spec), settings)
    team = request_team(request)
    reserve_queue(session=session, settings=settings, team=team, adding=spec.grid_size())
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


@router.get("", responses=INVALID)
def read_sweeps(
    session: SessionDep,
    offset: Offset = 0,
    limit: int = Query(50, ge=1, le=500, description="sweeps per page"),
) -> SweepsPublic:
    """The sweeps, newest first, with their runs counted by status."""
    sweeps, count = queries.list_sweeps(session=session, offset=offset, limit=limit)
    counts = queries.run_counts(session=session, sweep_ids=[s.id for s in sweeps])
    return SweepsPublic(data=[sweep_public(s, counts[s.id]) for s in sweeps], count=count)


@router.get("/{sweep_id}", responses=NOT_FOUND | INVALID)
def read_sweep(sweep: SweepDep, session: SessionDep) -> SweepDetail:
    """The sweep, its runs counted by status, and its spec."""
    counts = queries.run_counts(session=session, sweep_ids=[sweep.id])[sweep.id]
    view = sweep_public(sweep, counts, detail=True)
    assert isinstance(view, SweepDetail)
    return view


@router.get("/{sweep_id}/runs", responses=NOT_FOUND | INVALID)
def read_sweep_runs(
    sweep: SweepDep,
    session: SessionDep,
    identity: CurrentIdentity,
    query: RunsQueryDep,
) -> RunsPublic:
    """The sweep's runs in grid order, with their results and verdicts once finished."""
    full = identity.has("admin")  # tracebacks for admins, the message for others
    return runs_page(session=session, sweep_id=sweep.id, query=query, full_error=full)


@router.post("/{sweep_id}/cancel", responses=NOT_FOUND | INVALID)
def cancel_sweep(identity: MemberIdentity, sweep: SweepDep, session: SessionDep) -> SweepPublic:
    """Cancel the sweep's queued and running runs: its owner or an admin (403 otherwise)."""
    ensure_may_change(identity, sweep.owner_user, f"sweep {sweep.id}", "cancel")
    sweeps.cancel_sweep(session=session, sweep=sweep, identity=identity)
    session.flush()
    session.refresh(sweep)
    counts = queries.run_counts(session=session, sweep_ids=[sweep.id])[sweep.id]
    return sweep_public(sweep, counts)


@router.delete("/{sweep_id}", responses=NOT_FOUND | CONFLICT | INVALID)
def delete_sweep(identity: MemberIdentity, sweep: SweepDep, session: SessionDep) -> SweepDeleted:
    """Delete the sweep with its runs, curves, probes and results; the leaderboard's sums
    of the configurations it had results in are recomputed. Its running runs stop at their
    next write to the database. Its owner or an admin (403 otherwise)."""
    ensure_may_change(identity, sweep.owner_user, f"sweep {sweep.id}", "delete")
    if sweep.source == "study":
        raise HTTPException(409, f"sweep {sweep.id} holds the trials of a study; cancel the study")
    sweep_id, owner = sweep.id, sweep.owner
    deleted = queue.delete_sweep(session=session, sweep_id=sweep_id)
    if deleted is None:  # deleted by another request since the lookup
        raise HTTPException(404, f"sweep {sweep_id} not found")
    identity.record(
        session=session,
        action="sweep.delete",
        target=f"sweep:{sweep_id}",
        detail={"runs": deleted.runs, "owner": owner},
    )
    session.commit()  # acknowledged means committed: before the answer, not after
    return SweepDeleted(id=sweep_id, runs=deleted.runs, configurations=deleted.configurations)


@router.post(
    "/{sweep_id}/retry",
    dependencies=[Depends(limit_submissions)],
    responses=NOT_FOUND | CONFLICT | INVALID,
)
def retry_sweep(
    identity: MemberIdentity,
    sweep: SweepDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> SweepRetried:
    """Queue the sweep's failed runs again, each with a fresh allowance of attempts (the
    spec's max_attempts, else PLATEAU_MAX_ATTEMPTS); answers how many were queued. Its
    owner or an admin (403 otherwise)."""
    ensure_may_change(identity, sweep.owner_user, f"sweep {sweep.id}", "retry")
    if sweep.source == "study":
        raise HTTPException(
            409,
            f"sweep {sweep.id} holds the trials of a study, which retries by asking for new trials",
        )
    failed = queries.run_counts(session=session, sweep_ids=[sweep.id])[sweep.id].get("failed", 0)
    if failed:
        team = request_team(request)
        reserve_queue(session=session, settings=settings, team=team, adding=failed)
    extra = sweep.spec.get("max_attempts") or settings.max_attempts
    requeued = queue.retry_failed_runs(session=session, sweep_id=sweep.id, extra_attempts=extra)
    identity.record(
        session=session,
        action="sweep.retry",
        target=f"sweep:{sweep.id}",
        detail={"runs_requeued": requeued, "owner": sweep.owner},
    )
    session.commit()  # acknowledged means committed: before the answer, not after
    return SweepRetried(id=sweep.id, requeued=requeued)
