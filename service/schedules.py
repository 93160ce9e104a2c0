"""Schedules: what a schedule document is, its cron slots, and firing one slot exactly once.

A schedule (db.models.Schedule) holds a sweep or study spec and a cron expression read in a
timezone (cronsim parses it; DST handled there: a 02:30 slot on a spring-forward night
fires at 03:00). `fire` turns one slot into one sweep (or study) and is safe to call from
any number of scheduler replicas at once: the firing row, unique per (schedule, slot), is
inserted in the transaction that creates the sweep, so the replica whose insert loses
creates nothing. service/scheduler.py decides which slots are due; the API's "fire now"
calls `fire` with the current instant as its slot.

Each firing is a *night*, numbered from 0; a night's seeds are the spec's seeds offset by
`night * stride` (stride: one past the largest seed), so every night draws fresh seeds
and seed-to-seed spread is measured rather than frozen. The spec as stored is the one
people wrote; the sweep records the seeds it ran.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Iterator
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Schedule, ScheduleEvent, ScheduleFiring, User, utcnow
from service.settings import Settings
from service.spec import Label, SweepSpec
from service.study_spec import StudySpec

__all__ = [
    "ScheduleCreate",
    "ScheduleUpdate",
    "SlotTaken",
    "due_slots",
    "fire",
    "night_spec",
    "slots_between",
    "validate_spec",
]

log = logging.getLogger(__name__)
Kind = Literal["sweep", "study"]
CatchUp = Literal["latest", "none"]
# The most cron slots looked at in one pass over a schedule (after a long downtime of a
# schedule that fires every minute, the earliest missed ones are counted, not listed).
MAX_SLOTS = 10_000


def _check_cron(value: str) -> str:
    value = " ".join(value.split())
    try:
        CronSim(value, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    except (CronSimError, ValueError, IndexError, KeyError) as e:  # cronsim's, and odd input
        raise ValueError(f"not a cron expression ({e}): {value!r}") from e
    if len(value.split()) != 5:
        raise ValueError(
            f"a cron expression has 5 fields (minute hour day month weekday); got {value!r}"
        )
    return value


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError) as e:  # OSError: a path-like name
        raise ValueError(f"unknown timezone {value!r} (an IANA name such as Europe/Berlin)") from e
    return value


# What ScheduleCreate and a PATCH's ScheduleUpdate say of the fields they share.
CRON = "when to fire: a 5-field cron expression (minute hour day month weekday), read in `timezone`"
TIMEZONE = "IANA timezone the cron expression is read in"
SPEC = (
    "the document POST /api/v1/sweeps takes (kind sweep) or POST /api/v1/studies takes "
    "(kind study); validated now, not at firing time"
)
WEBHOOK = (
    "POSTed a signed JSON document after each night finishes (its host must be on "
    "PLATEAU_WEBHOOK_ALLOWED_HOSTS)"
)
CATCH_UP = (
    "after downtime: 'latest' fires the last missed slot once (late), 'none' skips missed slots"
)
COMPARE = "earlier nights each night is compared with"
KEEP = "nights whose per-step curves are kept"
CompareNights = Annotated[int, Field(ge=1, le=60)]
KeepNights = Annotated[int, Field(ge=1, le=3650)]


class ScheduleFields(BaseModel):
    """What PATCH may change (every field optional there)."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(None, description=CRON, examples=["0 2 * * *"])
    timezone: str | None = Field(None, description=TIMEZONE, examples=["UTC"])
    spec: dict[str, Any] | None = Field(None, description=SPEC)
    webhook_url: str | None = Field(None, max_length=2000, description=WEBHOOK)
    enabled: bool | None = Field(None, description="false: paused, fires nothing")
    catch_up: CatchUp | None = Field(None, description=CATCH_UP)
    compare_nights: CompareNights | None = Field(None, description=COMPARE)
    keep_curves_nights: KeepNights | None = Field(None, description=KEEP)

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        return None if v is None else _check_cron(v)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str | None) -> str | None:
        return None if v is None else _check_timezone(v)


