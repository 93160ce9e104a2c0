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

Where the ranking reads from (db/models.py has the tables): sums, never the results one by
one. A result's counts, sums and sums of squares add up, so
- `result_rollup` holds them per bucket (configuration, sweep, device, torch version, UTC
  day). Every filter is a condition on a bucket (the owner through the sweep), so a ranking
  adds up whole rows: the seeds of a configuration in one sweep are one row. A `since`
  inside a day takes the rest of that day from `run_result`, through the same sums.
- `config_summary` holds them per configuration (its rollup rows added up), for rankings
  filtered by nothing but task and architecture: the front page and the default API call
  read one row per configuration and add up nothing.
`refresh_rollup` recomputes the bucket of each result `db.queue.complete_run` records, and
its configuration's summary, in the result's transaction, from `run_result`, so the sums
agree with the results that plateau wrote. Results written or deleted any other way (SQL by
hand, a worker of a version before the rollup still finishing its run during an upgrade)
need `plateau db rebuild-leaderboard`. The ranking first orders the configurations by
the sums its metric reads alone, then loads every column for the page's keys only.
benchmarks/README.md has it measured.

Means and variances come from the summed columns (n, Σx, Σx²): the variance is
(Σx² − (Σx)²/n)/(n − 1), clamped at 0, in float64: its rounding error is about 1e-16 of
n·mean², so a spread below ~1e-8 of the mean reads as noise (for steps, a configuration
would need some 10⁷ runs of 10⁴ steps before that matters).

Everything shown only for the rows of a page (seeds, verdict counts, best run, software) is
computed afterwards for that page's keys alone, through run_result's `config_key` index.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import zlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Date,
    Float,
    Integer,
    Select,
    SQLColumnExpression,
    Subquery,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    union_all,
)
from sqlalchemy.orm import Session

from db.models import ConfigSummary, ResultRollup, Run, RunResult, Sweep, User

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
KEYS_PER_QUERY = 1000  # configurations per statement when loading a page's rows
ROLLUP_LOCK = 7412  # first key of refresh_rollup's advisory locks (studies use 7411)


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

    def __post_init__(self) -> None:
        if self.since is not None and self.since.tzinfo is None:
            raise ValueError("Filters.since must be timezone-aware (UTC)")

    @property
    def summarized(self) -> bool:
        """True when config_summary answers: a configuration implies its task and
        architecture, and nothing else narrows a configuration's results."""
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
        where.append(r.sweep_id.in_(_sweeps_of(f.owner)))
    return select(*columns).select_from(r).where(and_(*where))


def _sweeps_of(owner: str) -> Select[Any]:
    """Ids of the sweeps of the user named `owner` (owners are users: keys, not free text)."""
    return select(Sweep.id).join(User, User.id == Sweep.owner_id).where(User.name == owner)


def _std(value: float | None) -> float | None:
    return None if value is None else math.sqrt(max(float(value), 0.0))


def _ratio(a: Any, b: Any) -> ColumnElement[Any]:
    return cast(a, Float) / cast(b, Float)


# The measured columns, by their prefix in ResultSums; `steps` is run_result.steps_to_target
# (NULL exactly when the target was not reached), the others are run_result's own names.
MEASURED = ("steps", "final_loss", "test_accuracy", "plateau_fraction")
WITH_SQUARES = ("steps", "final_loss")


def _sums(f: Filters) -> Select[Any]:
    """Per configuration, the counts and sums of its results that count under the filters:
    result_rollup's value columns, named alike, to be grouped further."""
    r = RunResult
    values: dict[str, SQLColumnExpression[Any]] = {
        # As a float: the numeric aggregates Postgres picks for integers cost a third more.
        "steps": cast(r.steps_to_target, Float),
        "final_loss": r.final_loss,
        "test_accuracy": r.test_accuracy,
        "plateau_fraction": r.plateau_fraction,
    }
    # Counts as integers, the rollup's type: a bigint count would make its sums numeric.
    columns: list[ColumnElement[Any]] = [
        func.min(r.task).label("task"),
        func.min(r.architecture).label("architecture"),
        cast(func.count(), Integer).label("n_runs"),
        cast(func.count().filter(r.reached_target.is_(True)), Integer).label("n_reached"),
        cast(func.count().filter(r.outcome == "diverged"), Integer).label("n_diverged"),
    ]
    for name in MEASURED:
        x = values[name]
        columns += [
            cast(func.count(x), Integer).label(f"{name}_n"),
            func.coalesce(func.sum(x), 0.0).label(f"{name}_sum"),
        ]
        if name in WITH_SQUARES:
            columns.append(func.coalesce(func.sum(x * x), 0.0).label(f"{name}_sumsq"))
    columns += [
        func.max(r.created_at).label("last_result_at"),
        # The budget is part of the key, so every run of the configuration has the same one.
        func.max(r.budget_steps).label("budget_steps"),
    ]
    return _counted(f, r.config_key, *columns).group_by(r.config_key)


