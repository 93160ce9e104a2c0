"""schedules: sweeps and studies fired on a cron schedule, their firings, events, alerts
and webhook deliveries

Revision ID: 7a1c3e5b9d20
Revises: 6e2f4a9c1d83
Create Date: 2026-12-02 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from db.models import UTCDateTime

revision: str = "7a1c3e5b9d20"
down_revision: str | None = "6e2f4a9c1d83"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schedule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("cron", sa.String(length=200), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("spec_version", sa.Integer(), nullable=False),
        sa.Column("webhook_url", sa.String(length=2000), nullable=True),
        sa.Column("webhook_secret", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("catch_up", sa.String(length=16), nullable=False),
        sa.Column("compare_nights", sa.Integer(), nullable=False),
        sa.Column("keep_curves_nights", sa.Integer(), nullable=False),
        sa.Column("slots_from", UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('sweep', 'study')", name=op.f("ck_schedule_kind")),
        sa.CheckConstraint("catch_up IN ('latest', 'none')", name=op.f("ck_schedule_catch_up")),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["app_user.id"], name=op.f("fk_schedule_owner_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule")),
    )
    op.create_index(op.f("ix_schedule_owner_id"), "schedule", ["owner_id"])
    op.create_table(
        "schedule_firing",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("schedule_id", sa.Integer(), nullable=False),
        sa.Column("slot", UTCDateTime(timezone=True), nullable=False),
        sa.Column("night", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("fired_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("late_seconds", sa.Float(), nullable=False),
        sa.Column("missed", sa.Integer(), nullable=False),
        sa.Column("spec_version", sa.Integer(), nullable=False),
        sa.Column("fired_by", sa.String(length=200), nullable=False),
        sa.Column("sweep_id", sa.Integer(), nullable=True),
        sa.Column("study_id", sa.Integer(), nullable=True),
        sa.Column("analysed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("environment", sa.JSON(), nullable=True),
        sa.Column("confirm_claimed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("confirm_sweep_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["confirm_sweep_id"],
            ["sweep.id"],
            name="fk_schedule_firing_confirm_sweep_id_sweep",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedule.id"],
            name=op.f("fk_schedule_firing_schedule_id_schedule"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["sweep.id"],
            name=op.f("fk_schedule_firing_sweep_id_sweep"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["study.id"],
            name=op.f("fk_schedule_firing_study_id_study"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_firing")),
        sa.UniqueConstraint("schedule_id", "slot", name="uq_schedule_firing_slot"),
        sa.UniqueConstraint("schedule_id", "night", name="uq_schedule_firing_night"),
    )
    op.create_table(
        "schedule_alert",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("schedule_id", sa.Integer(), nullable=False),
        sa.Column("firing_id", sa.Integer(), nullable=False),
        sa.Column("config_key", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=500), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("effect", sa.Float(), nullable=True),
        sa.Column("ci_low", sa.Float(), nullable=True),
        sa.Column("ci_high", sa.Float(), nullable=True),
        sa.Column("p_value", sa.Float(), nullable=True),
        sa.Column("q_value", sa.Float(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedule.id"],
            name=op.f("fk_schedule_alert_schedule_id_schedule"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["firing_id"],
            ["schedule_firing.id"],
            name=op.f("fk_schedule_alert_firing_id_schedule_firing"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_alert")),
    )
    op.create_index(op.f("ix_schedule_alert_schedule_id"), "schedule_alert", ["schedule_id"])
    op.create_index(op.f("ix_schedule_alert_firing_id"), "schedule_alert", ["firing_id"])
    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("firing_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("log", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["firing_id"],
            ["schedule_firing.id"],
            name=op.f("fk_webhook_delivery_firing_id_schedule_firing"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_delivery")),
        sa.UniqueConstraint("firing_id", name=op.f("uq_webhook_delivery_firing_id")),
    )
    op.create_table(
        "schedule_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("schedule_id", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedule.id"],
            name=op.f("fk_schedule_event_schedule_id_schedule"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_event")),
    )
    op.create_index(op.f("ix_schedule_event_schedule_id"), "schedule_event", ["schedule_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_schedule_event_schedule_id"), table_name="schedule_event")
    op.drop_table("schedule_event")
    op.drop_table("webhook_delivery")
    op.drop_index(op.f("ix_schedule_alert_firing_id"), table_name="schedule_alert")
    op.drop_index(op.f("ix_schedule_alert_schedule_id"), table_name="schedule_alert")
    op.drop_table("schedule_alert")
    op.drop_table("schedule_firing")
    op.drop_index(op.f("ix_schedule_owner_id"), table_name="schedule")
    op.drop_table("schedule")
