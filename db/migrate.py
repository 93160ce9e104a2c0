"""Schema migrations with Alembic, driven from code (`plateau db upgrade`, service start)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from db.errors import SchemaNotCurrent
from db.session import get_engine, masked_url, normalize_url

MIGRATIONS = Path(__file__).parent / "migrations"
# Not Alembic's default name: Optuna's RDBStorage lives in the same database and migrates its
# own tables with its own `alembic_version`.
VERSION_TABLE = "plateau_alembic_version"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url))
    cfg.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(slug)s")
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at `url` to `revision` (creates it from empty)."""
    cfg = alembic_config(url)
    with get_engine(url).begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def current_revision(url: str) -> str | None:
    with get_engine(url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def ensure_current(url: str, *, migrate: bool) -> None:
    """Migrate (when allowed) or refuse with the command that would fix the schema."""
    if current_revision(url) == head_revision():
        return
    if migrate:
        upgrade(url)
        return
    raise SchemaNotCurrent(
        f"the database schema at {masked_url(url)} is not at revision {head_revision()}; "
        "run `plateau db upgrade` (with the same DATABASE_URL) first"
    )
