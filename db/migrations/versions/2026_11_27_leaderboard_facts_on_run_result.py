"""leaderboard facts on run_result

Revision ID: d1742b5e3a17
Revises: 0b4611fa4e79
Create Date: 2026-11-27 23:10:54.724034
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d1742b5e3a17"
down_revision: str | None = "0b4611fa4e79"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("run_result", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("config_key", sa.String(length=64), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column("task", sa.String(length=64), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column("architecture", sa.String(length=64), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("sweep_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("budget_steps", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("verdict", sa.String(length=32), nullable=True))

    # Backfill the copies from each result's run (portable: plain SQL on both backends).
    bind = op.get_bind()
    run = sa.table(
        "run",
        sa.column("id", sa.Integer),
        sa.column("config_key", sa.String),
        sa.column("task", sa.String),
        sa.column("architecture", sa.String),
        sa.column("sweep_id", sa.Integer),
        sa.column("config", sa.JSON),
    )
    result = sa.table(
        "run_result",
        sa.column("run_id", sa.Integer),
        sa.column("diagnosis", sa.JSON),
        *(
            sa.column(c)
            for c in ("config_key", "task", "architecture", "sweep_id", "budget_steps", "verdict")
        ),
    )
    rows = bind.execute(
        sa.select(run, result.c.diagnosis).join(result, result.c.run_id == run.c.id)
    ).all()
    for r in rows:
        bind.execute(
            result.update()
            .where(result.c.run_id == r.id)
            .values(
                config_key=r.config_key,
                task=r.task,
                architecture=r.architecture,
                sweep_id=r.sweep_id,
                budget_steps=(r.config.get("budget") or {}).get("steps"),
                verdict=(r.diagnosis or {}).get("verdict"),
            )
        )

    with op.batch_alter_table("run_result", schema=None) as batch_op:
        batch_op.create_index(
            "ix_run_result_leaderboard",
            ["config_key"],
            unique=False,
            postgresql_include=(
                "task",
                "architecture",
                "sweep_id",
                "outcome",
                "pruned_step",
                "reached_target",
                "steps_to_target",
                "final_loss",
                "test_accuracy",
                "plateau_fraction",
                "budget_steps",
                "created_at",
                "device",
                "torch_version",
                "run_id",
            ),
        )
        batch_op.create_index(
            "ix_run_result_leaderboard_task",
            ["task", "config_key"],
            unique=False,
            postgresql_include=(
                "architecture",
                "sweep_id",
                "outcome",
                "pruned_step",
                "reached_target",
                "steps_to_target",
                "final_loss",
                "test_accuracy",
                "plateau_fraction",
                "budget_steps",
                "created_at",
                "device",
                "torch_version",
                "run_id",
            ),
        )


def downgrade() -> None:
    with op.batch_alter_table("run_result", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_run_result_leaderboard_task",
            postgresql_include=(
                "architecture",
                "sweep_id",
                "outcome",
                "pruned_step",
                "reached_target",
                "steps_to_target",
                "final_loss",
                "test_accuracy",
                "plateau_fraction",
                "budget_steps",
                "created_at",
                "device",
                "torch_version",
                "run_id",
            ),
        )
        batch_op.drop_index(
            "ix_run_result_leaderboard",
            postgresql_include=(
                "task",
                "architecture",
                "sweep_id",
                "outcome",
                "pruned_step",
                "reached_target",
                "steps_to_target",
                "final_loss",
                "test_accuracy",
                "plateau_fraction",
                "budget_steps",
                "created_at",
                "device",
                "torch_version",
                "run_id",
            ),
        )
        batch_op.drop_column("verdict")
        batch_op.drop_column("budget_steps")
        batch_op.drop_column("sweep_id")
        batch_op.drop_column("architecture")
        batch_op.drop_column("task")
        batch_op.drop_column("config_key")
