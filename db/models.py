"""SQLAlchemy 2.0 models. Alembic (db/migrations) owns the schema; create_all is for tests only.

Tables are snake_case singular; timestamps end in `_at` and are stored in UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Postgres-style constraint names, so migrations are deterministic on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Columns the leaderboard's per-configuration reads of run_result use (refreshing a rollup
# bucket, a page's details), carried in its indexes (Postgres INCLUDE) for index-only scans.
LEADERBOARD_COVERED = (
    "architecture",
    "sweep_id",
    "outcome",
    "pruned_step",
    "reached_target",
    "steps_to_target",
    "final_loss",
    "test_accuracy",
    "plateau_fraction",
    "budget_steps",
    "created_at",
    "device",
    "torch_version",
    "run_id",
)
# What a user may do: a viewer reads; a member also submits, and cancels (later deletes and
# retries) its own sweeps and studies; an admin does everything, users and keys included.
ROLES = ("viewer", "member", "admin")
# Ids are INTEGER columns on every backend: a larger id names nothing (and would overflow).
MAX_ID = 2**31 - 1
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "diverged", "cancelled")
TERMINAL_STATUSES = ("succeeded", "failed", "diverged", "cancelled")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every backend.

    Postgres stores timestamptz; SQLite has no time zones, so values are stored as naive UTC
    and get their tzinfo back on the way out. Comparisons in SQL then agree on both.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use db.models.utcnow()")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UTCDateTime, dict[str, Any]: JSON}


class User(Base):
    """A member of the team (a person, or a robot such as the nightly job). Its API keys say
    who is asking; its role says what they may do. Users are disabled, never deleted: they
    own sweeps and studies.

    `origin` 'team': created by an admin (CLI, API, or the deployment's admin key secret);
    'legacy': a name taken from a free-text `owner` (sweeps and studies from before 2026-12,
    and submissions in single-user mode), role viewer until an admin says otherwise. Only team
    users and keys switch `PLATEAU_AUTH=auto` on (service/auth.py).
    """

    __tablename__ = "app_user"  # "user" is a reserved word in Postgres
    __table_args__ = (CheckConstraint("role IN ('viewer', 'member', 'admin')", name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    origin: Mapped[str] = mapped_column(String(16), default="team")  # team | legacy
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[dt.datetime | None]


class ApiKey(Base):
    """An API key of a user. The key itself is shown once, at creation; the table keeps its
    SHA-256 (db/auth.py says why not bcrypt) and `prefix`, the part a person recognises in
    lists and logs (`pb_` and 8 characters that are not part of the secret)."""

    __tablename__ = "api_key"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")  # a label: "laptop", "nightly"
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None]  # to the minute (db.auth.TOUCH_EVERY)
    revoked_at: Mapped[dt.datetime | None]

    user: Mapped[User] = relationship(lazy="joined", innerjoin=True)


class WebSession(Base):
    """A browser signed in with an API key. The cookie holds a random token, the table its
    SHA-256; revoking the key or disabling its user ends the session too."""

    __tablename__ = "web_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_key.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]

    key: Mapped[ApiKey] = relationship(lazy="joined", innerjoin=True)


class AuditEvent(Base):
    """Who did what to which object: keys created and revoked, users changed, sweeps and
    studies cancelled (and deleted, retried). Written by db.audit.record in the transaction
    of the change it records; read by admins (GET /api/v1/audit, `plateau audit`)."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    # The user's name, or who acted without a user: "cli:<os user>", "single-user",
    # "bootstrap" (the deployment's admin key), "migration".
    actor: Mapped[str] = mapped_column(String(200))
    key_prefix: Mapped[str | None] = mapped_column(String(16))  # the key that was used
    action: Mapped[str] = mapped_column(String(64))  # e.g. key.create, sweep.cancel
    target: Mapped[str] = mapped_column(String(200))  # e.g. key:pb_1a2b3c4d, sweep:12
    detail: Mapped[dict[str, Any] | None]


class Sweep(Base):
    """A submitted grid of runs. Its status is derived from its runs' statuses (db/queries.py)."""

    __tablename__ = "sweep"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # The user whose key submitted it (never a free-text field; see db/auth.py).
    owner_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    source: Mapped[str] = mapped_column(String(32), default="api")  # api | cli | nightly | study
    spec: Mapped[dict[str, Any]]
    n_runs: Mapped[int]
    software: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    cancelled_at: Mapped[dt.datetime | None]

    runs: Mapped[list[Run]] = relationship(back_populates="sweep", passive_deletes=True)
    owner_user: Mapped[User] = relationship(lazy="joined", innerjoin=True)

    @property
    def owner(self) -> str:
        """The owner's name, as the API and the pages show it."""
        return self.owner_user.name


class Run(Base):
    """One training run and its place in the queue.

    `attempts` counts claims; the attempt number is the fencing token: a worker may only
    write as the attempt it was given, and only while its lease is held.
    """

    __tablename__ = "run"
    __table_args__ = (
        Index("ix_run_status_id", "status", "id"),
        Index("ix_run_sweep_id_status", "sweep_id", "status"),
        Index("ix_run_task_architecture_status", "task", "architecture", "status"),
        Index("ix_run_study_id_trial_number", "study_id", "trial_number"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweep.id", ondelete="CASCADE"))
    grid_index: Mapped[int]  # position in the sweep's grid
    config: Mapped[dict[str, Any]]
    config_hash: Mapped[str] = mapped_column(String(64), index=True)
    # The configuration without its seed: the leaderboard pools seeds (and sweeps) by it.
    config_key: Mapped[str] = mapped_column(String(64), index=True, default="", server_default="")
    # Registry names copied out of `config`, so the leaderboard filters on indexed columns.
    task: Mapped[str] = mapped_column(String(64), default="", server_default="")
    architecture: Mapped[str] = mapped_column(String(64), default="", server_default="")
    # Set when the run is a trial of an Optuna study (service/studies.py).
    study_id: Mapped[int | None] = mapped_column(ForeignKey("study.id", ondelete="SET NULL"))
    trial_number: Mapped[int | None]
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[dt.datetime | None]
    queued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    # Set when db.retention.prune_curves thinned its per-step curve to the evaluation steps.
    curves_pruned_at: Mapped[dt.datetime | None]

    sweep: Mapped[Sweep] = relationship(back_populates="runs")
    result: Mapped[RunResult | None] = relationship(back_populates="run", uselist=False)


class RunMetric(Base):
    """One logged step of one attempt. Rows of attempts that lost their lease are deleted
    when the winning attempt completes, so the curves belong to the recorded result."""

    __tablename__ = "run_metric"

    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(primary_key=True)
    step: Mapped[int] = mapped_column(primary_key=True)
    loss: Mapped[float | None] = mapped_column(Float)
    lr: Mapped[float | None] = mapped_column(Float)
    grad_norm: Mapped[float | None] = mapped_column(Float)
    update_norm: Mapped[float | None] = mapped_column(Float)
    param_norm: Mapped[float | None] = mapped_column(Float)
    clipped: Mapped[bool | None] = mapped_column(Boolean)
    eval_loss: Mapped[float | None] = mapped_column(Float)
    eval_accuracy: Mapped[float | None] = mapped_column(Float)
    layer_grad_norms: Mapped[dict[str, Any] | None]
    # {layer: {"mean", "std"}} of each layer's output on a fixed batch: at initialization on
    # step 0's row, then on every evaluation step's row (workers/activations.py)
    activation_stats: Mapped[dict[str, Any] | None]


class RunResult(Base):
    """The one recorded outcome of a run, written by the attempt that held the lease."""

    __tablename__ = "run_result"
    __table_args__ = (
        Index(
            "ix_run_result_leaderboard_task",
            "task",
            "config_key",
            postgresql_include=LEADERBOARD_COVERED,
        ),
        Index(
            "ix_run_result_leaderboard",
            "config_key",
            postgresql_include=("task", *LEADERBOARD_COVERED),
        ),
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int]
    outcome: Mapped[str] = mapped_column(String(16))  # succeeded | diverged | failed
    steps_done: Mapped[int] = mapped_column(Integer, default=0)
    final_loss: Mapped[float | None] = mapped_column(Float)  # full training set, end of run
    test_loss: Mapped[float | None] = mapped_column(Float)
    test_accuracy: Mapped[float | None] = mapped_column(Float)
    reached_target: Mapped[bool] = mapped_column(default=False)
    steps_to_target: Mapped[int | None]  # None when censored: see reached_target
    plateau_fraction: Mapped[float | None] = mapped_column(Float)
    longest_plateau: Mapped[int | None]
    plateaus: Mapped[dict[str, Any] | None]  # {"segments": [...], "thresholds": {...}}
    clip_fraction: Mapped[float | None] = mapped_column(Float)
    diverged_step: Mapped[int | None]
    diagnosis: Mapped[dict[str, Any] | None]
    environment: Mapped[dict[str, Any] | None]  # torch version, device, dtype, threads, host
    seconds: Mapped[float | None] = mapped_column(Float)
    pruned_step: Mapped[int | None]  # a study's pruner stopped the run here
    # Copies of the run's grouping facts, written with the result (they never change): the
    # leaderboard's sums (result_rollup) and a page's details then read one narrow covering
    # index of this table instead of joining two wide ones.
    config_key: Mapped[str] = mapped_column(String(64), default="", server_default="")
    task: Mapped[str] = mapped_column(String(64), default="", server_default="")
    architecture: Mapped[str] = mapped_column(String(64), default="", server_default="")
    sweep_id: Mapped[int | None]
    budget_steps: Mapped[int | None]
    verdict: Mapped[str | None] = mapped_column(String(32))
    device: Mapped[str | None] = mapped_column(String(32))  # copied from environment
    torch_version: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)

    run: Mapped[Run] = relationship(back_populates="result")


class ResultSums:
    """Counts and sums of a set of counted results (see db/leaderboard.py): they add up, so
    the sums of two sets are the sums of their union."""

    task: Mapped[str] = mapped_column(String(64))
    architecture: Mapped[str] = mapped_column(String(64))
    n_runs: Mapped[int]
    n_reached: Mapped[int]
    n_diverged: Mapped[int]
    # For each measured column: how many results have it, their sum and sum of squares.
    steps_n: Mapped[int]
    steps_sum: Mapped[float] = mapped_column(Float)
    steps_sumsq: Mapped[float] = mapped_column(Float)
    final_loss_n: Mapped[int]
    final_loss_sum: Mapped[float] = mapped_column(Float)
    final_loss_sumsq: Mapped[float] = mapped_column(Float)
    test_accuracy_n: Mapped[int]
    test_accuracy_sum: Mapped[float] = mapped_column(Float)
    plateau_fraction_n: Mapped[int]
    plateau_fraction_sum: Mapped[float] = mapped_column(Float)
    last_result_at: Mapped[dt.datetime]
    budget_steps: Mapped[int | None]


class ResultRollup(ResultSums, Base):
    """The sums of one bucket's counted results: what the leaderboard ranks from when it is
    filtered by more than task and architecture.

    A bucket is (configuration, sweep, device, torch version, UTC day): every leaderboard
    filter is a condition on a bucket's columns (owner through the sweep, `since` through
    the day, its partial first day read from run_result), so a ranking adds whole rows; the
    seeds of a configuration in one sweep share a row. `db.leaderboard.refresh_rollup`
    recomputes the row of each result `db.queue.complete_run` records, in that result's
    transaction, from `run_result`, so it never disagrees with the results.
    """

    __tablename__ = "result_rollup"
    __table_args__ = (Index("ix_result_rollup_task", "task", "architecture"),)

    config_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    sweep_id: Mapped[int] = mapped_column(primary_key=True)
    device: Mapped[str] = mapped_column(String(32), primary_key=True)  # "" when unknown
    torch_version: Mapped[str] = mapped_column(String(32), primary_key=True)  # "" when unknown
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)  # of created_at, in UTC


class ConfigSummary(ResultSums, Base):
    """The sums of all of one configuration's counted results (its rollup rows added up):
    what the leaderboard ranks from when filtered by nothing but task and architecture, as
    the front page and the default API call are. Refreshed with the rollup."""

    __tablename__ = "config_summary"
    __table_args__ = (Index("ix_config_summary_task", "task", "architecture"),)

    config_key: Mapped[str] = mapped_column(String(64), primary_key=True)


class Study(Base):
    """An Optuna study whose trials run as ordinary runs of one sweep (source='study').

    Optuna's own tables (RDBStorage) live in the same database under `optuna_study_name`.
    """

    __tablename__ = "study"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    owner_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    optuna_study_name: Mapped[str] = mapped_column(String(255), unique=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweep.id", ondelete="CASCADE"))
    spec: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16), default="running")  # running|finished|cancelled
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]

    owner_user: Mapped[User] = relationship(lazy="joined", innerjoin=True)

    @property
    def owner(self) -> str:
        return self.owner_user.name


