"""Where a worker finds its database: its own environment or a secret file, never a task
argument; every way that can go wrong says what to set."""

from __future__ import annotations

import pytest

from workers.settings import WorkerConfigError, worker_database_url

URL = "postgresql+psycopg://plateau:pw@db:5432/plateau"
OTHER = "postgresql+psycopg://plateau:pw@elsewhere:5432/plateau"
VARS = ("PLATEAU_DATABASE_URL", "DATABASE_URL", "PLATEAU_DATABASE_URL_FILE", "DATABASE_URL_FILE")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in VARS:
        monkeypatch.delenv(name, raising=False)


def test_the_url_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://plateau:pw@db:5432/plateau")
    assert worker_database_url() == URL
    monkeypatch.setenv("PLATEAU_DATABASE_URL", OTHER)  # the PLATEAU_ name wins
    assert worker_database_url() == OTHER


def test_a_secret_file_wins_and_is_read_for_every_run(monkeypatch, tmp_path):
    secret = tmp_path / "database-url"
    secret.write_text(URL + "\n")
    monkeypatch.setenv("DATABASE_URL", OTHER)
    monkeypatch.setenv("DATABASE_URL_FILE", str(secret))
    assert worker_database_url() == URL
    secret.write_text(OTHER)  # rotated
    assert worker_database_url() == OTHER


def test_a_relative_sqlite_path_is_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLATEAU_DATABASE_URL", "sqlite:///plateau.db")
    assert worker_database_url() == f"sqlite:///{tmp_path / 'plateau.db'}"


@pytest.mark.parametrize(
    "setup,message",
    [
        ({}, "set PLATEAU_DATABASE_URL_FILE"),
        ({"PLATEAU_DATABASE_URL_FILE": "{tmp}/missing"}, "cannot read the database URL file"),
        ({"PLATEAU_DATABASE_URL_FILE": "{tmp}/empty"}, "is empty"),
    ],
    ids=["nothing set", "missing file", "empty file"],
)
def test_a_worker_without_a_database_says_what_to_set(monkeypatch, tmp_path, setup, message):
    (tmp_path / "empty").write_text("  \n")
    for name, value in setup.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    with pytest.raises(WorkerConfigError, match=message):
        worker_database_url()


def test_a_worker_of_another_database_refuses_and_names_both_masked(monkeypatch):
    monkeypatch.setenv("PLATEAU_DATABASE_URL", OTHER)
    with pytest.raises(WorkerConfigError) as info:
        worker_database_url(expected="postgresql+psycopg://plateau:***@db:5432/plateau")
    assert "elsewhere" in str(info.value) and "pw" not in str(info.value)
    assert worker_database_url(expected="postgresql+psycopg://plateau:***@elsewhere:5432/plateau")


def test_a_malformed_url_is_refused_without_repeating_it(monkeypatch):
    from pydantic import ValidationError

    from service.settings import Settings

    monkeypatch.setenv("PLATEAU_DATABASE_URL", "postgresql//plateau:s3cret@db")  # no colon
    with pytest.raises(WorkerConfigError) as worker:
        worker_database_url()
    with pytest.raises(ValidationError) as service:
        Settings(database_url="postgresql//plateau:s3cret@db")
    for error in (worker.value, service.value):
        assert "not a database URL" in str(error) and "s3cret" not in str(error)
