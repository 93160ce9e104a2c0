"""Submitting a sweep: expand the spec and enqueue it, in one transaction."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib import metadata
from typing import Any

from sqlalchemy.orm import Session

from db import queue
from db.models import Sweep, User
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