class ScheduleUpdate(ScheduleFields):
    """PATCH /api/v1/schedules/{id}: the fields to change."""

    name: Label | None = Field(None, min_length=1, max_length=200, description="a new name")


class ScheduleCreate(BaseModel):
    """POST /api/v1/schedules: a sweep or study spec fired on a cron schedule."""

    model_config = ConfigDict(extra="forbid")

    name: Label = Field(min_length=1, max_length=200, description="a name for people")
    kind: Kind = Field("sweep", description="what `spec` is: a sweep or a study")
    cron: str = Field(description=CRON, examples=["0 2 * * *"])
    timezone: str = Field("UTC", description=TIMEZONE)
    spec: dict[str, Any] = Field(description=SPEC)
    webhook_url: str | None = Field(None, max_length=2000, description=WEBHOOK)
    enabled: bool = Field(True, description="false: created paused")
    catch_up: CatchUp = Field("latest", description=CATCH_UP)
    compare_nights: CompareNights = Field(5, description=COMPARE)
    keep_curves_nights: KeepNights = Field(14, description=KEEP)

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        return _check_cron(v)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        return _check_timezone(v)


def validate_spec(kind: str, spec: dict[str, Any]) -> SweepSpec | StudySpec:
    """The spec as its kind's model; pydantic's ValidationError (with the spec's own field
    locations) when it is not one."""
    model: type[SweepSpec] | type[StudySpec] = SweepSpec if kind == "sweep" else StudySpec
    return model.model_validate(spec)


