"""Read-side queries for the API, CLI and pages. Aggregation happens in SQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from db.models import TERMINAL_STATUSES, Probe, Run, RunMetric, RunResult, Sweep, User


def get_sweep(*, session: Session, sweep_id: int) -> Sweep | None:
    return session.get(Sweep, sweep_id)


def list_sweeps(*, session: Session, offset: int, limit: int) -> tuple[Sequence[Sweep], int]:
    count = session.scalar(select(func.count()).select_from(Sweep)) or 0
    rows = session.scalars(
        select(Sweep).order_by(Sweep.id.desc()).offset(offset).limit(limit)
    ).all()
    return rows, count


def run_counts(*, session: Session, sweep_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """{sweep_id: {status: n}} for the given sweeps, in one GROUP BY."""
    counts: dict[int, dict[str, int]] = {sid: {} for sid in sweep_ids}
    if not sweep_ids:
        return counts
    rows = session.execute(
        select(Run.sweep_id, Run.status, func.count())
        .where(Run.sweep_id.in_(sweep_ids))
        .group_by(Run.sweep_id, Run.status)
    ).all()
    for sweep_id, status, n in rows:
        counts[sweep_id][status] = n
    return counts


def unfinished_runs(*, session: Session, sweep_id: int) -> int:
    """Runs of the sweep still queued or running."""
    counts = run_counts(session=session, sweep_ids=[sweep_id])[sweep_id]
    return counts.get("queued", 0) + counts.get("running", 0)


def sweep_status(*, counts: dict[str, int], cancelled: bool) -> str:
    """queued | running | finished | cancelled, derived from the runs' statuses."""
    total = sum(counts.values())
    done = sum(counts.get(s, 0) for s in TERMINAL_STATUSES)
    if cancelled:
        return "cancelled"
    if total == done:
        return "finished"
    if counts.get("queued", 0) == total:
        return "queued"
    return "running"


def list_runs(
    *, session: Session, sweep_id: int | None, offset: int, limit: int, status: str | None = None
) -> tuple[Sequence[Run], int]:
    """A page of one sweep's runs in grid order, or (sweep_id None) of every sweep's, newest
    first; with `status`, only those."""
    where = [] if sweep_id is None else [Run.sweep_id == sweep_id]
    if status is not None:
        where.append(Run.status == status)
    count = session.scalar(select(func.count()).select_from(Run).where(*where)) or 0
    rows = session.scalars(
        select(Run)
        .options(selectinload(Run.result))
        .where(*where)
        .order_by(Run.grid_index if sweep_id is not None else Run.id.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return rows, count


def get_run(*, session: Session, run_id: int) -> Run | None:
    return session.scalars(
        select(Run).options(selectinload(Run.result)).where(Run.id == run_id)
    ).first()


def run_curves(*, session: Session, run: Run) -> dict[str, list[Any]]:
    """Per-step columns of the run's recorded attempt (or its latest attempt while running)."""
    attempt = run.result.attempt if run.result is not None else run.attempts
    rows = (
        session.execute(
            select(RunMetric)
            .where(RunMetric.run_id == run.id, RunMetric.attempt == attempt)
            .order_by(RunMetric.step)
        )
        .scalars()
        .all()
    )
    columns = (
        "step",
        "loss",
        "lr",
        "grad_norm",
        "update_norm",
        "param_norm",
        "clipped",
        "eval_loss",
        "eval_accuracy",
        "layer_grad_norms",
    )
    return {c: [getattr(r, c) for r in rows] for c in columns}


def activation_stats(*, session: Session, run: Run) -> list[dict[str, Any]]:
    """[{step, layers: {layer: {mean, std}}}] of the run's recorded attempt: step 0's are at
    initialization, the others at evaluation steps (workers/activations.py)."""
    attempt = run.result.attempt if run.result is not None else run.attempts
    rows = session.execute(
        select(RunMetric.step, RunMetric.activation_stats)
        .where(
            RunMetric.run_id == run.id,
            RunMetric.attempt == attempt,
            RunMetric.activation_stats.is_not(None),
        )
        .order_by(RunMetric.step)
    ).all()
    return [{"step": step, "layers": layers} for step, layers in rows if layers]


def list_probes(*, session: Session, run: Run) -> Sequence[Probe]:
    attempt = run.result.attempt if run.result is not None else run.attempts
    return session.scalars(
        select(Probe)
        .where(Probe.run_id == run.id, Probe.attempt == attempt)
        .order_by(Probe.step, Probe.id)
    ).all()


def results_of_sweep(*, session: Session, sweep_id: int) -> Sequence[tuple[Run, RunResult | None]]:
    """All runs of a sweep with their results, for the ranked table."""
    rows = session.execute(
        select(Run, RunResult)
        .outerjoin(RunResult, RunResult.run_id == Run.id)
        .where(Run.sweep_id == sweep_id)
        .order_by(Run.grid_index)
    ).all()
    return [(r, res) for r, res in rows]


def status_counts(*, session: Session) -> dict[str, int]:
    """{status: runs} over every run (the queue's depth by status), in one GROUP BY."""
    rows = session.execute(select(Run.status, func.count()).group_by(Run.status)).all()
    return {status: n for status, n in rows}


def oldest_queued_at(*, session: Session) -> dt.datetime | None:
    return session.scalar(select(func.min(Run.queued_at)).where(Run.status == "queued"))


def count_unfinished_runs(*, session: Session, owners: Collection[str] | None = None) -> int:
    """Queued and running runs, of the sweeps of the users named `owners` (None: of every
    sweep; one deployment is one team)."""
    stmt = select(func.count()).select_from(Run).where(Run.status.in_(("queued", "running")))
    if owners is not None:
        stmt = (
            stmt.join(Sweep, Sweep.id == Run.sweep_id)
            .join(User, User.id == Sweep.owner_id)
            .where(User.name.in_(owners))
        )
    return session.scalar(stmt) or 0
