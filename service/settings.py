"""One settings object for the service processes (API, dispatcher, CLI), from the environment."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from db.session import normalize_url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PLATEAU_", extra="ignore")

    database_url: str = Field(
        "sqlite:///plateau.db",
        validation_alias=AliasChoices("DATABASE_URL", "PLATEAU_DATABASE_URL"),
        description="SQLAlchemy URL; postgresql://... for a team, a SQLite file by default",
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

    # Limits of the service (README "Limits"; docs/DECISIONS.md says why these defaults).
    submit_rate_limit: str = Field(
        "60/minute",
        description="submissions (POST sweeps, studies, retries) per identity, in the `limits` "
        "notation ('60/minute', '10/second;500/hour'); empty: no limit",
    )
    rate_limit_storage: str = Field(
        "database",
        description="where rate-limit counters live: 'database' (shared by every API replica) "
        "or a `limits` storage URI ('memory://' counts per replica; 'redis://host:6379')",
    )
    max_body_bytes: int = Field(1 << 20, ge=1024, description="largest request body (413)")
    max_json_depth: int = Field(32, ge=2, le=1000, description="deepest JSON nesting (422)")
    max_run_cost: float = Field(
        1e14,
        gt=0,
        description="parameter-samples of one run: parameters x (steps x batch + probes)",
    )
    max_run_parameters: int = Field(100_000_000, ge=1, description="parameters of one run's model")
    max_task_elements: int = Field(
        100_000_000, ge=1, description="numbers a run's task data holds (inputs and targets)"
    )
    max_probes_per_run: int = Field(100, ge=0, description="landscape probes one run may take")
    max_queued_runs: int = Field(
        10_000, ge=1, description="unfinished (queued or running) runs of one team"
    )
    trusted_origins: str = Field(
        "",
        description="comma-separated origins (https://host[:port]) besides the service's own "
        "whose browsers may send state-changing requests",
    )
    curve_retention_days: float | None = Field(
        None,
        gt=0,
        description="thin the per-step curves of runs finished this many days ago to their "
        "evaluation steps; unset: keep every step",
    )
    maintenance_seconds: float = Field(
        3600.0, gt=0, description="how often a dispatcher prunes curves and old rate counters"
    )

    @field_validator("database_url")
    @classmethod
    def _absolute_sqlite(cls, url: str) -> str:
        # Ray workers do not share the driver's working directory: make file paths absolute.
        url = normalize_url(url)
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str(Path(url[len(prefix) :]).resolve())
        return url

    @field_validator("submit_rate_limit")
    @classmethod
    def _rate_notation(cls, value: str) -> str:
        from limits import parse_many

        if value.strip():
            try:
                parse_many(value)
            except ValueError as e:
                raise ValueError(
                    f"submit_rate_limit {value!r} is not in the `limits` notation "
                    "(e.g. '60/minute' or '10/second;500/hour'): " + str(e)
                ) from e
        return value.strip()

    @field_validator("trusted_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in filter(None, (o.strip() for o in value.split(","))):
            scheme, sep, rest = origin.partition("://")
            if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
                raise ValueError(
                    f"trusted origin {origin!r} is not scheme://host[:port] "
                    "(e.g. https://plateau.example.com)"
                )
        return value

    def trusted_origin_list(self) -> list[str]:
        return [o.strip().lower() for o in self.trusted_origins.split(",") if o.strip()]


@cache
def get_settings() -> Settings:
    return Settings()
