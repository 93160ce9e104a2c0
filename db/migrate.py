"""Schema migrations with Alembic, driven from code (`plateau db upgrade`, service start)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from db.errors import DBError, SchemaNotCurrent
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


@contextmanager
def _migrating(url: str) -> Iterator[Connection]:
    """One connection in one transaction for Alembic.

    On SQLite, foreign keys are off meanwhile (PRAGMA, outside the transaction, as Alembic's
    batch-mode notes advise): batch mode rebuilds a table by copy, drop and rename, and with
    foreign keys on, dropping `sweep` would cascade to every run. What the migration leaves
    is checked with `PRAGMA foreign_key_check` before it commits.
    """
    engine = get_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:
            _sqlite_foreign_keys(connection, on=False)
        try:
            with connection.begin():
                yield connection
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise DBError(f"the migration broke foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                _sqlite_foreign_keys(connection, on=True)


def _sqlite_foreign_keys(connection: Connection, *, on: bool) -> None:
    # On the driver's connection, which is in autocommit mode outside a transaction (the
    # PRAGMA is a no-op inside one); SQLAlchemy's own execute would BEGIN first.
    driver = connection.connection.driver_connection
    assert driver is not None
    driver.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at `url` to `revision` (creates it from empty)."""
    cfg = alembic_config(url)
    with _migrating(url) as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def downgrade(url: str, revision: str) -> None:
    """Take the schema at `url` back to `revision` (tests; a rollback by hand)."""
    cfg = alembic_config(url)
    with _migrating(url) as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)


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
