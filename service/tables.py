"""What the CLI prints: the leaderboard as a rich table, numbers rounded for people."""

from __future__ import annotations

import math
from typing import Any

from service.leaderboard import LeaderboardRow


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