def _value_columns() -> list[str]:
    """The columns of ResultSums, in table order."""
    return [c.name for c in ConfigSummary.__table__.columns if c.name != "config_key"]


def _add_up(rows: Subquery, names: Sequence[str] | None = None) -> Select[Any]:
    """Per configuration, the ResultSums of `rows` (rollup rows, or sums alike) added up:
    the columns `names`, by default all of them."""
    combine: dict[str, Callable[..., ColumnElement[Any]]] = {
        "task": func.min,
        "architecture": func.min,
        "last_result_at": func.max,
        "budget_steps": func.max,
    }
    return select(
        rows.c.config_key,
        *(
            combine.get(n, func.sum)(rows.c[n]).label(n)
            for n in _value_columns()
            if names is None or n in names
        ),
    ).group_by(rows.c.config_key)


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def _sums_under(filters: Filters, columns: Collection[str] | None = None) -> Subquery:
    """One row of ResultSums (`columns` of them, by default all) per configuration, over its
    results that count under the filters: config_summary's when only task and architecture
    are asked, else added up from the rollup buckets the filters select."""
    columns = [n for n in _value_columns() if columns is None or n in columns]
    names = ["config_key", *columns]
    if filters.summarized:
        c = ConfigSummary
        where = [
            col == v
            for col, v in ((c.task, filters.task), (c.architecture, filters.architecture))
            if v is not None
        ]
        return select(*(c.__table__.c[n] for n in names)).where(*where).subquery("sums")
    k = ResultRollup
    where = []  # conditions on a bucket
    for column, value in (
        (k.task, filters.task),
        (k.architecture, filters.architecture),
        (k.sweep_id, filters.sweep_id),
        (k.torch_version, filters.torch_version),
        (k.device, filters.device),
    ):
        if value is not None:
            where.append(column == value)
    if filters.owner is not None:
        where.append(k.sweep_id.in_(_sweeps_of(filters.owner)))
    parts: list[Select[Any]] = []
    if filters.since is not None:
        since = filters.since.astimezone(dt.UTC)
        midnight = since == _day_start(since.date())
        # The first whole day (inside the last representable day, that day: nothing is later)
        first_day = (
            since.date()
            if midnight or since.date() == dt.date.max
            else since.date() + dt.timedelta(1)
        )
        where.append(k.day >= first_day)
        if since < _day_start(first_day):  # the rest of since's own day, from the results
            rest = _sums(filters).where(RunResult.created_at < _day_start(first_day)).subquery()
            parts.append(select(*(rest.c[n] for n in names)))
    parts.insert(0, select(*(k.__table__.c[n] for n in names)).where(*where))
    buckets = union_all(*parts).subquery("buckets") if len(parts) > 1 else parts[0].subquery()
    return _add_up(buckets, columns).subquery("sums")


def _mean(c: Any, name: str) -> ColumnElement[Any]:
    n = c[f"{name}_n"]
    return case((n > 0, c[f"{name}_sum"] / cast(n, Float)), else_=None)


def _variance(c: Any, name: str) -> ColumnElement[Any]:
    n, s, sq = c[f"{name}_n"], c[f"{name}_sum"], c[f"{name}_sumsq"]
    return case((n > 1, (sq - s * s / cast(n, Float)) / cast(n - 1, Float)), else_=None)


# ranking metric -> (the ResultSums columns it reads, its value from them)
RANKED: dict[str, tuple[tuple[str, ...], Callable[[Any], ColumnElement[Any]]]] = {
    "steps": (
        ("steps_sum", "n_runs", "n_reached", "budget_steps"),
        lambda c: _ratio(c.steps_sum + (c.n_runs - c.n_reached) * c.budget_steps, c.n_runs),
    ),
    "steps_reached": (("steps_n", "steps_sum"), lambda c: _mean(c, "steps")),
    "reached_rate": (("n_reached", "n_runs"), lambda c: _ratio(c.n_reached, c.n_runs)),
    "final_loss": (("final_loss_n", "final_loss_sum"), lambda c: _mean(c, "final_loss")),
    "test_accuracy": (
        ("test_accuracy_n", "test_accuracy_sum"),
        lambda c: _mean(c, "test_accuracy"),
    ),
    "plateau_fraction": (
        ("plateau_fraction_n", "plateau_fraction_sum"),
        lambda c: _mean(c, "plateau_fraction"),
    ),
    "divergence_rate": (("n_diverged", "n_runs"), lambda c: _ratio(c.n_diverged, c.n_runs)),
    "n_runs": (("n_runs",), lambda c: c.n_runs),
}
assert set(RANKED) == set(METRICS)
TIE_BREAK = ("final_loss_n", "final_loss_sum")  # then the lower mean final loss


