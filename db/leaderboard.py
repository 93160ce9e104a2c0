"""The leaderboard: one row per configuration, aggregated over its seeds (and sweeps) in SQL.

A configuration is `config_key`: the hash of the resolved config without its seed, so the
same setting pools across seeds, sweeps and nightly runs. Only finished measurements
count: runs with a result whose outcome is `succeeded` or `diverged`. Runs that `failed`
(an exception, a missing GPU) say nothing about the configuration and runs a study's pruner
stopped early (`pruned_step`) are incomplete; both are left out.

Steps-to-target is right-censored: a run that never reached the target (including a
diverged one) has no value. Dropping such runs would rank a configuration that reaches the
target once in five seeds above one that always does; time-to-result benchmarks (AlgoPerf)
charge them instead. The ranking metric `steps` counts such a run at its budget,
`config.budget.steps` (one value per configuration: the budget is part of the key):

    steps = (Σ steps_to_target over reached runs + n_censored · budget) / n_runs

`steps_reached_mean/std` are over the runs that reached the target only, reported beside
`n_censored` so a mean of two lucky seeds is not mistaken for a robust one.

Where the ranking reads from:
- filtered by nothing but task and architecture (the first page, the default API call):
  `config_summary`, one row per configuration holding exactly the aggregate below over all
  its counted results. `refresh_summary` recomputes a configuration's row from `run_result`
  in the transaction of every result `db.queue.complete_run` records, so the ranking is a
  scan of one row per configuration instead of one per run.
- any other filter (date, sweep, owner, software, device): the same aggregate over the
  results that pass it. Everything it needs is on `run_result`: the result's own columns
  and copies of its run's grouping facts (config_key, task, architecture, sweep_id,
  budget_steps, verdict), read through a covering index.
benchmarks/README.md has both measured. Everything shown only for the rows of a page (seeds,
verdict counts, best run, software) is computed afterwards for that page's keys alone,
through the `config_key` index.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import zlib
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    Subquery,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.orm import Session

from db.models import ConfigSummary, Run, RunResult, Sweep

Order = Literal["asc", "desc"]

# ranking metric -> its better direction (the default order)
METRICS: dict[str, Order] = {
    "steps": "asc",  # censored-aware mean steps-to-target (default)
    "steps_reached": "asc",  # mean over the runs that reached the target
    "reached_rate": "desc",
    "final_loss": "asc",
    "test_accuracy": "desc",
    "plateau_fraction": "asc",
    "divergence_rate": "asc",
    "n_runs": "desc",
}
DEFAULT_METRIC = "steps"
COUNTED_OUTCOMES = ("succeeded", "diverged")
MAX_RUN_IDS = 20  # run ids listed per row (best first), for links to the runs
SUMMARY_LOCK = 7412  # first key of refresh_summary's advisory locks (studies use 7411)


@dataclass(frozen=True)
class Filters:
    """Which runs count. None means no restriction."""

    task: str | None = None
    architecture: str | None = None
    since: dt.datetime | None = None  # results recorded at or after this instant (UTC)
    sweep_id: int | None = None
    owner: str | None = None
    torch_version: str | None = None
    device: str | None = None

    @property
    def summarized(self) -> bool:
        """True when config_summary answers these filters: a configuration implies its task
        and architecture, and a summary row holds nothing else to filter on."""
        return all(
            getattr(self, f.name) is None
            for f in dataclasses.fields(self)
            if f.name not in ("task", "architecture")
        )


def _counted(f: Filters, *columns: Any) -> Select[Any]:
    """SELECT columns FROM the results that count under the filters (run_result alone)."""
    r = RunResult
    where: list[ColumnElement[bool]] = [
        r.outcome.in_(COUNTED_OUTCOMES),
        r.pruned_step.is_(None),
    ]
    if f.task is not None:
        where.append(r.task == f.task)
    if f.architecture is not None:
        where.append(r.architecture == f.architecture)
    if f.since is not None:
        where.append(r.created_at >= f.since)
    if f.sweep_id is not None:
        where.append(r.sweep_id == f.sweep_id)
    if f.torch_version is not None:
        where.append(r.torch_version == f.torch_version)
    if f.device is not None:
        where.append(r.device == f.device)
    if f.owner is not None:
        where.append(r.sweep_id.in_(select(Sweep.id).where(Sweep.owner == f.owner)))
    return select(*columns).select_from(r).where(and_(*where))


def _variance(session: Session, x: Any) -> ColumnElement[Any]:
    """Sample variance of x in one pass (NULL below two values)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.var_samp(x)
    # SQLite has no variance aggregate: the E[x²]-E[x]² form, clamped at 0 by _std.
    n = func.count(x)
    return case(
        (n > 1, (func.sum(x * x) - func.sum(x) * func.sum(x) / cast(n, Float)) / (n - 1)),
        else_=None,
    )


def _std(value: float | None) -> float | None:
    return None if value is None else math.sqrt(max(float(value), 0.0))


def _ratio(a: Any, b: Any) -> ColumnElement[Any]:
    return cast(a, Float) / cast(b, Float)


