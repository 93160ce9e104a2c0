"""Retention of per-step curves: the rows of runs finished long ago are thinned.

`prune_curves` keeps, of each old finished run, its step-0 row and its evaluation rows
(every `eval_every` steps and the last step: test loss and accuracy, activation statistics)
and deletes the other per-step rows of `run_metric`, which are most of a run's rows
(`log_every: 1` writes one per step). The run's result (`run_result`: final losses,
steps to target, plateau segments, diagnosis), its probes and the leaderboard's sums are
kept, so pages and rankings still show everything but the per-step detail of the curve.
Each thinned run records `curves_pruned_at`.
"""

from __future__ import annotations

import datetime as dt
import typing
from typing import Any

from sqlalchemy import CursorResult, Text, cast, delete, func, select, update
from sqlalchemy.orm import Session

from db.models import TERMINAL_STATUSES, Run, RunMetric, utcnow

RUNS_PER_BATCH = 200


def prune_curves_batch(*, session: Session, finished_before: dt.datetime) -> tuple[int, int]:
    """Thin up to RUNS_PER_BATCH runs that finished before the cutoff and are not thinned
    yet; returns (runs, rows deleted). Call it until it returns no runs, one transaction
    each, so no transaction holds many rows' locks for long."""
    runs = session.scalars(
        select(Run.id)
        .where(
            Run.status.in_(TERMINAL_STATUSES),
            Run.finished_at < finished_before,
            Run.curves_pruned_at.is_(None),
        )
        .order_by(Run.id)
        .limit(RUNS_PER_BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    if not runs:
        return 0, 0
    return len(runs), thin_runs(session=session, run_ids=list(runs))


def thin_runs(*, session: Session, run_ids: list[int]) -> int:
    """Thin these runs' curves as above (their step-0 and evaluation rows stay) and mark
    them; returns the rows deleted."""
    runs = run_ids
    m = RunMetric
    deleted = typing.cast(
        CursorResult[Any],
        session.execute(
            delete(m).where(
                m.run_id.in_(runs),
                m.step > 0,
                m.eval_loss.is_(None),
                m.eval_accuracy.is_(None),
                # SQL NULL or JSON null (what a row written with None holds)
                func.coalesce(cast(m.activation_stats, Text), "null") == "null",
            )
        ),
    ).rowcount
    session.execute(
        update(Run)
        .where(Run.id.in_(runs))
        .values(curves_pruned_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return deleted


def prune_old_nights(*, session: Session) -> tuple[int, int]:
    """Thin the curves of the runs of every schedule's nights older than its
    `keep_curves_nights` (their results, probes and the nightly comparison's inputs stay);
    up to RUNS_PER_BATCH runs a call. Returns (runs, rows deleted)."""
    from db.models import Schedule, ScheduleFiring

    latest = (
        select(ScheduleFiring.schedule_id, func.max(ScheduleFiring.night).label("night"))
        .group_by(ScheduleFiring.schedule_id)
        .subquery()
    )
    old_sweeps = (
        select(ScheduleFiring.sweep_id)
        .join(Schedule, Schedule.id == ScheduleFiring.schedule_id)
        .join(latest, latest.c.schedule_id == ScheduleFiring.schedule_id)
        .where(
            ScheduleFiring.sweep_id.is_not(None),
            ScheduleFiring.night <= latest.c.night - Schedule.keep_curves_nights,
        )
    )
    runs = session.scalars(
        select(Run.id)
        .where(
            Run.sweep_id.in_(old_sweeps),
            Run.status.in_(TERMINAL_STATUSES),
            Run.curves_pruned_at.is_(None),
        )
        .order_by(Run.id)
        .limit(RUNS_PER_BATCH)
    ).all()
    if not runs:
        return 0, 0
    return len(runs), thin_runs(session=session, run_ids=list(runs))


def retention_cutoff(days: float, now: dt.datetime | None = None) -> dt.datetime:
    return (now or utcnow()) - dt.timedelta(days=days)
