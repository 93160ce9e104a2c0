"""Typed dependencies: settings, the request's unit of work, and 404-checked lookups."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from db import queries
from db.models import MAX_ID, Run, Sweep
from db.session import open_session
from service.schemas import RunStatusFilter
from service.settings import Settings

# Methods that only read. Every other method (POST, PUT, PATCH, DELETE) writes.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(request: Request, settings: SettingsDep) -> Iterator[Session]:
    """The request's unit of work, chosen by its method.

    A read (GET, HEAD) gets a read-only session: no commit, no SQLite write lock, and a write
    through it fails at once. Any other method gets a write session that is committed when
    the route returns and *before* the response is sent (`scope="function"` below): a commit
    that fails becomes the error response (5xx), never a 2xx for a write that did not happen.
    FastAPI runs the cleanup of a default ("request") scoped dependency after the response
    is sent, which is too late for a commit.
    """
    write = request.method not in READ_METHODS
    session = open_session(settings.database_url, read_only=not write)
    try:
        yield session
        if write:
            session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# scope="function": the cleanup above (the commit) runs before the response is sent.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

# Ids and offsets past the database's INTEGER answer 422 instead of overflowing in SQL.
SweepId = Annotated[int, Path(ge=1, le=MAX_ID, description="a sweep's id")]
RunId = Annotated[int, Path(ge=1, le=MAX_ID, description="a run's id")]
StudyId = Annotated[int, Path(ge=1, le=MAX_ID, description="a study's id")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="rows to skip")]


class RunsQuery(BaseModel):
    """The page and filter of a list of runs (other query parameters are ignored)."""

    offset: int = Field(0, ge=0, le=MAX_ID, description="rows to skip")
    limit: int = Field(100, ge=1, le=1000, description="runs per page")
    status: RunStatusFilter | None = Field(None, description="only runs with this status")


RunsQueryDep = Annotated[RunsQuery, Query()]


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