def _aggregate(session: Session, filters: Filters) -> Select[Any]:
    """Per configuration, the aggregate of its results that count under the filters: the
    columns of config_summary, named alike."""
    r = RunResult
    reached = r.reached_target.is_(True)
    steps = cast(r.steps_to_target, Float)
    return _counted(
        filters,
        r.config_key.label("config_key"),
        func.min(r.task).label("task"),
        func.min(r.architecture).label("architecture"),
        func.count().label("n_runs"),
        func.count().filter(reached).label("n_reached"),
        func.count().filter(r.outcome == "diverged").label("n_diverged"),
        # steps_to_target is NULL exactly when the target was not reached. As a float: the
        # numeric aggregates Postgres picks for integers cost a third of the query.
        func.sum(steps).label("steps_sum"),
        func.avg(steps).label("steps_reached_mean"),
        _variance(session, steps).label("steps_var"),
        func.avg(r.final_loss).label("final_loss_mean"),
        _variance(session, r.final_loss).label("final_loss_var"),
        func.avg(r.test_accuracy).label("test_accuracy_mean"),
        func.avg(r.plateau_fraction).label("plateau_fraction_mean"),
        func.max(r.created_at).label("last_result_at"),
        # The budget is part of the key, so every run of the configuration has the same one.
        func.max(r.budget_steps).label("budget_steps"),
    ).group_by(r.config_key)


def _ranked_source(session: Session, filters: Filters) -> Subquery:
    if not filters.summarized:
        return _aggregate(session, filters).subquery("agg")
    c = ConfigSummary
    where: list[ColumnElement[bool]] = []
    if filters.task is not None:
        where.append(c.task == filters.task)
    if filters.architecture is not None:
        where.append(c.architecture == filters.architecture)
    return select(*ConfigSummary.__table__.columns).where(*where).subquery("agg")


def refresh_summary(*, session: Session, config_key: str) -> None:
    """Recompute one configuration's config_summary row from its counted results (and drop
    it when none count). Called by db.queue.complete_run in the result's transaction."""
    if session.get_bind().dialect.name == "postgresql":
        # Refreshes of one configuration take turns: each waits here for the previous one to
        # commit, and its aggregate (a new READ COMMITTED snapshot) then sees that result.
        # SQLite needs nothing: its write transactions already take turns (BEGIN IMMEDIATE).
        session.execute(
            text("SELECT pg_advisory_xact_lock(:space, :key)"),
            {"space": SUMMARY_LOCK, "key": zlib.crc32(config_key.encode()) - 2**31},
        )
    session.execute(delete(ConfigSummary).where(ConfigSummary.config_key == config_key))
    aggregate = _aggregate(session, Filters()).where(RunResult.config_key == config_key)
    names = [column.name for column in ConfigSummary.__table__.columns]
    session.execute(insert(ConfigSummary).from_select(names, aggregate))


def rebuild_summaries(*, session: Session) -> int:
    """Recompute every config_summary row from run_result, for results written or deleted
    outside complete_run (a bulk import, a sweep deleted by hand). Returns the row count."""
    session.execute(delete(ConfigSummary))
    names = [column.name for column in ConfigSummary.__table__.columns]
    session.execute(insert(ConfigSummary).from_select(names, _aggregate(session, Filters())))
    return session.scalar(select(func.count()).select_from(ConfigSummary)) or 0


