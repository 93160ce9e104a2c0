"""Typed dependencies: settings, a unit-of-work session, and 404-checked lookups."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request
from sqlalchemy.orm import Session

from db import queries
from db.models import MAX_ID, Run, Sweep
from db.session import session_scope
from service.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with session_scope(settings.database_url) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

# Ids and offsets past the database's INTEGER answer 422 instead of overflowing in SQL.
SweepId = Annotated[int, Path(ge=1, le=MAX_ID, description="a sweep's id")]
RunId = Annotated[int, Path(ge=1, le=MAX_ID, description="a run's id")]
StudyId = Annotated[int, Path(ge=1, le=MAX_ID, description="a study's id")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="rows to skip")]


def get_sweep(sweep_id: SweepId, session: SessionDep) -> Sweep:
    sweep = queries.get_sweep(session=session, sweep_id=sweep_id)
    if sweep is None:
        raise HTTPException(404, f"sweep {sweep_id} not found")
    return sweep


def get_run(run_id: RunId, session: SessionDep) -> Run:
    run = queries.get_run(session=session, run_id=run_id)
    if run is None:
        raise HTTPException(404, f"run {run_id} not found")
    return run


SweepDep = Annotated[Sweep, Depends(get_sweep)]
RunDep = Annotated[Run, Depends(get_run)]