# A bucket's columns besides its day (run_result's and result_rollup's names alike), and what
# the rollup stores where a result has NULL: they are part of its primary key.
BUCKET_NULLS: dict[str, Any] = {"sweep_id": 0, "device": "", "torch_version": ""}


def _bucket_keys() -> dict[str, ColumnElement[Any]]:
    """run_result's bucket columns besides the day, NULL read as the rollup stores it."""
    return {n: func.coalesce(getattr(RunResult, n), null) for n, null in BUCKET_NULLS.items()}


def refresh_rollup(*, session: Session, result: RunResult) -> None:
    """Recompute the result_rollup row of the bucket `result` falls in (dropping it when no
    result there counts), then its configuration's config_summary row from its rollup rows.
    Called by db.queue.complete_run in the result's transaction."""
    key = result.config_key
    if session.get_bind().dialect.name == "postgresql":
        # Refreshes of one configuration take turns: each waits here for the previous one to
        # commit, and its aggregate (a new READ COMMITTED snapshot) then sees that result.
        # SQLite needs nothing: its write transactions already take turns (BEGIN IMMEDIATE).
        session.execute(
            text("SELECT pg_advisory_xact_lock(:space, :key)"),
            {"space": ROLLUP_LOCK, "key": zlib.crc32(key.encode()) - 2**31},
        )
    r, k = RunResult, ResultRollup
    day = result.created_at.astimezone(dt.UTC).date()
    bucket = {
        n: null if getattr(result, n) is None else getattr(result, n)
        for n, null in BUCKET_NULLS.items()
    } | {"day": day}
    session.execute(
        delete(k).where(k.config_key == key, *(k.__table__.c[n] == v for n, v in bucket.items()))
    )
    sums = (
        _sums(Filters())
        .where(
            r.config_key == key,
            *(expr == bucket[name] for name, expr in _bucket_keys().items()),
            r.created_at >= _day_start(day),
            r.created_at < _day_start(day + dt.timedelta(1)),
        )
        .subquery()
    )
    row = select(
        sums.c.config_key,
        *(literal(v, k.__table__.c[n].type).label(n) for n, v in bucket.items()),
        *(sums.c[n] for n in _value_columns()),
    )
    session.execute(insert(k).from_select([c.name for c in row.selected_columns], row))

    session.execute(delete(ConfigSummary).where(ConfigSummary.config_key == key))
    summary = _add_up(select(k).where(k.config_key == key).subquery())
    _insert_summaries(session, summary)


def _insert_summaries(session: Session, summaries: Select[Any]) -> None:
    names = ["config_key", *_value_columns()]
    session.execute(insert(ConfigSummary).from_select(names, summaries))


def rebuild_rollups(*, session: Session) -> int:
    """Recompute every result_rollup and config_summary row from run_result, for results
    written or deleted outside complete_run (a bulk import, a sweep deleted by hand).
    Returns the number of rollup rows."""
    k = ResultRollup
    if session.get_bind().dialect.name == "postgresql":
        # Results recorded meanwhile wait at their refresh's first write until this commits,
        # then redo their bucket from a snapshot that holds the rebuild. Readers go on.
        session.execute(text("LOCK TABLE result_rollup, config_summary IN EXCLUSIVE MODE"))
    _rebuild(session, None)
    return session.scalar(select(func.count()).select_from(k)) or 0


def refresh_configurations(*, session: Session, config_keys: Collection[str]) -> None:
    """Recompute every rollup row and the summary of these configurations from run_result:
    after results of theirs were deleted (db.queue.delete_sweep). A configuration left
    without counted results leaves the leaderboard. Other configurations are not touched.

    On Postgres each key's refresh lock (refresh_rollup's) is taken first, in key order, so
    a result of one of them recorded meanwhile waits and then refreshes from our rows."""
    keys = sorted(set(config_keys))
    if session.get_bind().dialect.name == "postgresql":
        for key in keys:
            session.execute(
                text("SELECT pg_advisory_xact_lock(:space, :key)"),
                {"space": ROLLUP_LOCK, "key": zlib.crc32(key.encode()) - 2**31},
            )
    for i in range(0, len(keys), KEYS_PER_QUERY):
        _rebuild(session, keys[i : i + KEYS_PER_QUERY])


