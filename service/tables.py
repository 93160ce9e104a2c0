"""What the CLI prints: sweeps, leaderboards and studies as rich tables, for people.

Numbers are rounded to 3 significant digits (the JSON keeps full precision), and a setting
is printed whole: a column too narrow for `normal(scale=1, std=0.01)` wraps it at its
commas (or folds it) instead of cutting it to `normal(scale=1.0,std=…`.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the API imports steps_text; only the CLI draws tables
    from rich.console import Console
    from rich.table import Table

    from service.leaderboard import LeaderboardRow

# A decimal number inside a setting's label ("lr=0.001", "scale=0.25578753079677286",
# "std=1e-05"), not the digits of a name ("mlp2") or an integer ("depth=3").
_DECIMAL = re.compile(r"(?<![\w.])-?(?:\d+\.\d+(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+)(?![\w.])")


def for_people(value: float | None) -> str:
    """3 significant digits ('0.256', '1.5e-05'), whole numbers from 1000 up ('2878');
    '—' for no value."""
    if value is None or not math.isfinite(value):
        return "—"
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.3g}"


def setting_text(label: str | None) -> str:
    """A setting's label as people read it: its decimals rounded (for_people) and a space
    after each comma, where a narrow column may wrap it. 'none' for no setting."""
    if label is None:
        return "none"
    rounded = _DECIMAL.sub(lambda m: for_people(float(m.group())), label)
    return re.sub(r",(?! )", ", ", rounded)


def steps_text(row: LeaderboardRow | dict[str, Any]) -> str:
    """'312 (3/5 reached)': the censored-aware mean and how many runs it rests on."""
    r = row if isinstance(row, dict) else row.model_dump()
    mean = r["steps_censored_mean"]
    shown = "—" if mean is None or not math.isfinite(mean) else f"{mean:.0f}"
    return f"{shown} ({r['n_reached']}/{r['n_runs']} reached)"


SETTING_COLUMNS = ["architecture", "norm", "optimizer", "init", "clip"]
# The columns that may wrap at their spaces; the others keep their width.
WRAPPED = {*SETTING_COLUMNS, "task", "verdicts", "steps→target", "final loss", "value", "seeds"}


def _table(title: str, columns: list[str], right: tuple[str, ...] = ()) -> Table:
    from rich.table import Table

    # Numbers and statuses keep their width; a narrow terminal takes its room from the
    # settings, which wrap at their commas, and folds (never "…") a word still too wide.
    table = Table(title=title)
    for col in columns:
        table.add_column(
            col,
            justify="right" if col in right else "left",
            overflow="fold",
            no_wrap=col not in WRAPPED,
        )
    return table


def fit(table: Table, console: Console) -> Table:
    """The table, every column allowed to fold when the console is too narrow to keep the
    numbers and statuses whole (rich would crop them)."""
    from rich.measure import Measurement

    unbounded = console.options.update_width(10**6)  # else the minimum is capped at the width
    if Measurement.get(console, unbounded, table).minimum > console.width:
        for column in table.columns:
            column.no_wrap = False
    return table


def _percent(fraction: float | None) -> str:
    return "—" if fraction is None else f"{100 * fraction:.0f}"


def _settings(summary: dict[str, Any]) -> list[str]:
    """The axes a run or configuration is named by, in the tables' column order."""
    keys = ("architecture", "normalization", "optimizer", "init", "grad_clip")
    return [setting_text(summary[k]) for k in keys]


def leaderboard_table(rows: list[dict[str, Any]], title: str) -> Table:
    """The ranked rows (JSON dicts, from the API or leaderboard_page) as a rich Table."""
    several_tasks = len({r["task"] for r in rows}) > 1
    columns = ["rank"] + (["task"] if several_tasks else []) + SETTING_COLUMNS
    columns += ["runs/seeds", "steps→target", "final loss", "test acc", "plateau %", "div %"]
    columns += ["verdicts", "best run"]
    table = _table(title, columns, right=("rank", "runs/seeds", "best run"))
    for r in rows:
        loss = for_people(r["final_loss_mean"])
        if r["final_loss_std"] is not None:
            loss += f" ± {for_people(r['final_loss_std'])}"
        table.add_row(
            str(r["rank"]),
            *([r["task"]] if several_tasks else []),
            *_settings(r["summary"]),
            f"{r['n_runs']}/{r['n_seeds']}",
            steps_text(r),
            loss,
            for_people(r["test_accuracy_mean"]),
            _percent(r["plateau_fraction_mean"]),
            _percent(r["divergence_rate"]),
            ", ".join(f"{k} {v}" for k, v in sorted(r["verdicts"].items())),
            str(r["best_run_id"]),
        )
    return table


