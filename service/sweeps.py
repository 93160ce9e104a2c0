"""Submitting a sweep: expand the spec and enqueue it, in one transaction."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib import metadata
from typing import Any

from sqlalchemy.orm import Session

from db import queries, queue
from db.models import Sweep, User
from service.api.views import run_list_item, sweep_public
from service.auth import Identity
from service.spec import SweepSpec
from workers.config import RunConfig


def software_versions() -> dict[str, str]:
    """Versions that decide the numbers, read without importing torch."""
    versions = {"python": platform.python_version()}
    for dist in ("plateau-bench", "torch", "ray"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def queue_rows(configs: Iterable[RunConfig]) -> list[tuple[dict[str, Any], str, str]]:
    """(config document, config_hash, config_key) of each run, as db.queue.enqueue_sweep takes."""
    return [(c.model_dump(mode="json"), c.config_hash(), c.config_key()) for c in configs]


def submit_sweep(
    *,
    session: Session,
    spec: SweepSpec,
    source: str,
    max_attempts: int,
    owner: User | str | None = None,
) -> Sweep:
    """Expand and enqueue. `owner`: the key's user (service.api.auth.spec_owner); a name, or
    None for the spec's `owner`, stands for a legacy user (single-user mode, the CLI)."""
    runs = queue_rows(spec.expand())
    return queue.enqueue_sweep(
        session=session,
        name=spec.name,
        owner=owner if owner is not None else spec.owner or "anonymous",
        spec=spec.model_dump(mode="json"),
        runs=runs,
        max_attempts=spec.max_attempts or max_attempts,
        source=source,
        software=software_versions(),
    )


def cancel_sweep(*, session: Session, sweep: Sweep, identity: Identity) -> int:
    """Cancel the sweep's queued and running runs and record who did; how many."""
    n = queue.cancel_sweep(session=session, sweep_id=sweep.id)
    identity.record(
        session=session,
        action="sweep.cancel",
        target=f"sweep:{sweep.id}",
        detail={"runs_cancelled": n, "owner": sweep.owner},
    )
    return n


def sweep_document(
    *, session: Session, sweep_id: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(GET /api/v1/sweeps/{id}, the "data" of its runs) as JSON-ready dicts, every run and
    its full error (read from the database: its admin). Raises LookupError when there is no
    such sweep."""
    sweep = queries.get_sweep(session=session, sweep_id=sweep_id)
    if sweep is None:
        raise LookupError(f"sweep {sweep_id} not found")
    counts = queries.run_counts(session=session, sweep_ids=[sweep_id])[sweep_id]
    runs, _ = queries.list_runs(session=session, sweep_id=sweep_id, offset=0, limit=sweep.n_runs)
    return (
        sweep_public(sweep, counts).model_dump(mode="json"),
        [run_list_item(r, full_error=True).model_dump(mode="json") for r in runs],
    )


def sweep_from_db(url: str, sweep_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """sweep_document on the database at `url` (the CLI without --url)."""
    from db.migrate import ensure_current
    from db.session import read_scope

    ensure_current(url, migrate=False)
    with read_scope(url) as session:
        return sweep_document(session=session, sweep_id=sweep_id)