class Probe(Base):
    """A landscape probe of a run at one step (Hessian spectrum, trace, density, slices)."""

    __tablename__ = "probe"
    __table_args__ = (Index("ix_probe_run_id_step", "run_id", "step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    attempt: Mapped[int]
    step: Mapped[int]
    trigger: Mapped[str] = mapped_column(String(16))  # end | every | plateau
    lambda_max: Mapped[float | None] = mapped_column(Float)
    lambda_min: Mapped[float | None] = mapped_column(Float)
    trace: Mapped[float | None] = mapped_column(Float)
    trace_stderr: Mapped[float | None] = mapped_column(Float)
    negative_mass: Mapped[float | None] = mapped_column(Float)
    negative_mass_stderr: Mapped[float | None] = mapped_column(Float)
    grad_norm: Mapped[float | None] = mapped_column(Float)
    data: Mapped[dict[str, Any]]  # eigenvalue lists, residuals, density, slices, mode, cost
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class RateLimitCounter(Base):
    """One fixed window of one rate limit for one identity (db/ratelimit.py): the count of
    hits since the window opened, until `expires_at`. Shared by every API replica."""

    __tablename__ = "rate_limit_counter"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int]
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)


class Schedule(Base):
    """A sweep or study spec fired on a cron schedule (service/scheduler.py): the nightly
    watch. Its firings (`ScheduleFiring`) are its history, one sweep or study each; its
    events (`ScheduleEvent`) say when it was created, edited, paused and resumed.

    `slots_from`: cron slots after this instant count (creation, a change of cron or
    timezone, a resume: none of those fires the slots before it)."""

    __tablename__ = "schedule"
    __table_args__ = (
        CheckConstraint("kind IN ('sweep', 'study')", name="kind"),
        CheckConstraint("catch_up IN ('latest', 'none')", name="catch_up"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    owner_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # what `spec` is: sweep | study
    cron: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]]
    spec_version: Mapped[int] = mapped_column(default=1)  # +1 at every edit of the spec
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    # The HMAC key of its webhook's signature: shown once, at creation.
    webhook_secret: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    catch_up: Mapped[str] = mapped_column(String(16), default="latest")
    compare_nights: Mapped[int] = mapped_column(default=5)  # K earlier nights for alerts
    keep_curves_nights: Mapped[int] = mapped_column(default=14)  # per-step curves kept
    slots_from: Mapped[dt.datetime]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    owner_user: Mapped[User] = relationship(lazy="joined", innerjoin=True)

    @property
    def owner(self) -> str:
        return self.owner_user.name


