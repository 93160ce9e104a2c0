"""The SQL behind the leaderboard, sweep and study pages that the API's resources do not
already answer: the tasks with results (the leaderboard's task picker), a sweep's loss
curves in one statement (its overlay chart), and a study's confirmation sweeps."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import ConfigSummary, Run, RunMetric, RunResult, Sweep

CONFIRM_SOURCE = "study-confirm"  # service/studies.py: confirm() queues its sweep so


def results_per_task(*, session: Session) -> list[tuple[str, int]]:
    """(task, counted runs) of every task with results, most results first: what the
    leaderboard's task picker offers, and its default (the first)."""
    n = func.sum(ConfigSummary.n_runs)
    rows = session.execute(
        select(ConfigSummary.task, n).group_by(ConfigSummary.task).order_by(n.desc(), "task")
    )
    return [(task, int(count)) for task, count in rows.all() if count]


def loss_curves(
    *, session: Session, run_ids: Sequence[int]
) -> dict[int, tuple[list[int], list[float | None]]]:
    """run id -> (steps, training loss) of each run's recorded attempt (its latest attempt
    while it runs), as db.queries.run_curves reads one run, for many runs at once."""
    attempt = func.coalesce(RunResult.attempt, Run.attempts)
    rows = session.execute(
        select(RunMetric.run_id, RunMetric.step, RunMetric.loss)
        .join(Run, Run.id == RunMetric.run_id)
        .outerjoin(RunResult, RunResult.run_id == Run.id)
        .where(RunMetric.run_id.in_(list(run_ids)), RunMetric.attempt == attempt)
        .order_by(RunMetric.run_id, RunMetric.step)
    )
    curves: dict[int, tuple[list[int], list[float | None]]] = {}
    for run_id, step, loss in rows.all():
        steps, losses = curves.setdefault(run_id, ([], []))
        steps.append(step)
        losses.append(loss)
    return curves


def confirmation_sweeps(*, session: Session, study_id: int) -> Sequence[Sweep]:
    """The sweeps that re-ran a study's best trial against its baseline, newest first."""
    return session.scalars(
        select(Sweep)
        .where(Sweep.source == CONFIRM_SOURCE, Sweep.spec["study_id"].as_integer() == study_id)
        .order_by(Sweep.id.desc())
    ).all()
