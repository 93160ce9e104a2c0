from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from db import studies as db_studies
from db.models import Study
from db.session import session_scope
from service import studies
from service.api.auth import MemberIdentity, ensure_may_change, spec_owner
from service.api.deps import Offset, SessionDep, SettingsDep, StudyId
from service.api.identity import request_team
from service.limits import check_runs, reserve_queue, study_runs
from service.ratelimit import limit_submissions
from service.study_spec import StudySpec

router = APIRouter(prefix="/studies", tags=["studies"])


def get_study(study_id: StudyId, session: SessionDep) -> Study:
    row = session.get(Study, study_id)
    if row is None:
        raise HTTPException(404, f"study {study_id} not found")
    return row


StudyDep = Annotated[Study, Depends(get_study)]


@router.post("", status_code=201, dependencies=[Depends(limit_submissions)])
def create_study(
    spec: StudySpec,
    identity: MemberIdentity,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> dict[str, Any]:
    owner = spec_owner(identity, spec.owner)
    check_runs(study_runs(spec), settings)
    # A study keeps `parallelism` trials queued or running at a time. Checked in a
    # transaction of its own: create_study lets Optuna write first, before `session` takes
    # SQLite's write lock (so concurrent creations may pass by up to `parallelism` each).
    in_flight = min(spec.parallelism, spec.n_trials)
    with session_scope(settings.database_url) as check:
        reserve_queue(
            session=check, settings=settings, team=request_team(request), adding=in_flight
        )
    row = studies.create_study(session=session, spec=spec, settings=settings, owner=owner)
    return {
        "id": row.id,
        "trials": spec.n_trials,
        "sweep_id": row.sweep_id,
        "optuna_study_name": row.optuna_study_name,
        "url": str(request.url_for("read_study", study_id=row.id)),
    }


@router.get("")
def read_studies(
    session: SessionDep, offset: Offset = 0, limit: int = Query(50, ge=1, le=500)
) -> dict[str, Any]:
    rows, count = db_studies.list_studies(session=session, offset=offset, limit=limit)
    data = [
        {
            "id": r.id,
            "name": r.name,
            "owner": r.owner,
            "state": r.state,
            "optuna_study_name": r.optuna_study_name,
            "sweep_id": r.sweep_id,
            "created_at": r.created_at,
        }
        for r in rows
    ]
    return {"data": data, "count": count}


@router.get("/{study_id}")
def read_study(row: StudyDep, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    return studies.describe(session=session, row=row, url=settings.database_url)


@router.post("/{study_id}/cancel")
def cancel_study(identity: MemberIdentity, row: StudyDep, session: SessionDep) -> dict[str, Any]:
    """Cancel a running study: its owner or an admin (403 otherwise)."""
    ensure_may_change(identity, row.owner_user, f"study {row.id}", "cancel")
    if row.state == "running":
        studies.cancel(session=session, study=row, identity=identity)
    return {"id": row.id, "state": row.state}
