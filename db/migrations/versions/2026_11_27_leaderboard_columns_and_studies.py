"""leaderboard columns and studies

Revision ID: 0b4611fa4e79
Revises: 2743bbdda4de
Create Date: 2026-11-27 22:46:29.797858
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import db.models

revision: str = "0b4611fa4e79"
down_revision: str | None = "2743bbdda4de"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "study",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("optuna_study_name", sa.String(length=255), nullable=False),
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", db.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["sweep_id"], ["sweep.id"], name=op.f("fk_study_sweep_id_sweep"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_study")),
        sa.UniqueConstraint("optuna_study_name", name=op.f("uq_study_optuna_study_name")),
    )
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("task", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("architecture", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("config_key", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.create_index(batch_op.f("ix_run_config_key"), ["config_key"], unique=False)
        batch_op.add_column(sa.Column("study_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("trial_number", sa.Integer(), nullable=True))
        batch_op.create_index(
            "ix_run_study_id_trial_number", ["study_id", "trial_number"], unique=False
        )
        batch_op.create_index(
            "ix_run_task_architecture_status", ["task", "architecture", "status"], unique=False
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_run_study_id_study"), "study", ["study_id"], ["id"], ondelete="SET NULL"
        )

    # Backfill the names from the stored config of runs made before this revision.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE run SET task = config::jsonb->'task'->>'name', "
            "architecture = config::jsonb->'architecture'->>'name'"
        )
    else:
        op.execute(
            "UPDATE run SET task = json_extract(config, '$.task.name'), "
            "architecture = json_extract(config, '$.architecture.name')"
        )

    # config_key is a hash of the canonical JSON (workers.config.config_key), computed here.
    from workers.config import config_key

    bind = op.get_bind()
    run = sa.table(
        "run",
        sa.column("id", sa.Integer),
        sa.column("config", sa.JSON),
        sa.column("config_key", sa.String),
    )
    for row in bind.execute(sa.select(run.c.id, run.c.config)).all():
        bind.execute(
            run.update().where(run.c.id == row.id).values(config_key=config_key(row.config))
        )

    with op.batch_alter_table("run_result", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pruned_step", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("device", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("torch_version", sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f("ix_run_result_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("run_result", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_run_result_created_at"))
        batch_op.drop_column("torch_version")
        batch_op.drop_column("device")
        batch_op.drop_column("pruned_step")

    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_run_study_id_study"), type_="foreignkey")
        batch_op.drop_index("ix_run_task_architecture_status")
        batch_op.drop_index("ix_run_study_id_trial_number")
        batch_op.drop_column("trial_number")
        batch_op.drop_column("study_id")
        batch_op.drop_column("architecture")
        batch_op.drop_column("task")
        batch_op.drop_index(batch_op.f("ix_run_config_key"))
        batch_op.drop_column("config_key")

    op.drop_table("study")