def leaderboard(
    *,
    session: Session,
    filters: Filters,
    metric: str = DEFAULT_METRIC,
    order: Order | None = None,
    offset: int = 0,
    limit: int | None = 50,
) -> tuple[list[dict[str, Any]], int]:
    """One page of configurations ranked by `metric` (then final loss, then key), and the
    number of configurations under the filters."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of: {', '.join(METRICS)}")
    if session.get_bind().dialect.name == "postgresql":
        # With a few 100k runs the aggregate's planner cost crosses jit_above_cost, and JIT
        # compilation (tens of ms) would cost more than it saves on a query this short.
        session.execute(text("SET LOCAL jit = off"))

    a = _ranked_source(session, filters)

    n_censored = a.c.n_runs - a.c.n_reached
    columns: dict[str, ColumnElement[Any]] = {
        "steps": _ratio(
            func.coalesce(a.c.steps_sum, 0) + n_censored * a.c.budget_steps, a.c.n_runs
        ),
        "steps_reached": a.c.steps_reached_mean,
        "reached_rate": _ratio(a.c.n_reached, a.c.n_runs),
        "final_loss": a.c.final_loss_mean,
        "test_accuracy": a.c.test_accuracy_mean,
        "plateau_fraction": a.c.plateau_fraction_mean,
        "divergence_rate": _ratio(a.c.n_diverged, a.c.n_runs),
        "n_runs": a.c.n_runs,
    }
    direction = order or METRICS[metric]
    primary = columns[metric].asc() if direction == "asc" else columns[metric].desc()
    query = (
        select(
            a,
            n_censored.label("n_censored"),
            *(c.label(f"rank_{name}") for name, c in columns.items()),
            func.count().over().label("total"),
        )
        .order_by(primary.nulls_last(), a.c.final_loss_mean.asc().nulls_last(), a.c.config_key)
        .offset(offset)
        .limit(limit)
    )
    rows = session.execute(query).mappings().all()
    # count(*) OVER () rides along with the page; past the last page, count separately.
    total = rows[0]["total"] if rows else session.scalar(select(func.count()).select_from(a))
    page = [_row(row) for row in rows]
    _add_details(session=session, filters=filters, page=page)
    return page, total or 0


def _row(r: Any) -> dict[str, Any]:
    return {
        "config_key": r["config_key"],
        "task": r["task"],
        "architecture": r["architecture"],
        "n_runs": r["n_runs"],
        "n_reached": r["n_reached"],
        "n_censored": r["n_censored"],
        "n_diverged": r["n_diverged"],
        "budget_steps": r["budget_steps"],
        "steps_censored_mean": r["rank_steps"],
        "steps_reached_mean": _float(r["steps_reached_mean"]),
        "steps_reached_std": _std(r["steps_var"]),
        "reached_rate": r["rank_reached_rate"],
        "final_loss_mean": r["final_loss_mean"],
        "final_loss_std": _std(r["final_loss_var"]),
        "test_accuracy_mean": r["test_accuracy_mean"],
        "plateau_fraction_mean": r["plateau_fraction_mean"],
        "divergence_rate": r["rank_divergence_rate"],
        "last_result_at": r["last_result_at"],
    }


def _float(value: Any) -> float | None:
    # Postgres' avg of an integer column is a Decimal.
    return None if value is None else float(value)


def _add_details(*, session: Session, filters: Filters, page: list[dict[str, Any]]) -> None:
    """Seeds, sweeps, software, verdict counts and the best runs of the page's rows only."""
    keys = [row["config_key"] for row in page]
    if not keys:
        return
    # Restricted to a page of keys (the config_key index), these queries are cheap. A key
    # implies its task and architecture, so those filters would only cost.
    f = dataclasses.replace(filters, task=None, architecture=None)
    r = RunResult
    in_page = r.config_key.in_(keys)
    by_key = {row["config_key"]: row for row in page}

    # The seed is only in the run (config_hash is the key plus the seed): the one join left.
    details = (
        _counted(
            f,
            r.config_key,
            func.count(Run.config_hash.distinct()).label("n_seeds"),
            func.count(r.sweep_id.distinct()).label("n_sweeps"),
            func.min(r.torch_version).label("torch_min"),
            func.max(r.torch_version).label("torch_max"),
            func.min(r.device).label("device_min"),
            func.max(r.device).label("device_max"),
        )
        .join(Run, Run.id == r.run_id)
        .where(in_page)
        .group_by(r.config_key)
    )
    for d in session.execute(details).mappings():
        row = by_key[d["config_key"]]
        row["n_seeds"] = d["n_seeds"]
        row["n_sweeps"] = d["n_sweeps"]
        row["torch_versions"] = _span(d["torch_min"], d["torch_max"])
        row["devices"] = _span(d["device_min"], d["device_max"])

    for row in page:
        row["verdicts"] = {}
    verdicts = _counted(f, r.config_key, r.verdict, func.count().label("n"))
    for key, name, n in session.execute(
        verdicts.where(in_page).group_by(r.config_key, r.verdict).order_by(r.config_key, r.verdict)
    ):
        by_key[key]["verdicts"][name or "none"] = n

    # Runs of each configuration, best first: reached before censored, fewer steps, lower loss.
    rank = (
        func.row_number()
        .over(
            partition_by=r.config_key,
            order_by=(
                r.reached_target.desc(),
                r.steps_to_target.asc().nulls_last(),
                r.final_loss.asc().nulls_last(),
                r.run_id,
            ),
        )
        .label("place")
    )
    ranked = _counted(f, r.config_key, r.run_id, rank).where(in_page).subquery()
    for row in page:
        row["run_ids"] = []
    for key, run_id in session.execute(
        select(ranked.c.config_key, ranked.c.run_id)
        .where(ranked.c.place <= MAX_RUN_IDS)
        .order_by(ranked.c.config_key, ranked.c.place)
    ):
        by_key[key]["run_ids"].append(run_id)

    best = {row["run_ids"][0]: row for row in page}
    for run_id, config in session.execute(select(Run.id, Run.config).where(Run.id.in_(list(best)))):
        best[run_id]["best_run_id"] = run_id
        best[run_id]["config"] = {k: v for k, v in config.items() if k != "seed"}


def _span(lo: str | None, hi: str | None) -> str | None:
    if lo is None:
        return hi
    return lo if lo == hi else f"{lo} … {hi}"


def devices_of_sweep(*, session: Session, sweep_id: int) -> list[str]:
    """The devices the sweep's recorded results ran on (for its page)."""
    # Through run's (sweep_id, status) index: run_result has no index leading with sweep_id.
    return [
        d
        for d in session.scalars(
            select(RunResult.device)
            .join(Run, Run.id == RunResult.run_id)
            .where(Run.sweep_id == sweep_id, RunResult.device.is_not(None))
            .distinct()
            .order_by(RunResult.device)
        )
        if d
    ]
