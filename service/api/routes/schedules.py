"""/api/v1/schedules: sweeps and studies fired on a cron schedule (service/schedules.py).

Members create schedules and manage their own; admins manage all; viewers read. A
schedule's spec is validated when it is created or edited (422 naming the field under
`spec`), never first at 2 a.m.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from db import queries
from db.models import MAX_ID, Schedule, ScheduleEvent, ScheduleFiring, Study, User, utcnow
from service.api.auth import CurrentIdentity, MemberIdentity, ensure_may_change, spec_owner
from service.api.deps import Offset, SessionDep, SettingsDep
from service.api.identity import request_team
from service.api.routes.figures import Figures
from service.ratelimit import limit_submissions
from service.schedules import (
    ScheduleCreate,
    ScheduleUpdate,
    SlotTaken,
    fire,
    new_schedule,
    spec_errors,
    update_schedule,
)
from service.schemas import CONFLICT, INVALID, NOT_FOUND
from service.webhooks import webhook_refusal

router = APIRouter(prefix="/schedules", tags=["schedules"])
ScheduleId = Annotated[int, Path(ge=1, le=MAX_ID, description="a schedule's id")]


class FiringPublic(BaseModel):
    id: int = Field(description="the firing's id")
    night: int = Field(description="the schedule's firings numbered from 0 (seeds offset by it)")
    slot: dt.datetime = Field(description="the cron slot (or the moment of a fire-now), UTC")
    trigger: str = Field(description="cron, or manual (fire now)")
    fired_at: dt.datetime = Field(description="when it fired, UTC")
    late_seconds: float = Field(description="how long after its slot it fired")
    missed: int = Field(description="slots before it that never fired (downtime, catch_up)")
    spec_version: int = Field(description="the version of the schedule's spec it ran")
    fired_by: str = Field(description="the scheduler replica, or the user who fired it")
    sweep_id: int | None = Field(description="the sweep it made (kind sweep)")
    study_id: int | None = Field(description="the study it made (kind study)")


class EventPublic(BaseModel):
    at: dt.datetime = Field(description="when, UTC")
    actor: str = Field(description="who")
    kind: str = Field(description="created, edited, paused or resumed")
    detail: dict[str, Any] | None = Field(description="what changed (old and new values)")


class SchedulePublic(BaseModel):
    id: int = Field(description="the schedule's id")
    name: str = Field(description="its name")
    owner: str = Field(description="the user it belongs to")
    kind: str = Field(description="sweep or study")
    cron: str = Field(description="its cron expression")
    timezone: str = Field(description="the timezone the cron expression is read in")
    enabled: bool = Field(description="false: paused")
    catch_up: str = Field(description="latest or none")
    webhook_url: str | None = Field(description="where each night's report is POSTed")
    compare_nights: int = Field(description="earlier nights each night is compared with")
    keep_curves_nights: int = Field(description="nights whose per-step curves are kept")
    spec_version: int = Field(description="1, +1 at every edit of the spec")
    next_slot: dt.datetime | None = Field(description="its next cron slot, UTC (none if paused)")
    nights: int = Field(description="firings so far")
    created_at: dt.datetime = Field(description="when it was created, UTC")
    url: str = Field(description="where to read it (GET)")


class ScheduleDetail(SchedulePublic):
    spec: dict[str, Any] = Field(description="the spec each night runs (with its seeds offset)")
    firings: list[FiringPublic] = Field(description="its firings, newest first (at most 100)")
    events: list[EventPublic] = Field(description="created, edits, pauses and resumes, in order")


class ScheduleCreated(SchedulePublic):
    webhook_secret: str = Field(
        description="the HMAC-SHA256 key of its webhook's X-Plateau-Signature header: shown "
        "this once"
    )


class SchedulesPublic(BaseModel):
    data: list[SchedulePublic] = Field(description="one page of schedules, by id")
    count: int = Field(description="schedules in all")


# The alerts' field examples are the alert tests/service/test_nightwatch.py raises on its
# seeded nights (a recorded session has no week of nights to compare; see
# scripts/record_api_examples.py).
class AlertPublic(BaseModel):
    night_firing: int = Field(description="the firing (night) it was raised on", examples=[6])
    configuration: str = Field(
        description="the grid point, or the study, as people read it",
        examples=["mlp · adam lr=0.003 · init default"],
    )
    config_key: str = Field(
        description="the grid point's configuration key ('' for a study)",
        examples=["5d0c6a1f9e2b47c3a8f1e0d29b7c4a6e"],
    )
    metric: str = Field(
        description="steps_to_target, final_loss, plateau_fraction, divergences, verdict, "
        "best_value or best_setting",
        examples=["steps_to_target"],
    )
    direction: str = Field(
        description="regression, improvement, or changed", examples=["regression"]
    )
    effect: float | None = Field(
        description="ratio tonight / before (steps, loss, best value), difference (plateau "
        "fraction), or tonight's diverged seeds",
        examples=[1.57],
    )
    interval: list[float | None] | None = Field(
        description="the effect's 95 % interval", examples=[[1.29, 1.92]]
    )
    p: float | None = Field(description="the test's p-value (rules have none)", examples=[0.00071])
    q: float | None = Field(
        description="its Benjamini-Hochberg q-value over the night's tests", examples=[0.00852]
    )
    detail: dict[str, Any] = Field(
        description="tonight's and the earlier nights' values, the nights compared, the rule, "
        "and the software that changed that night",
        examples=[
            {
                "night": 5,
                "nights_compared": [0, 1, 2, 3, 4],
                "tonight": [761.0, 776.0, 898.0],
                "before": [434.0, 550.0, 553.0, 456.0, 602.0, 686.0],
                "effect": "ratio of geometric means, tonight / before",
                "software_changes": {"plugins": {"before": "1.0", "tonight": "1.1"}},
            }
        ],
    )


class DeliveryPublic(BaseModel):
    night_firing: int = Field(description="the firing (night) it reports", examples=[6])
    url: str = Field(
        description="where it is posted", examples=["http://127.0.0.1:9000/plateau-nightly"]
    )
    attempts: int = Field(description="tries so far", examples=[2])
    delivered_at: dt.datetime | None = Field(
        description="when it was answered 2xx", examples=["2026-11-25T06:00:31Z"]
    )
    last_status: int | None = Field(description="the last try's HTTP status", examples=[200])
    last_error: str | None = Field(
        description="the last try's error", examples=["ConnectError: [Errno 111] refused"]
    )


class AlertsPublic(BaseModel):
    data: list[AlertPublic] = Field(description="the schedule's alerts, newest night first")
    deliveries: list[DeliveryPublic] = Field(description="its webhook deliveries, newest first")


class ScheduleDeleted(BaseModel):
    id: int = Field(description="the deleted schedule's id")
    firings: int = Field(description="its firings forgotten (their sweeps and studies stay)")


def get_schedule(schedule_id: ScheduleId, session: SessionDep) -> Schedule:
    row = session.get(Schedule, schedule_id)
    if row is None:
        raise HTTPException(404, f"schedule {schedule_id} not found")
    return row


ScheduleDep = Annotated[Schedule, Depends(get_schedule)]


def _public(
    session: Any, schedule: Schedule, request: Request, identity: Any = None
) -> dict[str, Any]:
    """The schedule as the API shows it to `identity`: its webhook URL whole to its owner
    and admins, its host only to others (the path of a chat webhook is its secret)."""
    from service.schedules import slots_after
    from service.webhooks import shown_url

    nights = session.scalar(select(func.count()).where(ScheduleFiring.schedule_id == schedule.id))
    return {
        "id": schedule.id,
        "name": schedule.name,
        "owner": schedule.owner,
        "kind": schedule.kind,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "enabled": schedule.enabled,
        "catch_up": schedule.catch_up,
        "webhook_url": schedule.webhook_url
        if identity is None or identity.may_change(schedule.owner_id)
        else shown_url(schedule.webhook_url),
        "compare_nights": schedule.compare_nights,
        "keep_curves_nights": schedule.keep_curves_nights,
        "spec_version": schedule.spec_version,
        "next_slot": slots_after(schedule, utcnow()) if schedule.enabled else None,
        "nights": nights,
        "created_at": schedule.created_at,
        "url": str(request.url_for("read_schedule", schedule_id=schedule.id)),
    }


def unfinished_night(session: Any, schedule_id: int) -> str | None:
    """What of the schedule's latest night is still to finish, or None."""
    latest = session.scalars(
        select(ScheduleFiring)
        .where(ScheduleFiring.schedule_id == schedule_id)
        .order_by(ScheduleFiring.night.desc())
        .limit(1)
    ).first()
    if latest is None:
        return None
    if latest.sweep_id is not None and queries.unfinished_runs(
        session=session, sweep_id=latest.sweep_id
    ):
        return f"night {latest.night} (sweep {latest.sweep_id}) is still running"
    if latest.study_id is not None:
        study = session.get(Study, latest.study_id)
        if study is not None and study.state == "running":
            return f"night {latest.night} (study {latest.study_id}) is still running"
    return None


