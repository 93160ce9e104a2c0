"""rate-limit counters shared by API replicas; runs record when their curves were thinned

Revision ID: 6e2f4a9c1d83
Revises: 58aef8e72bb5
Create Date: 2026-12-02 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from db.models import UTCDateTime

revision: str = "6e2f4a9c1d83"
down_revision: str | None = "58aef8e72bb5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_limit_counter",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_limit_counter")),
    )
    op.create_index(op.f("ix_rate_limit_counter_expires_at"), "rate_limit_counter", ["expires_at"])
    # Plain ALTER TABLE on both backends (SQLite >= 3.35 drops columns too): a batch
    # operation would copy `run` on SQLite, and dropping the old copy cascades to every
    # table that references it (foreign keys are on), deleting all results.
    op.add_column("run", sa.Column("curves_pruned_at", UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("run", "curves_pruned_at")
    op.drop_index(op.f("ix_rate_limit_counter_expires_at"), table_name="rate_limit_counter")
    op.drop_table("rate_limit_counter")
