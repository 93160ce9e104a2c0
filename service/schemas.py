"""The API's language: pydantic models for requests and responses, separate from db/ models."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from db.models import RUN_STATUSES
from service.spec import SweepSpec

SweepCreate = SweepSpec
RunStatus = Literal["queued", "running", "succeeded", "failed", "diverged", "cancelled"]
assert get_args(RunStatus) == RUN_STATUSES


class SweepCreated(BaseModel):
    id: int
    runs: int
    url: str


class SweepDeleted(BaseModel):
    id: int
    runs: int  # runs deleted with it
    configurations: int  # leaderboard configurations whose sums were recomputed


class SweepRetried(BaseModel):
    id: int
    requeued: int  # failed runs queued again


class SweepPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    owner: str
    source: str
    status: str
    n_runs: int
    counts: dict[str, int]
    progress: float  # finished runs / all runs
    created_at: dt.datetime
    cancelled_at: dt.datetime | None
    software: dict[str, Any]


class SweepDetail(SweepPublic):
    spec: dict[str, Any]


class SweepsPublic(BaseModel):
    data: list[SweepPublic]
    count: int


class Diagnosis(BaseModel):
    verdict: str
    # One sentence naming the numbers that decided the verdict (workers/diagnose.py); None
    # only for results recorded before 2026-12.
    sentence: str | None = None
    evidence: dict[str, Any]
    thresholds: dict[str, Any]


class RunPublic(BaseModel):
    id: int
    sweep_id: int
    grid_index: int
    status: str
    config_hash: str
    attempts: int
    max_attempts: int
    queued_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None
    summary: dict[str, Any]  # short names of the axes: optimizer, init, architecture, ...
    # When its per-step curve was thinned to the evaluation steps (PLATEAU_CURVE_RETENTION_DAYS)
    curves_pruned_at: dt.datetime | None = None
    final_loss: float | None = None
    test_accuracy: float | None = None
    reached_target: bool | None = None
    steps_to_target: int | None = None
    plateau_fraction: float | None = None
    diagnosis: Diagnosis | None = None


class RunsPublic(BaseModel):
    data: list[RunPublic]
    count: int


class RunDetail(RunPublic):
    config: dict[str, Any]
    result: dict[str, Any] | None
    curves: dict[str, list[Any]]
    activation_stats: list[dict[str, Any]]  # [{step, layers: {layer: {mean, std}}}]
    probes_url: str


class ProbePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    step: int
    trigger: str
    lambda_max: float | None
    lambda_min: float | None
    trace: float | None
    trace_stderr: float | None
    negative_mass: float | None
    negative_mass_stderr: float | None
    grad_norm: float | None
    data: dict[str, Any]


class ProbesPublic(BaseModel):
    data: list[ProbePublic]
    count: int


class Health(BaseModel):
    status: str  # ok | degraded
    database: dict[str, Any]
    ray: dict[str, Any]


class Readiness(BaseModel):
    ready: bool
    database: dict[str, Any]


# --- identities (service/auth.py) ---------------------------------------------------------

Role = Literal["viewer", "member", "admin"]
# Names of team users: no spaces or control characters, so they read the same in a URL, a
# shell and the audit log. (Legacy users keep the free text they came with.)
USER_NAME = r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$"


class IdentityPublic(BaseModel):
    """Who the request came from (`GET /api/v1/me`)."""

    auth: bool  # are keys required on this service
    user: str  # "single-user" in single-user mode
    role: Role
    via: Literal["key", "session", "single-user"]
    key_prefix: str | None


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=USER_NAME)
    role: Role = "member"


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    disabled: bool | None = None  # a disabled user's keys and sessions stop working


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    role: Role
    origin: str  # team | legacy (from a free-text owner)
    created_at: dt.datetime
    disabled_at: dt.datetime | None


class UsersPublic(BaseModel):
    data: list[UserPublic]
    count: int


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=200, description="whose key it is")
    name: str = Field("", max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$", description="a label")


class KeyPublic(BaseModel):
    prefix: str  # pb_ and 8 characters: shown in lists, never the secret
    user: str
    role: Role
    name: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None  # to the minute
    revoked_at: dt.datetime | None


class KeyCreated(KeyPublic):
    key: str  # the secret, shown this once: it is stored only as a hash


class KeysPublic(BaseModel):
    data: list[KeyPublic]
    count: int


class AuditEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: dt.datetime
    actor: str
    key_prefix: str | None
    action: str
    target: str
    detail: dict[str, Any] | None


class AuditEventsPublic(BaseModel):
    data: list[AuditEventPublic]
    count: int
