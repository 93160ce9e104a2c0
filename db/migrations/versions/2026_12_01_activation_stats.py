"""per-layer activation statistics on run_metric

Revision ID: 3b8d5c2a61f0
Revises: 9fe1f08cc129
Create Date: 2026-12-01 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3b8d5c2a61f0"
down_revision: str | None = "9fe1f08cc129"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # {layer: {"mean", "std"}} at initialization (step 0) and at evaluation steps; NULL elsewhere
    with op.batch_alter_table("run_metric", schema=None) as batch_op:
        batch_op.add_column(sa.Column("activation_stats", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("run_metric", schema=None) as batch_op:
        batch_op.drop_column("activation_stats")