def _check_spec(kind: str, spec: dict[str, Any], settings: Any) -> None:
    """422 for a spec that is invalid, or that every night would refuse: a run past the
    service's per-run limits (located under `spec`, as the sweep's own 422 would be)."""
    from service.limits import LimitExceeded, check_runs, study_runs, sweep_runs
    from service.schedules import validate_spec
    from service.spec import SweepSpec

    errors = spec_errors(kind, spec)
    if errors:
        raise RequestValidationError(errors)
    parsed = validate_spec(kind, spec)
    runs = sweep_runs(parsed) if isinstance(parsed, SweepSpec) else study_runs(parsed)
    try:
        check_runs(runs, settings)
    except LimitExceeded as e:
        e.loc = ("body", "spec", *e.loc[1:])
        raise


def _check_webhook(url: str | None, settings: Any) -> None:
    refusal = webhook_refusal(url, settings) if url else None
    if refusal is not None:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "webhook_url"), "msg": refusal, "input": url}]
        )


@router.post("", status_code=201, dependencies=[Depends(limit_submissions)], responses=INVALID)
def create_schedule(
    body: ScheduleCreate,
    identity: MemberIdentity,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> ScheduleCreated:
    """Create a schedule: a sweep or study spec fired on a cron expression. The spec is
    validated now (422 naming the field under `spec`). Its nights draw fresh seeds: the
    spec's seeds offset by the night's number."""
    _check_spec(body.kind, body.spec, settings)
    _check_webhook(body.webhook_url, settings)
    owner = spec_owner(identity, body.spec.get("owner"))
    user = owner if isinstance(owner, User) else _legacy(session, owner)
    schedule = new_schedule(
        session=session, body=body, owner=user, actor=identity.name, now=utcnow()
    )
    identity.record(
        session=session,
        action="schedule.create",
        target=f"schedule:{schedule.id}",
        detail={"name": schedule.name, "cron": schedule.cron},
    )
    session.commit()  # acknowledged means committed
    return ScheduleCreated(
        **_public(session, schedule, request), webhook_secret=schedule.webhook_secret
    )


def _legacy(session: Any, name: str) -> User:
    from db.auth import legacy_user

    return legacy_user(session=session, name=name)


@router.get("", responses=INVALID)
def read_schedules(
    session: SessionDep,
    request: Request,
    identity: CurrentIdentity,
    offset: Offset = 0,
    limit: int = Query(50, ge=1, le=500, description="schedules per page"),
) -> SchedulesPublic:
    """The schedules, by id."""
    rows = session.scalars(select(Schedule).order_by(Schedule.id).offset(offset).limit(limit))
    count = session.scalar(select(func.count()).select_from(Schedule)) or 0
    return SchedulesPublic(
        data=[SchedulePublic(**_public(session, s, request, identity)) for s in rows],
        count=count,
    )


@router.get("/{schedule_id}", responses=NOT_FOUND | INVALID)
def read_schedule(
    schedule: ScheduleDep, session: SessionDep, request: Request, identity: CurrentIdentity
) -> ScheduleDetail:
    """The schedule, its spec, its firings (newest first) and its events."""
    firings = session.scalars(
        select(ScheduleFiring)
        .where(ScheduleFiring.schedule_id == schedule.id)
        .order_by(ScheduleFiring.night.desc())
        .limit(100)
    ).all()
    events = session.scalars(
        select(ScheduleEvent)
        .where(ScheduleEvent.schedule_id == schedule.id)
        .order_by(ScheduleEvent.id)
    ).all()
    return ScheduleDetail(
        **_public(session, schedule, request, identity),
        spec=schedule.spec,
        firings=[FiringPublic.model_validate(f, from_attributes=True) for f in firings],
        events=[EventPublic.model_validate(e, from_attributes=True) for e in events],
    )


@router.patch("/{schedule_id}", responses=NOT_FOUND | INVALID)
def update(
    body: ScheduleUpdate,
    schedule: ScheduleDep,
    identity: MemberIdentity,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> SchedulePublic:
    """Change a schedule: its owner or an admin. An edit of the spec is validated like a
    new one and recorded in the schedule's history (old and new); a new cron or timezone,
    or a resume (`enabled: true`), counts slots from now."""
    ensure_may_change(identity, schedule.owner_user, f"schedule {schedule.id}", "change")
    if body.spec is not None:
        _check_spec(schedule.kind, body.spec, settings)
    if "webhook_url" in body.model_fields_set:
        _check_webhook(body.webhook_url, settings)
    update_schedule(
        session=session, schedule=schedule, body=body, actor=identity.name, now=utcnow()
    )
    session.commit()
    return SchedulePublic(**_public(session, schedule, request))


@router.delete("/{schedule_id}", responses=NOT_FOUND | INVALID)
def delete(schedule: ScheduleDep, identity: MemberIdentity, session: SessionDep) -> ScheduleDeleted:
    """Delete a schedule and its history; the sweeps and studies it made stay. Its owner or
    an admin."""
    ensure_may_change(identity, schedule.owner_user, f"schedule {schedule.id}", "delete")
    schedule_id = schedule.id
    firings = session.scalar(select(func.count()).where(ScheduleFiring.schedule_id == schedule_id))
    session.delete(schedule)
    identity.record(
        session=session,
        action="schedule.delete",
        target=f"schedule:{schedule_id}",
        detail={"name": schedule.name, "firings": firings},
    )
    session.commit()
    return ScheduleDeleted(id=schedule_id, firings=firings or 0)


@router.post(
    "/{schedule_id}/run",
    status_code=201,
    dependencies=[Depends(limit_submissions)],
    responses=NOT_FOUND | CONFLICT | INVALID,
)
def run_now(
    schedule: ScheduleDep,
    identity: MemberIdentity,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> FiringPublic:
    """Fire the schedule now, as a night of its own (its owner or an admin); its cron slots
    are unchanged. 409 while its latest night is still queued or running (nights that
    overlap would compete for the workers and blur the comparison), or when another firing
    of it is being made at this moment."""
    ensure_may_change(identity, schedule.owner_user, f"schedule {schedule.id}", "run")
    busy = unfinished_night(session, schedule.id)
    if busy is not None:
        raise HTTPException(409, f"schedule {schedule.id}: {busy}; wait for it or cancel it")
    from service.limits import reserve_queue
    from service.spec import SweepSpec

    if schedule.kind == "sweep":  # the night's runs count against the team's queue
        grid = SweepSpec.model_validate(schedule.spec).grid_size()
        reserve_queue(session=session, settings=settings, team=request_team(request), adding=grid)
    now = utcnow()
    try:
        firing = fire(
            session=session,
            schedule=schedule,
            slot=now,
            trigger="manual",
            fired_by=identity.name,
            settings=settings,
            now=now,
        )
    except SlotTaken as e:
        raise HTTPException(
            409, f"schedule {schedule.id} is being fired by someone else now; try again"
        ) from e
    return FiringPublic.model_validate(firing, from_attributes=True)


@router.get("/{schedule_id}/alerts", responses=NOT_FOUND | INVALID)
def read_alerts(
    schedule: ScheduleDep,
    session: SessionDep,
    limit: int = Query(200, ge=1, le=1000, description="alerts at most"),
) -> AlertsPublic:
    """What the nightly comparisons raised (each finished night against the nights before
    it), and how the webhook deliveries went."""
    from db.models import ScheduleAlert, WebhookDelivery
    from service.webhooks import alert_document

    alerts = session.scalars(
        select(ScheduleAlert)
        .where(ScheduleAlert.schedule_id == schedule.id)
        .order_by(ScheduleAlert.firing_id.desc(), ScheduleAlert.id)
        .limit(limit)
    ).all()
    deliveries = session.scalars(
        select(WebhookDelivery)
        .join(ScheduleFiring, ScheduleFiring.id == WebhookDelivery.firing_id)
        .where(ScheduleFiring.schedule_id == schedule.id)
        .order_by(WebhookDelivery.id.desc())
        .limit(100)
    ).all()
    return AlertsPublic(
        data=[AlertPublic(**alert_document(a)) for a in alerts],
        deliveries=[
            DeliveryPublic(
                night_firing=d.firing_id,
                url=d.url,
                attempts=d.attempts,
                delivered_at=d.delivered_at,
                last_status=d.last_status,
                last_error=d.last_error,
            )
            for d in deliveries
        ],
    )


@router.get("/{schedule_id}/figures", responses=NOT_FOUND | INVALID)
def read_schedule_figures(schedule: ScheduleDep, session: SessionDep) -> Figures:
    """The schedule page's trend plot: each configuration's steps to target, night by
    night, with the spread over the night's seeds and its alerts marked."""
    from service.figures.schedule import schedule_figures
    from service.nightwatch import history

    return Figures(figures=schedule_figures(history(session, schedule.id)))
