"""The leaderboard and the figures of a run, as the API, the pages and the CLI share them.

- `LeaderboardQuery`: the filters, metric, order and page of a leaderboard request (the
  query string of /api/v1/leaderboard, the page `/`, and `plateau leaderboard`);
- `leaderboard_page`: one page of ranked configurations (`LeaderboardPublic`) from db/;
- `leaderboard_csv`, `leaderboard_table`: the same rows as CSV and as a rich table;
- `run_document`: a run's JSON as the API gives it (detail and probes);
- `write_figures`: a run's figures as SVG/PNG files (`plateau plot`), with matplotlib,
  imported only there.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import textwrap
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from db import leaderboard as lb
from db import queries
from db.models import MAX_ID
from service.api.views import result_dict, run_public, run_summary
from service.schemas import ProbePublic, RunDetail
from service.spec import Label

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

    task: Label | None = Field(None, max_length=64, description="e.g. digits")
    architecture: Label | None = Field(None, max_length=64, description="e.g. mlp")
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
    offset: int = Field(0, ge=0, le=MAX_ID)
    limit: int = Field(50, ge=1, le=1000)

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_absent(cls, value: Any) -> Any:
        # An empty field of the page's filter form means "any".
        return None if isinstance(value, str) and not value.strip() else value

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

    limit: int | None = Field(None, ge=1, le=100_000)  # type: ignore[assignment]


class LeaderboardRow(BaseModel):
    """One configuration (a config_key: the resolved config without its seed)."""

    rank: int
    config_key: str
    task: str
    architecture: str
    summary: dict[str, Any]  # short names of the axes: architecture, optimizer, init, ...
    config: dict[str, Any]  # the resolved config, without the seed
    n_runs: int  # finished runs that count (succeeded or diverged; not failed, not pruned)
    n_seeds: int
    n_sweeps: int
    n_reached: int
    n_censored: int  # runs that never reached the target (diverged ones included)
    n_diverged: int
    budget_steps: int | None
    steps_censored_mean: float | None  # censored runs counted at budget_steps
    steps_reached_mean: float | None
    steps_reached_std: float | None
    reached_rate: float
    final_loss_mean: float | None
    final_loss_std: float | None
    test_accuracy_mean: float | None
    plateau_fraction_mean: float | None
    divergence_rate: float
    verdicts: dict[str, int]
    best_run_id: int
    run_ids: list[int]  # best first, at most db.leaderboard.MAX_RUN_IDS
    torch_versions: str | None
    devices: str | None
    last_result_at: dt.datetime


class LeaderboardPublic(BaseModel):
    data: list[LeaderboardRow]
    count: int


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


CSV_COLUMNS = (
    "rank",
    "config_key",
    "task",
    "architecture",
    "architecture_detail",
    "normalization",
    "optimizer",
    "init",
    "grad_clip",
    "n_runs",
    "n_seeds",
    "n_sweeps",
    "n_reached",
    "n_censored",
    "n_diverged",
    "budget_steps",
    "steps_censored_mean",
    "steps_reached_mean",
    "steps_reached_std",
    "reached_rate",
    "final_loss_mean",
    "final_loss_std",
    "test_accuracy_mean",
    "plateau_fraction_mean",
    "divergence_rate",
    "verdicts",
    "best_run_id",
    "torch_versions",
    "devices",
    "last_result_at",
)


def leaderboard_csv(rows: list[LeaderboardRow]) -> str:
    """A header line, then one line per configuration: the JSON's fields, with the short axis
    names of `summary` flattened (`architecture_detail` is summary.architecture). Floats are
    written with repr, so they read back equal to the JSON's; verdicts as `name=n;name=n`;
    an empty cell means none."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        fields = row.model_dump(mode="json")
        fields.update(
            {k: row.summary[k] for k in ("normalization", "optimizer", "init")},
            architecture_detail=row.summary["architecture"],
            grad_clip=row.summary["grad_clip"] or "none",
            verdicts=";".join(f"{k}={v}" for k, v in sorted(row.verdicts.items())),
        )
        writer.writerow(["" if fields[c] is None else fields[c] for c in CSV_COLUMNS])
    return out.getvalue()