def sweep_title(sweep: dict[str, Any]) -> str:
    """ "sweep 3 'quickstart': finished, {'succeeded': 24}" (a sweep as the API gives it)."""
    return f"sweep {sweep['id']} '{sweep['name']}': {sweep['status']}, {sweep['counts']}"


def ranked_table(rows: list[dict[str, Any]], title: str) -> Table:
    """A sweep's runs (as the API gives them) ranked by steps-to-target (reached first),
    then final loss."""

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        reached = r.get("steps_to_target") is not None
        loss = r.get("final_loss")
        return (
            not reached,
            r.get("steps_to_target") or 0,
            loss if loss is not None else float("inf"),
        )

    columns = ["rank", "run", *SETTING_COLUMNS, "seed", "status", "steps→target"]
    columns += ["final loss", "test acc", "plateau %", "verdict"]
    table = _table(title, columns, right=("rank", "run", "seed"))
    for i, r in enumerate(sorted(rows, key=key), 1):
        s = r["summary"]
        stt = r.get("steps_to_target")
        censored = "censored" if r.get("status") == "succeeded" else "—"
        table.add_row(
            str(i),
            str(r["id"]),
            *_settings(s),
            str(s["seed"]),
            r["status"],
            str(stt) if stt is not None else censored,
            for_people(r.get("final_loss")),
            for_people(r.get("test_accuracy")),
            _percent(r.get("plateau_fraction")),
            (r.get("diagnosis") or {}).get("verdict", "—"),
        )
    return table


def params_text(params: dict[str, Any]) -> str:
    """A trial's parameters on one line: 'init=orthogonal, init_scale=0.478, grad_clip=norm'."""
    return ", ".join(
        f"{k}={for_people(v) if isinstance(v, float) else v}" for k, v in params.items()
    )


def study_progress(progress: dict[str, Any]) -> tuple[str, int]:
    """(the line, the number of ended trials) for a study's progress (service.studies.progress):
    '9 complete, 3 pruned, 0 failed, 2 running; best 262 (trial 7: init=orthogonal, ...)'."""
    counts, best = progress["counts"], progress["best"]
    ended = sum(counts.get(s, 0) for s in ("complete", "pruned", "fail"))
    text = (
        f"{counts.get('complete', 0)} complete, {counts.get('pruned', 0)} pruned, "
        f"{counts.get('fail', 0)} failed, {counts.get('running', 0)} running"
    )
    if best is not None:
        text += (
            f"; best {for_people(best['value'])} (trial {best['number']}: "
            f"{params_text(best['params'])})"
        )
    return text, ended


def params_table(params: dict[str, Any], title: str) -> Table:
    table = _table(title, ["parameter", "value"])
    for k, v in params.items():
        table.add_row(k, for_people(v) if isinstance(v, float) else str(v))
    return table


def confirmation_table(summary: dict[str, Any], title: str) -> Table:
    """Best setting vs baseline on fresh seeds (service.studies.confirmation_summary)."""
    columns = ["setting", "seeds", "mean steps→target (censored at budget)", "reached"]
    table = _table(title, [*columns, "mean final loss"])
    for name in ("best", "baseline"):
        row = summary[name]
        table.add_row(
            name,
            ", ".join(str(s) for s in row["seeds"]),
            f"{row['mean_steps_to_target']:.0f}",
            f"{row['reached']}/{len(row['seeds'])}",
            for_people(row["mean_final_loss"]),
        )
    return table
