"""result_rollup and config_summary: the leaderboard's counts and sums

Revision ID: 5c0e9a2f71b4
Revises: d1742b5e3a17
Create Date: 2026-11-28 01:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import db.models

revision: str = "5c0e9a2f71b4"
down_revision: str | None = "d1742b5e3a17"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTS = ("n_runs", "n_reached", "n_diverged", "steps_n", "final_loss_n")
SUMS = ("steps_sum", "steps_sumsq", "final_loss_sum", "final_loss_sumsq")
ADDED: tuple[str, ...] = (*COUNTS, *SUMS, "test_accuracy_n", "test_accuracy_sum")
ADDED += ("plateau_fraction_n", "plateau_fraction_sum")


def sums_columns() -> list[sa.Column]:
    """db.models.ResultSums' columns."""
    return [
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("architecture", sa.String(length=64), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in COUNTS),
        *(sa.Column(name, sa.Float(), nullable=False) for name in SUMS),
        sa.Column("test_accuracy_n", sa.Integer(), nullable=False),
        sa.Column("test_accuracy_sum", sa.Float(), nullable=False),
        sa.Column("plateau_fraction_n", sa.Integer(), nullable=False),
        sa.Column("plateau_fraction_sum", sa.Float(), nullable=False),
        sa.Column("last_result_at", db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("budget_steps", sa.Integer(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "result_rollup",
        sa.Column("config_key", sa.String(length=64), nullable=False),
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(length=32), nullable=False),
        sa.Column("torch_version", sa.String(length=32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *sums_columns(),
        sa.PrimaryKeyConstraint(
            "config_key",
            "sweep_id",
            "device",
            "torch_version",
            "day",
            name=op.f("pk_result_rollup"),
        ),
    )
    with op.batch_alter_table("result_rollup", schema=None) as batch_op:
        batch_op.create_index("ix_result_rollup_task", ["task", "architecture"], unique=False)
    op.create_table(
        "config_summary",
        sa.Column("config_key", sa.String(length=64), nullable=False),
        *sums_columns(),
        sa.PrimaryKeyConstraint("config_key", name=op.f("pk_config_summary")),
    )
    with op.batch_alter_table("config_summary", schema=None) as batch_op:
        batch_op.create_index("ix_config_summary_task", ["task", "architecture"], unique=False)

    # Backfill from the results already recorded: db.leaderboard.rebuild_rollups, written out
    # here so that this migration does not change when that code does.
    if op.get_bind().dialect.name == "postgresql":
        day = "CAST(timezone('UTC', created_at) AS DATE)"
    else:  # SQLite keeps naive UTC text
        day = "date(created_at)"
    steps = "CAST(steps_to_target AS FLOAT)"
    op.execute(
        f"""
        INSERT INTO result_rollup (config_key, sweep_id, device, torch_version, day, task,
            architecture, n_runs, n_reached, n_diverged, steps_n, steps_sum, steps_sumsq,
            final_loss_n, final_loss_sum, final_loss_sumsq, test_accuracy_n,
            test_accuracy_sum, plateau_fraction_n, plateau_fraction_sum, last_result_at,
            budget_steps)
        SELECT config_key, COALESCE(sweep_id, 0), COALESCE(device, ''),
               COALESCE(torch_version, ''), {day}, min(task), min(architecture), count(*),
               sum(CASE WHEN reached_target THEN 1 ELSE 0 END),
               sum(CASE WHEN outcome = 'diverged' THEN 1 ELSE 0 END),
               count({steps}), COALESCE(sum({steps}), 0.0),
               COALESCE(sum({steps} * {steps}), 0.0),
               count(final_loss), COALESCE(sum(final_loss), 0.0),
               COALESCE(sum(final_loss * final_loss), 0.0),
               count(test_accuracy), COALESCE(sum(test_accuracy), 0.0),
               count(plateau_fraction), COALESCE(sum(plateau_fraction), 0.0),
               max(created_at), max(budget_steps)
        FROM run_result
        WHERE outcome IN ('succeeded', 'diverged') AND pruned_step IS NULL
        GROUP BY config_key, COALESCE(sweep_id, 0), COALESCE(device, ''),
                 COALESCE(torch_version, ''), {day}
        """
    )
    op.execute(
        f"""
        INSERT INTO config_summary (config_key, task, architecture, {", ".join(ADDED)},
            last_result_at, budget_steps)
        SELECT config_key, min(task), min(architecture), {", ".join(f"sum({c})" for c in ADDED)},
               max(last_result_at), max(budget_steps)
        FROM result_rollup
        GROUP BY config_key
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("config_summary", schema=None) as batch_op:
        batch_op.drop_index("ix_config_summary_task")
    op.drop_table("config_summary")
    with op.batch_alter_table("result_rollup", schema=None) as batch_op:
        batch_op.drop_index("ix_result_rollup_task")
    op.drop_table("result_rollup")
