from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from db import queries, queue
from service.api.deps import Offset, SessionDep, SettingsDep, SweepDep
from service.api.identity import request_team
from service.api.views import run_list_item, sweep_public
from service.limits import check_runs, reserve_queue, sweep_runs
from service.ratelimit import limit_submissions
from service.schemas import (
    RunsPublic,
    RunStatus,
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


@router.post("", status_code=201, dependencies=[Depends(limit_submissions)])
def create_sweep(
    spec: SweepCreate, session: SessionDep, settings: SettingsDep, request: Request
) -> SweepCreated:
    check_runs(sweep_runs(spec), settings)
    team = request_team(request)
    reserve_queue(session=session, settings=settings, team=team, adding=spec.grid_size())
    sweep = submit_sweep(
        session=session, spec=spec, source="api", max_attempts=settings.max_attempts
    )
    return SweepCreated(
        id=sweep.id, runs=sweep.n_runs, url=str(request.url_for("read_sweep", sweep_id=sweep.id))
    )


@router.get("")
def read_sweeps(
    session: SessionDep, offset: Offset = 0, limit: int = Query(50, ge=1, le=500)
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
    offset: Offset = 0,
    limit: int = Query(100, ge=1, le=1000),
    status: RunStatus | None = None,
) -> RunsPublic:
    runs, count = queries.list_runs(
        session=session, sweep_id=sweep.id, offset=offset, limit=limit, status=status
    )
    return RunsPublic(data=[run_list_item(r) for r in runs], count=count)


@router.post("/{sweep_id}/cancel")
def cancel_sweep(sweep: SweepDep, session: SessionDep) -> SweepPublic:
    queue.cancel_sweep(session=session, sweep_id=sweep.id)
    session.flush()
    session.refresh(sweep)
    counts = queries.run_counts(session=session, sweep_ids=[sweep.id])[sweep.id]
    return sweep_public(sweep, counts)


@router.delete("/{sweep_id}", responses={409: {"description": "the sweep holds a study"}})
def delete_sweep(sweep: SweepDep, session: SessionDep) -> SweepDeleted:
    """Delete the sweep with its runs, curves, probes and results; the leaderboard's sums
    of the configurations it had results in are recomputed. Its running runs stop at their
    next write to the database."""
    # wired at merge: owner or admin only (403 otherwise), and an audit record of the delete.
    if sweep.source == "study":
        raise HTTPException(409, f"sweep {sweep.id} holds the trials of a study; cancel the study")
    deleted = queue.delete_sweep(session=session, sweep_id=sweep.id)
    if deleted is None:  # deleted by another request since the lookup
        raise HTTPException(404, f"sweep {sweep.id} not found")
    session.commit()  # acknowledged means committed: before the answer, not after
    return SweepDeleted(id=sweep.id, runs=deleted.runs, configurations=deleted.configurations)


@router.post(
    "/{sweep_id}/retry",
    dependencies=[Depends(limit_submissions)],
    responses={409: {"description": "the sweep is cancelled or holds a study"}},
)
def retry_sweep(
    sweep: SweepDep, session: SessionDep, settings: SettingsDep, request: Request
) -> SweepRetried:
    """Queue the sweep's failed runs again, each with a fresh allowance of attempts (the
    spec's max_attempts, else PLATEAU_MAX_ATTEMPTS); answers how many were queued."""
    # wired at merge: owner or admin only (403 otherwise), and an audit record of the retry.
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
    session.commit()  # acknowledged means committed: before the answer, not after
    return SweepRetried(id=sweep.id, requeued=requeued)
