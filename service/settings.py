"""One settings object for the service processes (API, dispatcher, CLI), from the environment."""

from __future__ import annotations

from functools import cache

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from db.session import resolve_url


class Settings(BaseSettings):
    # A rejected value is not echoed: DATABASE_URL holds a password.
    model_config = SettingsConfigDict(
        env_prefix="PLATEAU_", extra="ignore", hide_input_in_errors=True
    )

    database_url: str = Field(
        "sqlite:///plateau.db",
        validation_alias=AliasChoices("DATABASE_URL", "PLATEAU_DATABASE_URL"),
        description="SQLAlchemy URL; postgresql://... for a team, a SQLite file by default",
        repr=False,  # it may carry a password: print db.session.masked_url(...) instead
    )
    ray_address: str | None = Field(
        None,
        validation_alias=AliasChoices("RAY_ADDRESS", "PLATEAU_RAY_ADDRESS"),
        description="an existing Ray cluster (host:port); unset starts a local Ray instance",
    )
    ray_num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray instance")
    capacity: int | None = Field(
        None, ge=1, description="concurrent runs per dispatcher (default: the cluster's CPUs)"
    )
    max_grid_runs: int = Field(2000, ge=1, description="largest grid a sweep may expand to")
    max_attempts: int = Field(3, ge=1, description="claims of a run before it counts as failed")
    lease_seconds: float = Field(60.0, gt=0, description="a worker renews every lease/3")
    poll_seconds: float = Field(0.5, gt=0, description="dispatcher loop period")
    auto_migrate: bool = Field(True, description="migrate the schema at start, else refuse")
    dispatch: bool = Field(True, description="run the dispatcher inside `plateau serve`")
    retry_after_seconds: int = Field(
        5, ge=1, description="Retry-After of a 503 while the database is unreachable"
    )
    backoff_max_seconds: float = Field(
        30.0, gt=0, description="longest wait of a dispatcher between tries during an outage"
    )
    ray_timeout_seconds: float = Field(
        5.0, gt=0, description="how long a question to the Ray cluster may take (health, capacity)"
    )

    @field_validator("database_url")
    @classmethod
    def _absolute_sqlite(cls, url: str) -> str:
        return resolve_url(url)  # raises ValueError, without the URL, when it is none


@cache
def get_settings() -> Settings:
    return Settings()
