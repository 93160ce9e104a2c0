"""users, API keys, page sessions and the audit log; sweep and study owners become users

Revision ID: 58aef8e72bb5
Revises: 3b8d5c2a61f0
Create Date: 2026-12-02 09:00:00

Every distinct free-text `owner` of a sweep or a study becomes a user of origin 'legacy' and
role 'viewer' (a name anyone could have typed proves nothing, so it gets no right to change
anything until an admin gives it a role and a key), and the rows point at it through
`owner_id`; nothing is left ownerless. One audit event per migrated user says where it came
from. Downgrade writes the names back into `owner` and drops the new tables.

On SQLite the sweep and study tables are rebuilt (batch mode); db.migrate turns foreign keys
off meanwhile, or dropping the old sweep table would cascade to its runs.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import db.models

revision: str = "58aef8e72bb5"
down_revision: str | None = "3b8d5c2a61f0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = db.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "app_user",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("disabled_at", UTC, nullable=True),
        sa.CheckConstraint("role IN ('viewer', 'member', 'admin')", name=op.f("ck_app_user_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_app_user")),
        sa.UniqueConstraint("name", name=op.f("uq_app_user_name")),
    )
    op.create_table(
        "api_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("last_used_at", UTC, nullable=True),
        sa.Column("revoked_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_api_key_user_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_key_key_hash")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_key_prefix")),
    )
    op.create_index(op.f("ix_api_key_user_id"), "api_key", ["user_id"], unique=False)
    op.create_table(
        "web_session",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_key.id"],
            name=op.f("fk_web_session_key_id_api_key"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_session")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_web_session_token_hash")),
    )
    op.create_index(op.f("ix_web_session_key_id"), "web_session", ["key_id"], unique=False)
    op.create_table(
        "audit_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("key_prefix", sa.String(length=16), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["app_user.id"], name=op.f("fk_audit_event_actor_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_event")),
    )

    # Free-text owners -> legacy users, in SQL whatever the number of sweeps.
    now = sa.bindparam("now", db.models.utcnow(), type_=UTC)
    op.execute(
        sa.text(
            "INSERT INTO app_user (name, role, origin, created_at) "
            "SELECT owner, 'viewer', 'legacy', :now FROM "
            "(SELECT owner FROM sweep UNION SELECT owner FROM study) AS owners"
        ).bindparams(now)
    )
    conn = op.get_bind()
    migrated = conn.execute(sa.text("SELECT id, name FROM app_user ORDER BY name")).all()
    if migrated:
        event = sa.table(
            "audit_event",
            sa.column("created_at", UTC),
            *(sa.column(c) for c in ("actor_id", "actor", "action", "target")),
            sa.column("detail", sa.JSON),
        )
        conn.execute(
            event.insert(),
            [
                {
                    "created_at": now.value,
                    "actor_id": None,
                    "actor": "migration",
                    "action": "user.create",
                    "target": f"user:{name}",
                    "detail": {"user_id": user_id, "role": "viewer", "origin": "legacy"},
                }
                for user_id, name in migrated
            ],
        )

    for table in ("sweep", "study"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("owner_id", sa.Integer(), nullable=True))
        op.execute(
            f"UPDATE {table} SET owner_id = "
            f"(SELECT app_user.id FROM app_user WHERE app_user.name = {table}.owner)"
        )
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("owner_id", existing_type=sa.Integer(), nullable=False)
            batch_op.create_foreign_key(
                batch_op.f(f"fk_{table}_owner_id_app_user"), "app_user", ["owner_id"], ["id"]
            )
            batch_op.create_index(batch_op.f(f"ix_{table}_owner_id"), ["owner_id"], unique=False)
            batch_op.drop_column("owner")


def downgrade() -> None:
    for table in ("sweep", "study"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("owner", sa.String(length=200), nullable=True))
        op.execute(
            f"UPDATE {table} SET owner = "
            f"(SELECT app_user.name FROM app_user WHERE app_user.id = {table}.owner_id)"
        )
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("owner", existing_type=sa.String(length=200), nullable=False)
            batch_op.drop_index(batch_op.f(f"ix_{table}_owner_id"))
            batch_op.drop_constraint(
                batch_op.f(f"fk_{table}_owner_id_app_user"), type_="foreignkey"
            )
            batch_op.drop_column("owner_id")
    op.drop_table("audit_event")
    op.drop_index(op.f("ix_web_session_key_id"), table_name="web_session")
    op.drop_table("web_session")
    op.drop_index(op.f("ix_api_key_user_id"), table_name="api_key")
    op.drop_table("api_key")
    op.drop_table("app_user")
