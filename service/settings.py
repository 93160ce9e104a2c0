"""One settings object for the service processes (API, dispatcher, CLI), from the environment."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal, Self

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from db.auth import MIN_KEY_LENGTH
from db.session import resolve_url


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error must not print a secret it refused (an admin
    # key, or DATABASE_URL with its password).
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
    pack_size: int = Field(
        16,
        ge=1,
        le=256,
        description="most runs one Ray task trains together as one batched computation "
        "(workers/packed/); 1: every run its own task",
    )
    gpu_pack_size: int = Field(
        64,
        ge=1,
        le=4096,
        description="most runs one task trains together on one GPU (a pack holds a whole GPU)",
    )
    gpu_memory_gib: float | None = Field(
        None,
        gt=0,
        description="GPU memory to size GPU packs by where no GPU node's label "
        "(plateau.dev/gpu-memory-mib) says; unset: packs are bounded by gpu_pack_size only",
    )
    gpu_per_run: float = Field(
        0.25,
        gt=0,
        le=1,
        description="the GPU share a run that trains alone on a GPU asks Ray for (0.25: four "
        "such runs per GPU)",
    )
    max_grid_runs: int = Field(2000, ge=1, description="largest grid a sweep may expand to")
    max_attempts: int = Field(3, ge=1, description="claims of a run before it counts as failed")
    lease_seconds: float = Field(60.0, gt=0, description="a worker renews every lease/3")
    poll_seconds: float = Field(0.5, gt=0, description="dispatcher loop period")
    auto_migrate: bool = Field(True, description="migrate the schema at start, else refuse")
    dispatch: bool = Field(True, description="run the dispatcher inside `plateau serve`")
    schedule: bool = Field(True, description="run the scheduler inside `plateau serve`")
    schedule_poll_seconds: float = Field(
        30.0, gt=0, description="how often a scheduler looks for due slots"
    )
    schedule_grace_seconds: float = Field(
        300.0,
        ge=0,
        description="a slot fired later than this after its time counts as late (and is "
        "skipped by schedules with catch_up: none)",
    )
    public_url: str = Field(
        "http://127.0.0.1:8000",
        description="the service's address as people reach it: links in webhook reports",
    )
    webhook_allowed_hosts: str = Field(
        "",
        description="comma-separated hosts schedules' webhooks may post to ('*.example.org' "
        "matches subdomains); loopback and private addresses only when listed by address",
    )
    retry_after_seconds: int = Field(
        5, ge=1, description="Retry-After of a 503 while the database is unreachable"
    )
    backoff_max_seconds: float = Field(
        30.0, gt=0, description="longest wait of a dispatcher between tries during an outage"
    )
    ray_timeout_seconds: float = Field(
        5.0, gt=0, description="how long a question to the Ray cluster may take (health, capacity)"
    )

    # Identities: service/auth.py and the README's "Single-user and team modes".
    auth: Literal["auto", "on", "off"] = Field(
        "auto",
        description="API keys required: on; off (loopback only); auto: on when bound to a "
        "non-loopback address or once a team user or a key exists",
    )
    host: str = Field("127.0.0.1", description="the address the API binds (`serve --host`)")
    admin_key: SecretStr | None = Field(
        None, description="the first admin's API key (a deployment secret), created at start"
    )
    admin_key_file: Path | None = Field(None, description="a file holding admin_key instead")
    admin_user: str = Field("admin", min_length=1, max_length=200, description="its user")
    session_hours: float = Field(12.0, gt=0, le=24 * 30, description="page sign-in lifetime")
    cookie_secure: bool | None = Field(
        None, description="Secure session cookie; unset: when the request came over https"
    )

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
        return resolve_url(url)  # raises ValueError, without the URL, when it is none

    @model_validator(mode="after")
    def _admin_key(self) -> Self:
        """Read PLATEAU_ADMIN_KEY_FILE and refuse a short or placeholder key, at start."""
        if self.admin_key is not None and self.admin_key_file is not None:
            raise ValueError("set PLATEAU_ADMIN_KEY or PLATEAU_ADMIN_KEY_FILE, not both")
        if self.admin_key_file is not None:
            try:
                text = self.admin_key_file.read_text().strip()
            except OSError as e:
                raise ValueError(f"PLATEAU_ADMIN_KEY_FILE: cannot read it ({e})") from e
            self.admin_key = SecretStr(text)
        if self.admin_key is not None:
            key = self.admin_key.get_secret_value()
            where = "PLATEAU_ADMIN_KEY_FILE" if self.admin_key_file else "PLATEAU_ADMIN_KEY"
            if len(key) < MIN_KEY_LENGTH or "REPLACE_ME" in key:
                raise ValueError(
                    f"{where} must hold a random secret of at least {MIN_KEY_LENGTH} "
                    "characters, e.g. the output of `plateau keys generate` or "
                    "`openssl rand -hex 32` (got a placeholder or a shorter value)"
                )
        return self

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
