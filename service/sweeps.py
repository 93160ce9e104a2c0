"""Submitting a sweep: expand the spec and enqueue it, in one transaction."""

from __future__ import annotations

import platform
from importlib import metadata

from sqlalchemy.orm import Session

from db import queue
from db.models import Sweep
from service.spec import SweepSpec


def software_versions() -> dict[str, str]:
    """Versions that decide the numbers, read without importing torch."""
    versions = {"python": platform.python_version()}
    for dist in ("plateau-bench", "torch", "ray"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def submit_sweep(*, session: Session, spec: SweepSpec, source: str, max_attempts: int) -> Sweep:
    runs = [(c.model_dump(mode="json"), c.config_hash(), c.config_key()) for c in spec.expand()]
    return queue.enqueue_sweep(
        session=session,
        name=spec.name,
        owner=spec.owner,
        spec=spec.model_dump(mode="json"),
        runs=runs,
        max_attempts=spec.max_attempts or max_attempts,
        source=source,
        software=software_versions(),
    )
