"""config_summary: one aggregated row per configuration for the leaderboard

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


def upgrade() -> None:
    op.create_table(
        "config_summary",
        sa.Column("config_key", sa.String(length=64), nullable=False),
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("architecture", sa.String(length=64), nullable=False),
        sa.Column("n_runs", sa.Integer(), nullable=False),
        sa.Column("n_reached", sa.Integer(), nullable=False),
        sa.Column("n_diverged", sa.Integer(), nullable=False),
        sa.Column("steps_sum", sa.Float(), nullable=True),
        sa.Column("steps_reached_mean", sa.Float(), nullable=True),
        sa.Column("steps_var", sa.Float(), nullable=True),
        sa.Column("final_loss_mean", sa.Float(), nullable=True),
        sa.Column("final_loss_var", sa.Float(), nullable=True),
        sa.Column("test_accuracy_mean", sa.Float(), nullable=True),
        sa.Column("plateau_fraction_mean", sa.Float(), nullable=True),
        sa.Column("last_result_at", db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("budget_steps", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("config_key", name=op.f("pk_config_summary")),
    )
    with op.batch_alter_table("config_summary", schema=None) as batch_op:
        batch_op.create_index("ix_config_summary_task", ["task", "architecture"], unique=False)

    # Backfill from the results already recorded: the aggregate of
    # db.leaderboard._aggregate, written out here so that this migration does not change
    # when that code does.
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":

        def variance(x: str) -> str:
            return f"var_samp({x})"
    else:  # SQLite has no variance aggregate

        def variance(x: str) -> str:
            return (
                f"CASE WHEN count({x}) > 1 THEN (sum({x} * {x}) - sum({x}) * sum({x}) "
                f"/ count({x})) / (count({x}) - 1) END"
            )

    steps = "CAST(steps_to_target AS FLOAT)"
    bind.execute(
        sa.text(
            f"""
            INSERT INTO config_summary (config_key, task, architecture, n_runs, n_reached,
                n_diverged, steps_sum, steps_reached_mean, steps_var, final_loss_mean,
                final_loss_var, test_accuracy_mean, plateau_fraction_mean, last_result_at,
                budget_steps)
            SELECT config_key, min(task), min(architecture), count(*),
                   sum(CASE WHEN reached_target THEN 1 ELSE 0 END),
                   sum(CASE WHEN outcome = 'diverged' THEN 1 ELSE 0 END),
                   sum({steps}), avg({steps}), {variance(steps)},
                   avg(final_loss), {variance("final_loss")},
                   avg(test_accuracy), avg(plateau_fraction), max(created_at), max(budget_steps)
            FROM run_result
            WHERE outcome IN ('succeeded', 'diverged') AND pruned_step IS NULL
            GROUP BY config_key
            """
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("config_summary", schema=None) as batch_op:
        batch_op.drop_index("ix_config_summary_task")
    op.drop_table("config_summary")
