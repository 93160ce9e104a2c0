"""Alembic environment: the URL comes from the caller (db.migrate), never from a file."""

from alembic import context
from sqlalchemy import Connection

from db.migrate import VERSION_TABLE
from db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    connectable = config.attributes.get("connection")
    if connectable is None:
        from db.session import get_engine

        url = config.get_main_option("sqlalchemy.url")
        assert url is not None  # db.migrate.alembic_config always sets it
        connectable = get_engine(url)
        with connectable.connect() as connection:
            _run(connection)
    else:
        _run(connectable)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        # Optuna's RDBStorage shares this database and keeps its own `alembic_version`.
        version_table=VERSION_TABLE,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