def _num(value: float | None, spec: str = ".4g") -> str:
    return "—" if value is None or not math.isfinite(value) else format(value, spec)


def steps_text(row: LeaderboardRow | dict[str, Any]) -> str:
    """'312 (3/5 reached)': the censored-aware mean and how many runs it rests on."""
    r = row if isinstance(row, dict) else row.model_dump()
    return f"{_num(r['steps_censored_mean'], '.0f')} ({r['n_reached']}/{r['n_runs']} reached)"


def leaderboard_table(rows: list[dict[str, Any]], title: str) -> Any:
    """The ranked rows (JSON dicts, from the API or leaderboard_page) as a rich Table."""
    from rich.table import Table

    table = Table(title=title)
    tasks = {r["task"] for r in rows}
    columns = ["rank"] + (["task"] if len(tasks) > 1 else [])
    columns += ["architecture", "norm", "optimizer", "init", "clip", "runs/seeds"]
    columns += ["steps→target", "final loss", "test acc", "plateau %", "div %"]
    columns += ["verdicts", "best run"]
    for col in columns:
        right = col in ("rank", "runs/seeds", "best run")
        table.add_column(col, justify="right" if right else "left", overflow="fold")
    for r in rows:
        s = r["summary"]
        loss = _num(r["final_loss_mean"])
        if r["final_loss_std"] is not None:
            loss += f" ± {_num(r['final_loss_std'], '.2g')}"
        plateau = r["plateau_fraction_mean"]
        cells = [str(r["rank"])] + ([r["task"]] if len(tasks) > 1 else [])
        cells += [
            s["architecture"],
            s["normalization"],
            s["optimizer"],
            s["init"],
            s["grad_clip"] or "none",
            f"{r['n_runs']}/{r['n_seeds']}",
            steps_text(r),
            loss,
            _num(r["test_accuracy_mean"], ".3f"),
            _num(None if plateau is None else 100 * plateau, ".0f"),
            _num(100 * r["divergence_rate"], ".0f"),
            ", ".join(f"{k} {v}" for k, v in sorted(r["verdicts"].items())),
            str(r["best_run_id"]),
        ]
        table.add_row(*cells)
    return table


def leaderboard_from_db(url: str, query: LeaderboardQuery) -> dict[str, Any]:
    """The JSON of GET /api/v1/leaderboard, read from the database (the CLI without --url)."""
    from db.migrate import ensure_current
    from db.session import read_scope

    ensure_current(url, migrate=False)
    with read_scope(url) as session:
        return leaderboard_page(session=session, query=query).model_dump(mode="json")


# --- a run's figures ---------------------------------------------------------------------


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