def _rebuild(session: Session, keys: Sequence[str] | None) -> None:
    """Replace the rollup and summary rows of `keys` (all: None) by sums of run_result."""
    r, k, c = RunResult, ResultRollup, ConfigSummary
    day: ColumnElement[Any]
    if session.get_bind().dialect.name == "postgresql":
        day = cast(func.timezone("UTC", r.created_at), Date)
    else:  # SQLite keeps naive UTC text
        day = func.date(r.created_at)
    bucket = [expr.label(name) for name, expr in _bucket_keys().items()]
    bucket.append(day.label("day"))
    sums = _sums(Filters()).add_columns(*bucket).group_by(*bucket)
    rollups, summaries = delete(k), delete(c)
    if keys is not None:
        sums = sums.where(r.config_key.in_(keys))
        rollups = rollups.where(k.config_key.in_(keys))
        summaries = summaries.where(c.config_key.in_(keys))
    s = sums.subquery()
    row = select(*(s.c[col.name] for col in k.__table__.columns))
    session.execute(rollups)
    session.execute(insert(k).from_select([col.name for col in k.__table__.columns], row))
    session.execute(summaries)
    added = select(k) if keys is None else select(k).where(k.config_key.in_(keys))
    _insert_summaries(session, _add_up(added.subquery()))


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

    # First the page's keys in order, from the sums the metric and the tie-break read alone
    # (Postgres drops a subquery's unused sums by itself, but not through a union of rollup
    # rows and results). Then every column for those keys alone, pushed down to their rows.
    inputs, value = RANKED[metric]
    sums = _sums_under(filters, {*inputs, *TIE_BREAK}).c
    rank = value(sums).asc() if (order or METRICS[metric]) == "asc" else value(sums).desc()
    ranked = (
        select(sums.config_key, func.count().over())
        .order_by(rank.nulls_last(), _mean(sums, "final_loss").asc().nulls_last(), sums.config_key)
        .offset(offset)
        .limit(limit)
    )
    order_of = session.execute(ranked).all()
    if not order_of:  # past the last page: count separately
        return [], session.scalar(select(func.count()).select_from(_sums_under(filters, ()))) or 0
    total = order_of[0][1]
    keys = [key for key, _ in order_of]

    c = _sums_under(filters).c
    full = select(
        *c,
        *(value(c).label(f"rank_{name}") for name, (_, value) in RANKED.items()),
        *(_mean(c, name).label(f"{name}_mean") for name in MEASURED),
        *(_variance(c, name).label(f"{name}_var") for name in WITH_SQUARES),
    )
    page: list[dict[str, Any]] = []
    # In chunks: a CSV of every configuration would pass more keys than a statement may
    # have parameters (65,535 for psycopg, 32,766 for SQLite).
    for start in range(0, len(keys), KEYS_PER_QUERY):
        chunk = keys[start : start + KEYS_PER_QUERY]
        by_key = {
            r["config_key"]: r
            for r in session.execute(full.where(c.config_key.in_(chunk))).mappings()
        }
        # A key can vanish between the two reads (a rebuild in between): leave it out.
        rows = [_row(by_key[key]) for key in chunk if key in by_key]
        _add_details(session=session, filters=filters, page=rows)
        # So can its results (deleted by hand in SQL, before `plateau db rebuild-leaderboard`):
        # a row whose runs are gone is left out too.
        page += [row for row in rows if row["run_ids"]]
    return page, total


def _row(r: Any) -> dict[str, Any]:
    return {
        "config_key": r["config_key"],
        "task": r["task"],
        "architecture": r["architecture"],
        "n_runs": r["n_runs"],
        "n_reached": r["n_reached"],
        "n_censored": r["n_runs"] - r["n_reached"],
        "n_diverged": r["n_diverged"],
        "budget_steps": r["budget_steps"],
        "steps_censored_mean": r["rank_steps"],
        "steps_reached_mean": r["steps_mean"],
        "steps_reached_std": _std(r["steps_var"]),
        "reached_rate": r["rank_reached_rate"],
        "final_loss_mean": r["final_loss_mean"],
        "final_loss_std": _std(r["final_loss_var"]),
        "test_accuracy_mean": r["test_accuracy_mean"],
        "plateau_fraction_mean": r["plateau_fraction_mean"],
        "divergence_rate": r["rank_divergence_rate"],
        "last_result_at": r["last_result_at"],
    }


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

    # The seed is only in the run's config: the one join left. (Not config_hash: runs that
    # differ only in what was measured share a key and a seed but not a hash.)
    details = (
        _counted(
            f,
            r.config_key,
            func.count(Run.config["seed"].as_integer().distinct()).label("n_seeds"),
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

    best = {row["run_ids"][0]: row for row in page if row["run_ids"]}
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
