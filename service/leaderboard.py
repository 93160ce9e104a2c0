"""The leaderboard as the API, the pages and the CLI share it.

- `LeaderboardQuery`: the filters, metric, order and page of a leaderboard request (the
  query string of /api/v1/leaderboard, the page `/`, and `plateau leaderboard`);
- `LeaderboardRow`, `LeaderboardPublic`: one page of ranked configurations;
- `leaderboard_page`: that page from db/ (`leaderboard_from_db` for the CLI without --url).

The CSV export is service/exports.py; the CLI's table, service/tables.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from db import leaderboard as lb
from db.models import MAX_ID
from service.api.views import run_summary
from service.schemas import Verdict
from service.spec import ARCHITECTURE_NAMES, TASK_NAMES, Label, known

Metric = Literal[
    "steps",
    "steps_reached",
    "reached_rate",
    "final_loss",
    "test_accuracy",
    "plateau_fraction",
    "divergence_rate",
    "n_runs",
]
assert set(get_args(Metric)) == set(lb.METRICS), "Metric must list db.leaderboard.METRICS"

METRIC_HELP = {
    "steps": "mean steps-to-target, censored runs counted at the budget",
    "steps_reached": "mean steps-to-target of the runs that reached it",
    "reached_rate": "fraction of runs that reached the target",
    "final_loss": "mean final training loss",
    "test_accuracy": "mean test accuracy",
    "plateau_fraction": "mean fraction of steps on a plateau",
    "divergence_rate": "fraction of runs that diverged",
    "n_runs": "number of runs",
}


class LeaderboardQuery(BaseModel):
    """Which runs count, how to rank their configurations, and which page to show."""

    model_config = ConfigDict(extra="forbid")

    task: Label | None = Field(
        None, max_length=64, description="only runs of this task", examples=list(TASK_NAMES)
    )
    architecture: Label | None = Field(
        None,
        max_length=64,
        description="only runs of this architecture",
        examples=list(ARCHITECTURE_NAMES),
    )
    metric: Metric = Field("steps", description="the ranking: " + "; ".join(METRIC_HELP))
    order: Literal["asc", "desc"] | None = Field(
        None, description="default: the metric's better direction first"
    )
    since: dt.datetime | None = Field(
        None, description="only results recorded since (ISO date or datetime; UTC if naive)"
    )
    sweep: int | None = Field(None, ge=1, le=MAX_ID, description="only runs of this sweep")
    owner: Label | None = Field(None, max_length=200, description="only sweeps of this owner")
    torch_version: Label | None = Field(None, max_length=32, description="e.g. 2.13.0")
    device: Label | None = Field(None, max_length=32, description="cpu or cuda")
    offset: int = Field(0, ge=0, le=MAX_ID, description="rows to skip")
    limit: int = Field(50, ge=1, le=1000, description="rows per page")

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_absent(cls, value: Any) -> Any:
        # An empty field of the page's filter form means "any".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str | None) -> str | None:
        return known("task", TASK_NAMES)(value)

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, value: str | None) -> str | None:
        return known("architecture", ARCHITECTURE_NAMES)(value)

    @field_validator("since")
    @classmethod
    def _utc(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        try:  # 0001-01-01T00:00+14:00 is in year 0 in UTC: no datetime holds it
            return value.astimezone(dt.UTC)
        except OverflowError as e:
            raise ValueError(f"{value.isoformat()} is outside the dates that UTC can hold") from e

    def filters(self) -> lb.Filters:
        return lb.Filters(
            task=self.task,
            architecture=self.architecture,
            since=self.since,
            sweep_id=self.sweep,
            owner=self.owner,
            torch_version=self.torch_version,
            device=self.device,
        )

    def params(self, **changes: Any) -> dict[str, Any]:
        """The query string of this query (with changes), without defaults."""
        values = self.model_dump(mode="json", exclude_defaults=True) | changes
        return {k: v for k, v in values.items() if v is not None}


class LeaderboardCsvQuery(LeaderboardQuery):
    """The CSV takes the same parameters; without a limit it has every row."""

    limit: int | None = Field(  # type: ignore[assignment]
        None, ge=1, le=100_000, description="rows; null: every row"
    )


class LeaderboardRow(BaseModel):
    """One configuration (a config_key: the resolved config without its seed)."""

    rank: int = Field(description="1 is the best by the query's metric")
    config_key: str = Field(description="hash of what changes the training, seed excluded")
    task: str = Field(description="the task's name", examples=list(TASK_NAMES))
    architecture: str = Field(
        description="the architecture's name", examples=list(ARCHITECTURE_NAMES)
    )
    summary: dict[str, Any] = Field(
        description="short names of the axes: architecture, optimizer, init, ..."
    )
    config: dict[str, Any] = Field(description="the resolved config, without the seed")
    n_runs: int = Field(
        description="finished runs that count (succeeded or diverged; not failed, not pruned)"
    )
    n_seeds: int = Field(description="distinct seeds among them")
    n_sweeps: int = Field(description="sweeps they came from")
    n_reached: int = Field(description="runs that reached the target")
    n_censored: int = Field(description="runs that never reached it (diverged ones included)")
    n_diverged: int = Field(description="runs that diverged")
    budget_steps: int | None = Field(description="the budget's steps")
    steps_censored_mean: float | None = Field(
        description="mean steps to target, censored runs counted at budget_steps"
    )
    steps_reached_mean: float | None = Field(description="mean steps of the runs that reached")
    steps_reached_std: float | None = Field(description="their standard deviation")
    reached_rate: float = Field(description="n_reached / n_runs")
    final_loss_mean: float | None = Field(description="mean final training loss")
    final_loss_std: float | None = Field(description="its standard deviation")
    test_accuracy_mean: float | None = Field(description="mean test accuracy")
    plateau_fraction_mean: float | None = Field(description="mean fraction of steps on a plateau")
    divergence_rate: float = Field(description="n_diverged / n_runs")
    verdicts: dict[Literal[Verdict, "none"], int] = Field(
        description="runs by verdict (none: a result recorded without one)",
        examples=[{"converged": 3, "plateau": 1}],
    )
    best_run_id: int = Field(description="the best run by the metric")
    run_ids: list[int] = Field(description="run ids, best first, at most 20")
    torch_versions: str | None = Field(description="torch versions that ran them")
    devices: str | None = Field(description="devices that ran them")
    last_result_at: dt.datetime = Field(description="when the latest result was recorded")


class LeaderboardPublic(BaseModel):
    data: list[LeaderboardRow] = Field(description="one page of configurations, ranked")
    count: int = Field(description="configurations in all (matching the filters)")


def config_summary(config: dict[str, Any]) -> dict[str, Any]:
    """The short axis names of a seedless config (see service.api.views.run_summary)."""
    summary = run_summary(config | {"seed": None})
    summary.pop("seed")
    return summary


def leaderboard_page(*, session: Session, query: LeaderboardQuery) -> LeaderboardPublic:
    rows, count = lb.leaderboard(
        session=session,
        filters=query.filters(),
        metric=query.metric,
        order=query.order,
        offset=query.offset,
        limit=query.limit,
    )
    data = [
        LeaderboardRow(rank=query.offset + i, summary=config_summary(row["config"]), **row)
        for i, row in enumerate(rows, 1)
    ]
    return LeaderboardPublic(data=data, count=count)


def leaderboard_from_db(url: str, query: LeaderboardQuery) -> dict[str, Any]:
    """The JSON of GET /api/v1/leaderboard, read from the database (the CLI without --url)."""
    from db.migrate import ensure_current
    from db.session import read_scope

    ensure_current(url, migrate=False)
    with read_scope(url) as session:
        return leaderboard_page(session=session, query=query).model_dump(mode="json")
