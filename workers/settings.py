"""The worker's own settings, from the worker's environment.

The database URL (with its password) never travels in a Ray task's arguments: Ray records
task specifications and anyone who can reach the cluster can read them. A worker reads it
from its own environment, first of these that is set:

- `PLATEAU_DATABASE_URL_FILE` or `DATABASE_URL_FILE`: a file holding the URL (a mounted
  Kubernetes or Docker secret), read afresh for every run;
- `PLATEAU_DATABASE_URL` or `DATABASE_URL`.

The embedded default (`plateau serve`, `plateau run`) exports `PLATEAU_DATABASE_URL` before it
starts its local Ray instance, so the workers it starts inherit it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from db.session import masked_url, resolve_url
from workers.errors import WorkerError


class WorkerConfigError(WorkerError):
    """The worker is not configured to execute runs (no database, or another database)."""


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", hide_input_in_errors=True)

    database_url_file: Path | None = Field(
        None, validation_alias=AliasChoices("PLATEAU_DATABASE_URL_FILE", "DATABASE_URL_FILE")
    )
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("PLATEAU_DATABASE_URL", "DATABASE_URL"),
        repr=False,
    )

    def resolved_database_url(self) -> str:
        try:
            return self._resolved()
        except ValueError as e:  # resolve_url's, which does not repeat the URL
            raise WorkerConfigError(f"the worker's database URL: {e}") from None

    def _resolved(self) -> str:
        if self.database_url_file is not None:
            try:
                url = self.database_url_file.read_text().strip()
            except OSError as e:
                raise WorkerConfigError(
                    f"cannot read the database URL file {self.database_url_file}: {e.strerror}"
                ) from e
            if not url:
                raise WorkerConfigError(f"the database URL file {self.database_url_file} is empty")
            return resolve_url(url)
        if self.database_url:
            return resolve_url(self.database_url)
        raise WorkerConfigError(
            "this worker has no database URL: set PLATEAU_DATABASE_URL_FILE (a file holding "
            "the URL) or PLATEAU_DATABASE_URL in the worker's environment"
        )


def worker_database_url(expected: str | None = None) -> str:
    """The database this worker writes to. `expected` is the dispatcher's database as
    `masked_url` prints it (no password): a worker configured for another database refuses
    to start the run rather than write somewhere else."""
    url = WorkerSettings().resolved_database_url()
    if expected is not None and masked_url(url) != expected:
        raise WorkerConfigError(
            f"this worker's database is {masked_url(url)} but the dispatcher's is {expected}; "
            "give the workers the dispatcher's database URL"
        )
    return url