class ScheduleFiring(Base):
    """One firing of a schedule: a cron slot (or a "fire now") and the sweep or study it made.

    The unique (schedule, slot) row is the claim: however many schedulers race, one slot
    makes one firing, and the firing and its sweep are inserted in one transaction. `night`
    numbers a schedule's firings from 0 (it offsets the spec's seeds: fresh seeds every
    night); `missed`: the cron slots between the previous firing and this one that did not
    fire (downtime, or a pause)."""

    __tablename__ = "schedule_firing"
    __table_args__ = (
        UniqueConstraint("schedule_id", "slot", name="uq_schedule_firing_slot"),
        UniqueConstraint("schedule_id", "night", name="uq_schedule_firing_night"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedule.id", ondelete="CASCADE"))
    slot: Mapped[dt.datetime]
    night: Mapped[int]
    trigger: Mapped[str] = mapped_column(String(16))  # cron | manual
    fired_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    late_seconds: Mapped[float] = mapped_column(Float, default=0.0)  # fired_at - slot
    missed: Mapped[int] = mapped_column(default=0)
    spec_version: Mapped[int]
    fired_by: Mapped[str] = mapped_column(String(200))  # the scheduler replica, or a user
    sweep_id: Mapped[int | None] = mapped_column(ForeignKey("sweep.id", ondelete="SET NULL"))
    study_id: Mapped[int | None] = mapped_column(ForeignKey("study.id", ondelete="SET NULL"))
    # When its finished night was compared with the nights before (service/nightwatch.py);
    # setting it is the claim of the replica that compares.
    analysed_at: Mapped[dt.datetime | None]
    environment: Mapped[dict[str, Any] | None]  # the night's software, as its runs recorded
    # A study night: its best setting re-run on the spec's fresh confirm_seeds against the
    # baseline (service.studies.confirm), which the night is compared on; claimed first.
    confirm_claimed_at: Mapped[dt.datetime | None]
    confirm_sweep_id: Mapped[int | None] = mapped_column(
        ForeignKey("sweep.id", ondelete="SET NULL")
    )


class ScheduleAlert(Base):
    """A configuration (grid point) of a night that moved against the nights before it, or
    a study whose confirmed best moved: its metric, direction, effect with its interval, the
    nights compared, and what else changed that night (software)."""

    __tablename__ = "schedule_alert"

    id: Mapped[int] = mapped_column(primary_key=True)
    schedule_id: Mapped[int] = mapped_column(
        ForeignKey("schedule.id", ondelete="CASCADE"), index=True
    )
    firing_id: Mapped[int] = mapped_column(
        ForeignKey("schedule_firing.id", ondelete="CASCADE"), index=True
    )
    config_key: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(500))  # the grid point, for people
    metric: Mapped[str] = mapped_column(String(32))
    direction: Mapped[str] = mapped_column(String(16))  # regression | improvement | changed
    effect: Mapped[float | None] = mapped_column(Float)
    ci_low: Mapped[float | None] = mapped_column(Float)
    ci_high: Mapped[float | None] = mapped_column(Float)
    p_value: Mapped[float | None] = mapped_column(Float)
    q_value: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[dict[str, Any]]  # tonight's and the earlier nights' values, the rule
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """The POST of one night's report to its schedule's webhook: tried until it is
    answered 2xx or runs out of attempts, each try recorded."""

    __tablename__ = "webhook_delivery"

    id: Mapped[int] = mapped_column(primary_key=True)
    firing_id: Mapped[int] = mapped_column(
        ForeignKey("schedule_firing.id", ondelete="CASCADE"), unique=True
    )
    url: Mapped[str] = mapped_column(String(2000))
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime]
    delivered_at: Mapped[dt.datetime | None]
    last_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    log: Mapped[list[Any]] = mapped_column(JSON, default=list)  # [{at, status, error}]


class ScheduleEvent(Base):
    """Something that happened to a schedule besides a firing: created, spec edited (with
    the old and new spec), cron changed, paused, resumed. Shown in its history."""

    __tablename__ = "schedule_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    schedule_id: Mapped[int] = mapped_column(
        ForeignKey("schedule.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))  # created | edited | paused | resumed
    detail: Mapped[dict[str, Any] | None]
