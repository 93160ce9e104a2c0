from __future__ import annotations

from typing import Annotated

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
from service.schemas import (
    INVALID,
    NOT_FOUND,
    StudiesPublic,
    StudyCancelled,
    StudyCreated,
    StudyDetail,
    StudyPublic,
)
from service.study_spec import StudySpec

router = APIRouter(prefix="/studies", tags=["studies"])


def get_study(study_id: StudyId, session: SessionDep) -> Study:
    row = session.get(Study, study_id)
    if row is None:
        raise HTTPException(404, f"study {study_id} not found")
    return row


StudyDep = Annotated[Study, Depends(get_study)]


@router.post("", status_code=201, dependencies=[Depends(limit_submissions)], responses=INVALID)
def create_study(
    spec: StudySpec,
    identity: MemberIdentity,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> StudyCreated:
    """Start an Optuna study (the body: service/study_spec.py). Its trials run as ordinary
    runs of one sweep, `parallelism` at a time."""
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
    return StudyCreated(
        id=row.id,
        trials=spec.n_trials,
        sweep_id=row.sweep_id,
        optuna_study_name=row.optuna_study_name,
        url=str(request.url_for("read_study", study_id=row.id)),
    )


@router.get("", responses=INVALID)
def read_studies(
    session: SessionDep,
    offset: Offset = 0,
    limit: int = Query(50, ge=1, le=500, description="studies per page"),
) -> StudiesPublic:
    """The studies, newest first."""
    rows, count = db_studies.list_studies(session=session, offset=offset, limit=limit)
    data = [StudyPublic.model_validate(r, from_attributes=True) for r in rows]
    return StudiesPublic(data=data, count=count)


@router.get("/{study_id}", responses=NOT_FOUND | INVALID)
def read_study(row: StudyDep, session: SessionDep, settings: SettingsDep) -> StudyDetail:
    """The study: state, trials with their run ids, the best trial (or the Pareto front),
    parameter importances."""
    return StudyDetail.model_validate(
        studies.describe(session=session, row=row, url=settings.database_url)
    )


@router.post("/{study_id}/cancel", responses=NOT_FOUND | INVALID)
def cancel_study(identity: MemberIdentity, row: StudyDep, session: SessionDep) -> StudyCancelled:
    """Cancel a running study and its trial runs: its owner or an admin (403 otherwise).
    Cancelling a finished or cancelled study changes nothing and answers its state."""
    ensure_may_change(identity, row.owner_user, f"study {row.id}", "cancel")
    if row.state == "running":
        studies.cancel(session=session, study=row, identity=identity)
    return StudyCancelled(id=row.id, state=row.state)
