"""Shared fixtures: databases (SQLite file and a fresh real Postgres database per test), a
migrated schema on each, and one real local Ray instance for the session.

Imports of the storage stack happen inside the fixtures, so the torch-only tests (probes,
CUDA) also run on a machine that has torch and pytest and nothing else (the GPU box).

Postgres comes from PLATEAU_TEST_POSTGRES_URL (default: postgres@127.0.0.1:5432/test, the
admin connection used to create throwaway databases). Without a server, Postgres tests
skip locally; with PLATEAU_REQUIRE_POSTGRES=1 (set by .ci/run) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# No scheduler thread in the apps and servers tests start (they would poll the test's
# database in the background); the tests of the scheduler turn it on where they need it.
os.environ.setdefault("PLATEAU_SCHEDULE", "false")
ADMIN_URL = os.environ.get(
    "PLATEAU_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@cache
def _postgres_problem() -> str | None:
    """Why Postgres cannot be used (None when it can); asked once, at the first test needing it."""
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as e:  # report why, once
        return str(e).splitlines()[0]


def require_postgres() -> None:
    problem = _postgres_problem()
    if problem is None:
        return
    if os.environ.get("PLATEAU_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required but unreachable at {ADMIN_URL}: {problem}")
    pytest.skip(f"PostgreSQL unreachable at {ADMIN_URL}: {problem}")


# The session's local Ray workers read the database URL from this file (their own secret
# file, workers/settings.py), never from a task's arguments; each test's database fixture
# writes its URL here.
WORKER_URL_FILE = Path(tempfile.gettempdir()) / f"plateau-test-{os.getpid()}" / "database-url"


@pytest.fixture(scope="session", autouse=True)
def _remove_worker_url_file() -> Iterator[None]:
    yield
    shutil.rmtree(WORKER_URL_FILE.parent, ignore_errors=True)


def point_workers_at(url: str) -> None:
    """Make the session's Ray workers (local_ray) use this database."""
    WORKER_URL_FILE.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(WORKER_URL_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(url)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty Postgres database (dropped afterwards)."""
    from sqlalchemy import create_engine, text

    from db.session import dispose_engines

    require_postgres()
    name = f"plateau_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    point_workers_at(url)
    yield url
    dispose_engines()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    from db.session import dispose_engines

    url = f"sqlite:///{tmp_path / 'plateau.db'}"
    point_workers_at(url)
    yield url
    dispose_engines()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """An empty database on each backend."""
    return request.getfixturevalue({"sqlite": "sqlite_url", "postgres": "pg_url"}[request.param])


@pytest.fixture
def migrated_url(db_url: str) -> str:
    """A database on each backend with the schema at head (through Alembic, not create_all)."""
    from db.migrate import upgrade

    upgrade(db_url)
    return db_url


@pytest.fixture
def pg_migrated_url(pg_url: str) -> str:
    from db.migrate import upgrade

    upgrade(pg_url)
    return pg_url


@pytest.fixture(scope="session")
def local_ray() -> Iterator[str]:
    """A real local Ray instance with 2 CPUs; yields its GCS address for subprocesses. Its
    workers read the database URL from WORKER_URL_FILE: the variable naming the file is in
    the environment only while Ray starts (Ray's processes inherit it), so that subprocesses
    of the tests (dispatchers, `plateau serve`) do not."""
    import ray

    saved = os.environ.get("PLATEAU_DATABASE_URL_FILE")
    os.environ["PLATEAU_DATABASE_URL_FILE"] = str(WORKER_URL_FILE)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        if saved is None:
            del os.environ["PLATEAU_DATABASE_URL_FILE"]
        else:
            os.environ["PLATEAU_DATABASE_URL_FILE"] = saved
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def plateau_cmd(*args: str) -> list[str]:
    """The `plateau` CLI of this interpreter, for subprocess tests."""
    return [sys.executable, "-m", "service.cli", *args]
