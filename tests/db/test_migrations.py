import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from db.errors import SchemaNotCurrent
from db.migrate import VERSION_TABLE, current_revision, ensure_current, head_revision, upgrade
from db.models import Base
from db.session import get_engine


def test_migrations_build_the_schema_from_empty(db_url):
    upgrade(db_url)
    tables = set(inspect(get_engine(db_url)).get_table_names())
    assert {"sweep", "run", "run_metric", "run_result", "probe"} <= tables
    assert current_revision(db_url) == head_revision()


def test_migrated_schema_matches_the_models(migrated_url):
    def ours(name, type_, parent_names):  # Optuna's tables share the database
        return type_ != "table" or name in Base.metadata.tables

    with get_engine(migrated_url).connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "include_name": ours}
        )
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_a_stale_schema_is_refused_with_the_command_to_run(db_url):
    with pytest.raises(SchemaNotCurrent, match="plateau db upgrade"):
        ensure_current(db_url, migrate=False)
    ensure_current(db_url, migrate=True)
    assert current_revision(db_url) == head_revision()


def test_the_leaderboard_migration_backfills_names_of_existing_runs(db_url):
    import json

    from sqlalchemy import text

    from workers.config import config_key

    upgrade(db_url, "2743bbdda4de")  # the initial schema
    config = '{"task": {"name": "digits"}, "architecture": {"name": "mlp"}}'
    with get_engine(db_url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO sweep (id, name, owner, source, spec, n_runs, software, "
                "created_at) VALUES (1, 's', 'o', 'api', '{}', 1, '{}', "
                "CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO run (id, sweep_id, grid_index, config, config_hash, "
                "status, attempts, max_attempts, queued_at) VALUES (1, 1, 0, "
                f"'{config}', 'h', 'queued', 0, 3, CURRENT_TIMESTAMP)"
            )
        )
    upgrade(db_url)
    with get_engine(db_url).connect() as conn:
        row = conn.execute(text("SELECT task, architecture, config_key FROM run")).one()
    assert row == ("digits", "mlp", config_key(json.loads(config)))