def spec_errors(kind: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """validate_spec's errors as FastAPI reports a body's, located under ("body", "spec")."""
    try:
        parsed = validate_spec(kind, spec)
    except ValidationError as e:
        return [{**err, "loc": ("body", "spec", *err["loc"])} for err in e.errors()]
    problem = seeds_problem(kind, parsed)
    if problem is not None:
        return [{"type": "value_error", "loc": ("body", "spec", "seeds"), "msg": problem}]
    return []


# --- cron slots ----------------------------------------------------------------------------


def _slots(schedule: Schedule, after: dt.datetime) -> Iterator[dt.datetime]:
    """The schedule's slots strictly after `after`, in UTC."""
    zone = ZoneInfo(schedule.timezone)
    for slot in CronSim(schedule.cron, after.astimezone(zone)):
        yield slot.astimezone(dt.UTC)


def slots_between(schedule: Schedule, after: dt.datetime, until: dt.datetime) -> list[dt.datetime]:
    """Slots in (after, until], the last `MAX_SLOTS` of them at most."""
    found: list[dt.datetime] = []
    for slot in _slots(schedule, after):
        if slot > until:
            break
        found.append(slot)
        if len(found) > MAX_SLOTS:
            del found[0]
    return found


def last_slot(session: Session, schedule_id: int) -> dt.datetime | None:
    return session.scalar(
        select(func.max(ScheduleFiring.slot)).where(
            ScheduleFiring.schedule_id == schedule_id, ScheduleFiring.trigger == "cron"
        )
    )


def due_slots(
    session: Session, schedule: Schedule, now: dt.datetime, grace_seconds: float
) -> tuple[dt.datetime | None, int]:
    """(the slot to fire now or None, the slots before it that will never fire). Slots count
    after the later of `slots_from` and the last cron firing. `catch_up: latest` fires the
    latest due slot, late if it is; `none` fires it only if it is not late, and skips the
    rest."""
    since = max(filter(None, [schedule.slots_from, last_slot(session, schedule.id)]))
    due = slots_between(schedule, since, now)
    if not due:
        return None, 0
    latest = due[-1]
    if schedule.catch_up == "none" and (now - latest).total_seconds() > grace_seconds:
        return None, 0  # late: skipped; the next on-time firing counts it as missed
    return latest, len(due) - 1  # the slots in (since, latest) before it


# --- firing --------------------------------------------------------------------------------


class SlotTaken(Exception):
    """Another scheduler (or an earlier call) fired this slot, or took this night."""


SEED_LIMIT = 2**31  # seeds are in [0, 2^31)
NIGHTS_AHEAD = 3650  # a schedule's seeds must stay valid for this many nights (ten years)


def _offset(seeds: list[int], night: int) -> list[int]:
    stride = max(seeds) + 1
    return [s + night * stride for s in seeds]


def night_spec(schedule: Schedule, night: int) -> dict[str, Any]:
    """The spec a night runs, with fresh seeds: a sweep's seeds offset by night x stride
    (one past the largest seed); a study's trial seed, sampler seed and confirmation seeds
    likewise (read from the validated spec, so defaults move too)."""
    if schedule.kind == "sweep":
        spec = SweepSpec.model_validate(schedule.spec).model_dump(mode="json")
        spec["seeds"] = _offset(spec["seeds"], night)
    else:
        spec = StudySpec.model_validate(schedule.spec).model_dump(mode="json")
        spec["confirm_seeds"] = _offset(spec["confirm_seeds"], night)
        spec["fixed"]["seed"] = _offset([spec["fixed"]["seed"]], night)[0]
        spec["sampler"]["seed"] = _offset([spec["sampler"]["seed"]], night)[0]
    spec["name"] = f"{schedule.name} · night {night}"[:200]
    return spec


def seeds_problem(kind: str, spec: SweepSpec | StudySpec) -> str | None:
    """Why the nights of this spec would run out of seeds within NIGHTS_AHEAD, or None."""
    if isinstance(spec, SweepSpec):
        groups = {"seeds": spec.seeds}
    else:
        groups = {
            "confirm_seeds": spec.confirm_seeds,
            "fixed.seed": [spec.fixed.seed],
            "sampler.seed": [spec.sampler.seed],
        }
    for name, seeds in groups.items():
        if seeds and _offset(seeds, NIGHTS_AHEAD)[-1] >= SEED_LIMIT:
            return (
                f"{name}: night N runs these seeds offset by N x (largest + 1), which passes "
                f"2^31 before night {NIGHTS_AHEAD}; use smaller seeds"
            )
    return None


def fire(
    *,
    session: Session,
    schedule: Schedule,
    slot: dt.datetime,
    trigger: Literal["cron", "manual"],
    fired_by: str,
    settings: Settings,
    now: dt.datetime | None = None,
    missed: int = 0,
) -> ScheduleFiring:
    """Claim `slot` of `schedule` and create its night's sweep (or study), committed
    together. Raises SlotTaken when another replica has it (nothing is written then)."""
    from service import studies
    from service.sweeps import submit_sweep

    now = now or utcnow()
    last_night = session.scalar(
        select(func.max(ScheduleFiring.night)).where(ScheduleFiring.schedule_id == schedule.id)
    )
    night = 0 if last_night is None else last_night + 1
    firing = ScheduleFiring(
        schedule_id=schedule.id,
        slot=slot,
        night=night,
        trigger=trigger,
        fired_at=now,
        late_seconds=max(0.0, (now - slot).total_seconds()),
        missed=missed,
        spec_version=schedule.spec_version,
        fired_by=fired_by,
    )
    owner = session.get_one(User, schedule.owner_id)
    document = night_spec(schedule, night)
    try:
        session.add(firing)
        if schedule.kind == "sweep":
            session.flush()  # the claim: a unique (schedule, slot) and (schedule, night)
            sweep = submit_sweep(
                session=session,
                spec=SweepSpec.model_validate(document),
                source="schedule",
                max_attempts=settings.max_attempts,
                owner=owner,
            )
            firing.sweep_id = sweep.id
            session.commit()
        else:
            # Optuna writes first, through its own connection: end this session's reads so
            # that SQLite lets it. create_study then commits `session` (the firing with it)
            # and deletes the Optuna study again when that commit fails.
            session.expunge(firing)
            session.commit()
            session.add(firing)
            studies.create_study(
                session=session,
                spec=StudySpec.model_validate(document),
                settings=settings,
                owner=owner,
                before_commit=lambda row: setattr(firing, "study_id", row.id),
            )
    except IntegrityError as e:
        session.rollback()
        raise SlotTaken(f"schedule {schedule.id}: slot {slot.isoformat()} is taken") from e
    except BaseException:
        session.rollback()  # nothing of a failed firing stays: its slot fires again
        raise
    log.info(
        "schedule %d (%s) fired slot %s as night %d%s",
        schedule.id,
        schedule.name,
        slot.isoformat(),
        night,
        f", {missed} slots missed" if missed else "",
    )
    return firing


def new_schedule(
    *, session: Session, body: ScheduleCreate, owner: User, actor: str, now: dt.datetime
) -> Schedule:
    """Insert a schedule (its spec already validated) and its 'created' event."""
    schedule = Schedule(
        name=body.name,
        owner_id=owner.id,
        kind=body.kind,
        cron=body.cron,
        timezone=body.timezone,
        spec=validate_spec(body.kind, body.spec).model_dump(mode="json", exclude_unset=True),
        webhook_url=body.webhook_url,
        webhook_secret=secrets.token_hex(32),
        enabled=body.enabled,
        catch_up=body.catch_up,
        compare_nights=body.compare_nights,
        keep_curves_nights=body.keep_curves_nights,
        slots_from=now,
        created_at=now,
        updated_at=now,
    )
    session.add(schedule)
    session.flush()
    session.add(
        ScheduleEvent(
            schedule_id=schedule.id,
            at=now,
            actor=actor,
            kind="created",
            detail={"cron": body.cron, "timezone": body.timezone},
        )
    )
    return schedule


def update_schedule(
    *, session: Session, schedule: Schedule, body: ScheduleUpdate, actor: str, now: dt.datetime
) -> None:
    """Apply a PATCH and record what changed as events: an edit of the spec keeps the old
    and the new spec; a new cron or timezone, or a resume, starts counting slots now."""
    changes = body.model_dump(exclude_unset=True)
    events: list[tuple[str, dict[str, Any] | None]] = []

    def edited(field: str, new: Any) -> None:
        events.append(("edited", {"field": field, "old": getattr(schedule, field), "new": new}))
        setattr(schedule, field, new)

    if "spec" in changes and changes["spec"] is not None:
        spec = validate_spec(schedule.kind, changes.pop("spec")).model_dump(
            mode="json", exclude_unset=True
        )
        if spec != schedule.spec:
            edited("spec", spec)
            schedule.spec_version += 1
    for field in ("cron", "timezone"):
        value = changes.pop(field, None)
        if value is not None and value != getattr(schedule, field):
            edited(field, value)
            schedule.slots_from = now
    enabled = changes.pop("enabled", None)
    if enabled is not None and enabled != schedule.enabled:
        schedule.enabled = enabled
        events.append(("resumed" if enabled else "paused", None))
        if enabled:
            schedule.slots_from = now  # a resume does not fire the paused slots
    for field, value in changes.items():
        # null clears the webhook; the other fields cannot be null
        if value != getattr(schedule, field) and (value is not None or field == "webhook_url"):
            edited(field, value)
    schedule.updated_at = now
    for kind, detail in events:
        session.add(
            ScheduleEvent(schedule_id=schedule.id, at=now, actor=actor, kind=kind, detail=detail)
        )


def slots_after(schedule: Schedule, now: dt.datetime) -> dt.datetime:
    """The schedule's next cron slot after `now`, UTC."""
    return next(_slots(schedule, max(now, schedule.slots_from)))
