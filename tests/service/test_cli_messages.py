"""What the `plateau` CLI says to a person (issue 12): versions, progress, next steps, help
that reads at 80 columns, and errors that name the bad value and the nearest good one."""

from __future__ import annotations

import pytest

from tests.service.conftest import QUICK_SPEC
from tests.service.test_cli import plateau


def test_version_names_the_package_torch_and_its_device():
    result = plateau("--version")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("plateau-bench ") and ", torch 2." in line, line
    assert line.endswith((" on cpu", ")")), line  # "on cpu" or "on cuda (<device name>)"


@pytest.fixture
def queued_sweep(sqlite_url: str) -> str:
    """A SQLite database (its URL) holding sweep 1, QUICK_SPEC's 8 runs, all queued."""
    from db.migrate import upgrade
    from db.session import session_scope
    from service.spec import SweepSpec
    from service.sweeps import submit_sweep

    upgrade(sqlite_url)
    with session_scope(sqlite_url) as session:
        submit_sweep(
            session=session, spec=SweepSpec.model_validate(QUICK_SPEC), source="cli", max_attempts=1
        )
    return sqlite_url


def test_status_without_url_reads_the_database(queued_sweep):
    result = plateau("status", "1", env={"DATABASE_URL": queued_sweep})
    assert result.returncode == 0, result.stderr
    assert "sweep 1 'tiny': queued, {'queued': 8}" in result.stdout
    assert "cannot reach" not in result.stderr
    missing = plateau("status", "2", env={"DATABASE_URL": queued_sweep})
    assert missing.returncode == 2 and "sweep 2 not found" in missing.stderr


def test_status_with_url_asks_the_service():
    result = plateau("status", "1", "--url", "http://127.0.0.1:9")
    assert result.returncode == 2 and "cannot reach http://127.0.0.1:9" in result.stderr
