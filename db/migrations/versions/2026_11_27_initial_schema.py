"""initial schema

Revision ID: 2743bbdda4de
Revises:
Create Date: 2026-11-27 22:15:05.128650
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import db.models

revision: str = "2743bbdda4de"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sweep",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("n_runs", sa.Integer(), nullable=False),
        sa.Column("software", sa.JSON(), nullable=False),
        sa.Column("created_at", db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", db.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweep")),
    )
    with op.batch_alter_table("sweep", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sweep_created_at"), ["created_at"], unique=False)

    op.create_table(
        "run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("grid_index", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", db.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("queued_at", db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", db.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", db.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["sweep_id"], ["sweep.id"], name=op.f("fk_run_sweep_id_sweep"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run")),
    )
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_run_config_hash"), ["config_hash"], unique=False)
        batch_op.create_index("ix_run_status_id", ["status", "id"], unique=False)
        batch_op.create_index("ix_run_sweep_id_status", ["sweep_id", "status"], unique=False)

    op.create_table(
        "probe",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("lambda_max", sa.Float(), nullable=True),
        sa.Column("lambda_min", sa.Float(), nullable=True),
        sa.Column("trace", sa.Float(), nullable=True),
        sa.Column("trace_stderr", sa.Float(), nullable=True),
        sa.Column("negative_mass", sa.Float(), nullable=True),
        sa.Column("negative_mass_stderr", sa.Float(), nullable=True),
        sa.Column("grad_norm", sa.Float(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", db.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["run.id"], name=op.f("fk_probe_run_id_run"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_probe")),
    )
    with op.batch_alter_table("probe", schema=None) as batch_op:
        batch_op.create_index("ix_probe_run_id_step", ["run_id", "step"], unique=False)

    op.create_table(
        "run_metric",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("lr", sa.Float(), nullable=True),
        sa.Column("grad_norm", sa.Float(), nullable=True),
        sa.Column("update_norm", sa.Float(), nullable=True),
        sa.Column("param_norm", sa.Float(), nullable=True),
        sa.Column("clipped", sa.Boolean(), nullable=True),
        sa.Column("eval_loss", sa.Float(), nullable=True),
        sa.Column("eval_accuracy", sa.Float(), nullable=True),
        sa.Column("layer_grad_norms", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["run.id"], name=op.f("fk_run_metric_run_id_run"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "attempt", "step", name=op.f("pk_run_metric")),
    )
    op.create_table(
        "run_result",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("steps_done", sa.Integer(), nullable=False),
        sa.Column("final_loss", sa.Float(), nullable=True),
        sa.Column("test_loss", sa.Float(), nullable=True),
        sa.Column("test_accuracy", sa.Float(), nullable=True),
        sa.Column("reached_target", sa.Boolean(), nullable=False),
        sa.Column("steps_to_target", sa.Integer(), nullable=True),
        sa.Column("plateau_fraction", sa.Float(), nullable=True),
        sa.Column("longest_plateau", sa.Integer(), nullable=True),
        sa.Column("plateaus", sa.JSON(), nullable=True),
        sa.Column("clip_fraction", sa.Float(), nullable=True),
        sa.Column("diverged_step", sa.Integer(), nullable=True),
        sa.Column("diagnosis", sa.JSON(), nullable=True),
        sa.Column("environment", sa.JSON(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("created_at", db.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["run.id"], name=op.f("fk_run_result_run_id_run"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_result")),
    )


def downgrade() -> None:
    op.drop_table("run_result")
    op.drop_table("run_metric")
    with op.batch_alter_table("probe", schema=None) as batch_op:
        batch_op.drop_index("ix_probe_run_id_step")

    op.drop_table("probe")
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_index("ix_run_sweep_id_status")
        batch_op.drop_index("ix_run_status_id")
        batch_op.drop_index(batch_op.f("ix_run_config_hash"))

    op.drop_table("run")
    with op.batch_alter_table("sweep", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sweep_created_at"))

    op.drop_table("sweep")
