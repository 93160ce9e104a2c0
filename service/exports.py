"""Exports of the leaderboard for other tools: CSV (GET /api/v1/leaderboard.csv)."""

from __future__ import annotations

import csv
import io

from service.leaderboard import LeaderboardRow

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
