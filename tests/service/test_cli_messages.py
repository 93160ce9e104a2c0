"""What the `plateau` CLI says to a person (issue 12): versions, progress, next steps, help
that reads at 80 columns, and errors that name the bad value and the nearest good one."""

from __future__ import annotations

import pytest
import yaml

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


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["leaderboard", "--metric", "stpes"],
            "--metric: unknown metric 'stpes'; did you mean 'steps'?",
        ),
        (
            ["leaderboard", "--task", "digit"],
            "--task: unknown task 'digit'; did you mean 'digits'?",
        ),
        (
            ["leaderboard", "--architecture", "mpl"],
            "unknown architecture 'mpl'; did you mean 'mlp'?",
        ),
        (["leaderboard", "--order", "up"], "--order: unknown order 'up' (known: asc, desc)"),
        (["plot", "1", "--format", "svgg"], "--format: unknown format 'svgg'; did you mean 'svg'?"),
    ],
)
def test_a_misspelled_option_value_is_named_with_the_nearest_valid_one(tmp_path, args, message):
    result = plateau(*args, env={"DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "x.db").exists()  # refused before the database is opened


@pytest.mark.parametrize(
    "change,lines",
    [
        (
            {"optimizers": [{"name": "adma", "lr": 0.1}]},
            ["optimizers.0: unknown … 'adma'; did you mean 'adam'"],
        ),
        ({"initz": ["default"]}, ["initz: unknown field 'initz'; did you mean 'inits'?"]),
        (
            {"budget": {"steps": -5}, "seeds": "zero"},
            [
                "seeds: Input should be a valid list",
                "budget.steps: Input should be greater than or",
            ],
        ),
    ],
)
def test_spec_errors_are_one_line_per_field_without_pydantic_noise(tmp_path, change, lines):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(QUICK_SPEC | change))
    result = plateau("run", str(spec), env={"DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    assert result.returncode == 2, result.stderr
    problems = result.stderr.splitlines()
    assert problems[0] == "error: invalid spec:"
    assert len(problems) == 1 + len(lines), result.stderr
    for line, expected in zip(problems[1:], lines, strict=True):  # "…": anything between
        assert line.startswith("  "), result.stderr
        assert all(part in line for part in expected.split(" … ")), result.stderr
    assert "pydantic" not in result.stderr and "further information" not in result.stderr
    assert "Value error" not in result.stderr and "Input tag" not in result.stderr