def _present(xs: list[Any], ys: list[Any]) -> tuple[list[float], list[float]]:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=False) if y is not None and math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def write_figures(
    detail: dict[str, Any],
    probes: list[dict[str, Any]],
    out_dir: Path,
    *,
    fmt: Literal["svg", "png", "pdf"] = "svg",
) -> list[Path]:
    """Write the run's figures into out_dir; returns the files written.

    loss (train and eval, plateau segments shaded, target dashed), grad_norm (global and
    per layer), lr_clip (learning rate and clip events), and, when the run was probed:
    hessian (λmax, λmin over the probed steps), and from the last probe density, slices_1d,
    surface_2d (contour, the run's parameters at the origin), interpolation (init → end).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    title = f"run {detail['id']} · " + " · ".join(
        str(v) for k, v in detail["summary"].items() if k != "task" and v is not None
    )

    def save(fig: Any, name: str) -> None:
        fig.suptitle(textwrap.fill(title, 100), fontsize=7)
        fig.tight_layout()
        path = out_dir / f"run{detail['id']}_{name}.{fmt}"
        fig.savefig(path, dpi=150)
        plt.close(fig)
        written.append(path)

    c = detail["curves"]
    steps = c["step"]
    result = detail.get("result") or {}

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(*_present(steps, c["loss"]), lw=1, label="train (minibatch)")
    ax.plot(*_present(steps, c["eval_loss"]), "o-", ms=3, lw=1, label="test")
    for i, seg in enumerate((result.get("plateaus") or {}).get("segments", [])):
        label = "plateau" if i == 0 else None
        ax.axvspan(seg["start"], seg["end"], color="orange", alpha=0.2, lw=0, label=label)
    target = detail["config"]["target"]["loss"]
    ax.axhline(target, ls="--", color="gray", lw=0.8, label=f"target {target}")
    ax.set(xlabel="step", ylabel="loss", yscale="log")
    ax.legend(fontsize=7)
    save(fig, "loss")

    fig, ax = plt.subplots(figsize=(7, 3.5))
    layers: dict[str, list[Any]] = {}
    for i, row in enumerate(c["layer_grad_norms"]):
        for name, value in (row or {}).items():
            layers.setdefault(name, [None] * len(steps))[i] = value
    for name, values in layers.items():
        ax.plot(*_present(steps, values), lw=0.7, alpha=0.7, label=name)
    ax.plot(*_present(steps, c["grad_norm"]), color="black", lw=1.2, label="global")
    ax.set(xlabel="step", ylabel="gradient norm", yscale="log")
    ax.legend(fontsize=6, ncol=2)
    save(fig, "grad_norm")

    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(*_present(steps, c["lr"]), lw=1.2, label="learning rate")
    clipped = [s for s, flag in zip(steps, c["clipped"], strict=False) if flag]
    if clipped:
        ax.vlines(clipped, 0, 0.08, transform=ax.get_xaxis_transform(), color="red", lw=0.6)
        ax.plot([], [], color="red", label=f"clip events ({len(clipped)})")
    ax.set(xlabel="step", ylabel="learning rate")
    ax.legend(fontsize=7)
    save(fig, "lr_clip")

    if not probes:
        return written
    fig, ax = plt.subplots(figsize=(7, 3))
    ps = [p["step"] for p in probes]
    ax.plot(*_present(ps, [p["lambda_max"] for p in probes]), "o-", label="λmax")
    ax.plot(*_present(ps, [p["lambda_min"] for p in probes]), "s-", label="λmin")
    ax.axhline(0, color="gray", lw=0.6)
    ax.set(xlabel="step", ylabel="Hessian eigenvalue", yscale="symlog")
    ax.legend(fontsize=7)
    save(fig, "hessian")

    last = probes[-1]
    data = last["data"]
    density = data.get("density") or {}
    if density.get("grid"):
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.plot(density["grid"], density["values"], lw=1)
        ax.axvline(0, color="gray", lw=0.6)
        ax.set(xlabel="eigenvalue", ylabel="density", yscale="log", title=f"step {last['step']}")
        save(fig, "density")
    slices = data.get("slices") or {}
    labels = {
        "random_1d": "random direction",
        "top_eigvec_1d": "top eigenvector",
        "bottom_eigvec_1d": "bottom eigenvector",
    }
    if any(k in slices for k in labels):
        fig, ax = plt.subplots(figsize=(7, 3))
        for key, label in labels.items():
            if key in slices:
                ax.plot(*_present(slices[key]["alphas"], slices[key]["values"]), label=label)
        ax.axvline(0, color="gray", lw=0.6)
        ax.set(xlabel="α (distance along the direction)", ylabel="loss")
        ax.legend(fontsize=7)
        save(fig, "slices_1d")
    surface = slices.get("random_2d")
    if surface:
        fig, ax = plt.subplots(figsize=(5, 4.2))
        # values[i][j] = L(θ + α_i d1 + β_j d2): rows are α, so transpose for (x=α, y=β).
        z = [list(col) for col in zip(*surface["values"], strict=True)]
        cs = ax.contourf(surface["alphas"], surface.get("betas", surface["alphas"]), z, 20)
        fig.colorbar(cs, ax=ax, label="loss")
        ax.plot([0], [0], "r*", ms=12, label="the run")
        ax.set(xlabel="α (direction 1)", ylabel="β (direction 2)")
        ax.legend(fontsize=7)
        save(fig, "surface_2d")
    interp = slices.get("interpolation")
    if interp:
        fig, ax = plt.subplots(figsize=(7, 3))
        ts = interp.get("ts") or interp.get("alphas")
        ax.plot(*_present(ts, interp["values"]), "o-", ms=3)
        ax.set(xlabel="t (0 = initialization, 1 = end)", ylabel="loss", yscale="log")
        save(fig, "interpolation")
    return written
