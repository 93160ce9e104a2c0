"""A run as one JSON document (GET /api/v1/runs/{id} and its probes), for the pages'
figures and `plateau plot`, from a session or straight from the database (the CLI)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db import queries
from service.api.views import result_dict, run_public
from service.schemas import ProbePublic, RunDetail


def run_document(*, session: Session, run_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(GET /api/v1/runs/{id}, GET /api/v1/runs/{id}/probes "data") as JSON-ready dicts.

    Raises LookupError when there is no such run."""
    run = queries.get_run(session=session, run_id=run_id)
    if run is None:
        raise LookupError(f"run {run_id} not found")
    detail = RunDetail(
        **run_public(run, full_error=True),  # read from the database: its admin
        config=run.config,
        result=result_dict(run),
        curves=queries.run_curves(session=session, run=run),
        activation_stats=queries.activation_stats(session=session, run=run),
        probes_url=f"/api/v1/runs/{run_id}/probes",
    )
    probes = [
        ProbePublic.model_validate(p).model_dump(mode="json")
        for p in queries.list_probes(session=session, run=run)
    ]
    return detail.model_dump(mode="json"), probes


def run_from_db(url: str, run_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from db.migrate import ensure_current
    from db.session import read_scope

    ensure_current(url, migrate=False)
    with read_scope(url) as session:
        return run_document(session=session, run_id=run_id)
