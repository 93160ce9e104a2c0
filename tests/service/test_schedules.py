"""Schedules: the API (validation at creation, roles, history of edits, fire now) and the
scheduler's slots with an injected clock (each slot once, catch-up after downtime)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from db.models import Schedule, ScheduleFiring, Sweep
from db.session import session_scope
from service.api.main import create_app
from service.scheduler import Scheduler
from service.settings import Settings
from tests.service.conftest import QUICK_SPEC
from tests.service.test_identities import bearer, team  # noqa: F401  (a fixture)

SPEC = QUICK_SPEC | {"seeds": [0, 1, 2]}
HOURLY = {"name": "watch", "cron": "0 * * * *", "timezone": "UTC", "spec": SPEC}


def create(client: TestClient, key: str | None = None, **changes: Any) -> dict[str, Any]:
    r = client.post("/api/v1/schedules", json=HOURLY | changes, headers=bearer(key))
    assert r.status_code == 201, r.text
    return r.json()


# --- the API ----------------------------------------------------------------------------------


def test_a_spec_is_validated_when_the_schedule_is_created(sqlite_client):
    bad = SPEC | {"budget": {"steps": 0}}
    r = sqlite_client.post("/api/v1/schedules", json=HOURLY | {"spec": bad})
    assert r.status_code == 422
    locs = [e["loc"] for e in r.json()["detail"]]
    assert ["body", "spec", "budget", "steps"] in locs
    r = sqlite_client.post("/api/v1/schedules", json=HOURLY | {"cron": "0 25 * * *"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "cron"]
    r = sqlite_client.post("/api/v1/schedules", json=HOURLY | {"timezone": "Mars/Olympus"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "timezone"]
    study = {"name": "s", "kind": "study", "cron": "0 2 * * *", "spec": SPEC}  # not a study
    r = sqlite_client.post("/api/v1/schedules", json=study)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "spec"]
    assert sqlite_client.get("/api/v1/schedules").json()["count"] == 0  # nothing half-made


def test_a_webhook_must_be_on_the_admins_allowlist(sqlite_url):
    from db.migrate import upgrade

    upgrade(sqlite_url)
    for allowed, url, ok in [
        ("", "https://hooks.example.org/x", False),  # webhooks off
        ("127.0.0.1", "http://127.0.0.1:9/x", True),  # an address listed as such
        ("hooks.example.org", "http://127.0.0.1:9/x", False),
        ("*.example.org", "http://localhost/x", False),
        ("localhost", "http://localhost/x", False),  # a name that resolves to loopback
        ("127.0.0.1", "ftp://127.0.0.1/x", False),
    ]:
        settings = Settings(database_url=sqlite_url, webhook_allowed_hosts=allowed)
        with TestClient(create_app(settings, dispatch=False, schedule=False)) as c:
            r = c.post("/api/v1/schedules", json=HOURLY | {"webhook_url": url})
            assert (r.status_code == 201) == ok, (allowed, url, r.text)
            if not ok:
                assert r.json()["detail"][0]["loc"] == ["body", "webhook_url"], r.text


def test_a_schedule_is_read_edited_paused_and_deleted_and_its_history_says_so(sqlite_client):
    c = sqlite_client
    made = create(c)
    assert len(made["webhook_secret"]) == 64 and made["spec_version"] == 1
    assert made["next_slot"] is not None and made["next_slot"].endswith(":00:00Z")
    url = f"/api/v1/schedules/{made['id']}"
    assert "webhook_secret" not in c.get(url).json()  # shown once
    edited = SPEC | {"budget": QUICK_SPEC["budget"] | {"steps": 40}}
    r = c.patch(url, json={"spec": edited})
    assert r.status_code == 200 and r.json()["spec_version"] == 2
    r = c.patch(url, json={"spec": SPEC | {"budget": {"steps": -1}}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "spec"]
    assert c.patch(url, json={"enabled": False}).json()["next_slot"] is None
    assert c.patch(url, json={"enabled": True}).json()["enabled"] is True
    detail = c.get(url).json()
    kinds = [e["kind"] for e in detail["events"]]
    assert kinds == ["created", "edited", "paused", "resumed"]
    change = detail["events"][1]["detail"]
    assert change["field"] == "spec" and change["new"]["budget"]["steps"] == 40
    assert change["old"]["budget"]["steps"] == QUICK_SPEC["budget"]["steps"]
    assert c.delete(url).json() == {"id": made["id"], "firings": 0}
    assert c.get(url).status_code == 404


def test_fire_now_makes_a_night_with_fresh_seeds(sqlite_client, sqlite_url):
    c = sqlite_client
    made = create(c)
    first = c.post(f"/api/v1/schedules/{made['id']}/run")
    assert first.status_code == 201, first.text
    assert first.json()["night"] == 0 and first.json()["trigger"] == "manual"
    again = c.post(f"/api/v1/schedules/{made['id']}/run")  # night 0 has not run yet
    assert again.status_code == 409 and "night 0" in again.json()["detail"], again.text
    assert c.post(f"/api/v1/sweeps/{first.json()['sweep_id']}/cancel").status_code == 200
    second = c.post(f"/api/v1/schedules/{made['id']}/run").json()
    assert second["night"] == 1
    with session_scope(sqlite_url) as s:
        seeds = [s.get(Sweep, f["sweep_id"]).spec["seeds"] for f in (first.json(), second)]
    assert seeds == [[0, 1, 2], [3, 4, 5]]


def test_members_manage_their_own_schedules_and_admins_all(team):  # noqa: F811
    c, keys = team["client"], team["keys"]
    mine = create(c, keys["mia"])
    assert mine["owner"] == "mia"
    url = f"/api/v1/schedules/{mine['id']}"
    assert c.patch(url, json={"enabled": False}, headers=bearer(keys["max"])).status_code == 403
    assert c.post(f"{url}/run", headers=bearer(keys["max"])).status_code == 403
    assert c.delete(url, headers=bearer(keys["max"])).status_code == 403
    r = c.post("/api/v1/schedules", json=HOURLY, headers=bearer(keys["vic"]))
    assert r.status_code == 403  # a viewer reads only
    assert c.get(url, headers=bearer(keys["vic"])).status_code == 200
    assert c.patch(url, json={"enabled": False}, headers=bearer(keys["ada"])).status_code == 200
    assert c.delete(url, headers=bearer(keys["mia"])).status_code == 200


# --- the scheduler, with an injected clock -------------------------------------------------


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def schedule_at(url: str, created: dt.datetime, **changes: Any) -> int:
    """A schedule made as the API makes it, created at `created`."""
    from db import auth
    from service.schedules import ScheduleCreate, new_schedule

    with session_scope(url) as s:
        owner = auth.legacy_user(session=s, name="anonymous")
        body = ScheduleCreate.model_validate(HOURLY | changes)
        return new_schedule(session=s, body=body, owner=owner, actor="test", now=created).id


def firings(url: str, schedule_id: int) -> list[ScheduleFiring]:
    with session_scope(url) as s:
        rows = s.scalars(
            select(ScheduleFiring)
            .where(ScheduleFiring.schedule_id == schedule_id)
            .order_by(ScheduleFiring.night)
        ).all()
        s.expunge_all()
        return list(rows)


T0 = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)


def test_each_slot_fires_once_and_downtime_fires_the_latest_once_late(migrated_url):
    settings = Settings(database_url=migrated_url, schedule_grace_seconds=300)
    sid = schedule_at(migrated_url, T0)
    clock = Clock(T0)
    scheduler = Scheduler(settings, clock=clock, name="one")
    assert scheduler.tick() == []  # 09:30: nothing due
    for hour in (10, 11, 12):
        clock.now = T0.replace(hour=hour, minute=0, second=20)
        assert len(scheduler.tick()) == 1
        assert scheduler.tick() == []  # the same slot again: nothing
    clock.now = T0.replace(hour=15, minute=42)  # down from 12:00:20 to 15:42
    assert len(scheduler.tick()) == 1
    rows = firings(migrated_url, sid)
    assert [r.slot.hour for r in rows] == [10, 11, 12, 15]
    assert [r.night for r in rows] == [0, 1, 2, 3]
    assert [r.missed for r in rows] == [0, 0, 0, 2]  # 13:00 and 14:00 never fired
    assert rows[-1].late_seconds == 42 * 60 and rows[0].late_seconds == 20


def test_catch_up_none_skips_the_slots_it_missed(migrated_url):
    settings = Settings(database_url=migrated_url, schedule_grace_seconds=300)
    sid = schedule_at(migrated_url, T0, catch_up="none")
    clock = Clock(T0.replace(hour=12, minute=40))  # 10, 11 and 12 o'clock all late
    scheduler = Scheduler(settings, clock=clock)
    assert scheduler.tick() == []
    clock.now = T0.replace(hour=13, minute=1)
    assert len(scheduler.tick()) == 1
    (row,) = firings(migrated_url, sid)
    assert row.slot.hour == 13 and row.missed == 3


def test_a_paused_schedule_fires_nothing_and_its_resume_does_not_catch_up(sqlite_url):
    from db.migrate import upgrade

    upgrade(sqlite_url)
    settings = Settings(database_url=sqlite_url)
    sid = schedule_at(sqlite_url, T0, enabled=False)
    clock = Clock(T0.replace(hour=14, minute=0, second=5))
    assert Scheduler(settings, clock=clock).tick() == []
    with session_scope(sqlite_url) as s:
        schedule = s.get(Schedule, sid)
        schedule.enabled, schedule.slots_from = True, clock.now  # what a resume does
    assert Scheduler(settings, clock=clock).tick() == []  # 14:00 was before the resume
    clock.now = T0.replace(hour=15, minute=0, second=5)
    assert len(Scheduler(settings, clock=clock).tick()) == 1


def test_a_spring_forward_night_fires_its_missing_hour_once(sqlite_url):
    from db.migrate import upgrade

    upgrade(sqlite_url)
    settings = Settings(database_url=sqlite_url, schedule_grace_seconds=3600)
    created = dt.datetime(2026, 3, 28, 12, tzinfo=dt.UTC)
    sid = schedule_at(sqlite_url, created, cron="30 2 * * *", timezone="Europe/Berlin")
    clock = Clock(created)
    scheduler = Scheduler(settings, clock=clock)
    fired = []
    while clock.now < dt.datetime(2026, 3, 31, tzinfo=dt.UTC):
        clock.now += dt.timedelta(minutes=10)
        fired += scheduler.tick()
    slots = [r.slot for r in firings(sqlite_url, sid)]
    # 02:30 CET is 01:30 UTC; on the 29th 02:30 does not exist and cron fires at 03:00 CEST
    assert slots == [
        dt.datetime(2026, 3, 29, 1, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 30, 0, 30, tzinfo=dt.UTC),
    ]
    assert len(fired) == 2


def test_the_nightly_example_is_a_schedule_the_api_takes(sqlite_client):
    import yaml

    from tests.conftest import ROOT

    document = yaml.safe_load((ROOT / "examples" / "nightly.yaml").read_text())
    r = sqlite_client.post("/api/v1/schedules", json=document)
    assert r.status_code == 201, r.text
    assert r.json()["catch_up"] == "latest" and r.json()["timezone"] == "Europe/Berlin"
    fired = sqlite_client.post(f"/api/v1/schedules/{r.json()['id']}/run").json()
    sweep = sqlite_client.get(f"/api/v1/sweeps/{fired['sweep_id']}").json()
    assert sweep["n_runs"] == 24 and sweep["source"] == "schedule"
    assert sweep["spec"]["seeds"] == [0, 1, 2]  # night 0: the spec's own seeds


def test_a_spec_past_the_limits_is_refused_at_creation_and_a_night_past_the_queue_now(
    sqlite_url,
):
    from db.migrate import upgrade

    upgrade(sqlite_url)
    settings = Settings(database_url=sqlite_url, max_run_parameters=1000, max_queued_runs=10)
    with TestClient(create_app(settings, dispatch=False, schedule=False)) as c:
        r = c.post("/api/v1/schedules", json=HOURLY)  # a 16-wide MLP on digits: > 1000
        assert r.status_code == 422, r.text
        (error,) = r.json()["detail"]
        assert error["loc"] == ["body", "spec", "architectures", 0]
        assert "parameters" in error["msg"]
    settings = Settings(database_url=sqlite_url, max_queued_runs=10)
    with TestClient(create_app(settings, dispatch=False, schedule=False)) as c:
        made = create(c)  # 8 grid points x 3 seeds = 24 runs a night
        r = c.post(f"/api/v1/schedules/{made['id']}/run")
        assert r.status_code == 422 and "queue" in r.text, r.text
        assert c.get(f"/api/v1/schedules/{made['id']}").json()["firings"] == []


def test_a_schedule_stops_with_its_owners_rights_and_others_see_only_its_webhooks_host(
    team,  # noqa: F811
):
    from db import auth
    from db.models import User

    c, keys, url = team["client"], team["keys"], team["url"]
    settings_hook = "http://127.0.0.1:9/secret-token-path"
    mine = c.post(
        "/api/v1/schedules", json=HOURLY, headers=bearer(keys["mia"])
    ).json()  # no webhook: the team fixture's server lists no hosts
    with session_scope(url) as s:
        s.get_one(Schedule, mine["id"]).webhook_url = settings_hook
    assert (
        c.get(f"/api/v1/schedules/{mine['id']}", headers=bearer(keys["mia"])).json()["webhook_url"]
        == settings_hook
    )
    for who in ("max", "vic"):
        shown = c.get(f"/api/v1/schedules/{mine['id']}", headers=bearer(keys[who])).json()
        assert shown["webhook_url"] == "http://127.0.0.1:9/…", who
    assert (
        c.get(f"/api/v1/schedules/{mine['id']}", headers=bearer(keys["ada"])).json()["webhook_url"]
        == settings_hook
    )
    # mia is disabled: her schedule fires no more
    with session_scope(url) as s:
        schedule = s.get_one(Schedule, mine["id"])
        schedule.slots_from = T0
        user = s.scalars(select(User).where(User.name == "mia")).one()
        auth.set_disabled(session=s, user=user, disabled=True)
    clock = Clock(T0.replace(hour=11, minute=0, second=5))
    assert Scheduler(Settings(database_url=url), clock=clock).tick() == []
    with session_scope(url) as s:
        user = s.scalars(select(User).where(User.name == "mia")).one()
        auth.set_disabled(session=s, user=user, disabled=False)
    assert len(Scheduler(Settings(database_url=url), clock=clock).tick()) == 1


def test_a_webhook_can_be_removed(sqlite_url):
    from db.migrate import upgrade

    upgrade(sqlite_url)
    settings = Settings(database_url=sqlite_url, webhook_allowed_hosts="127.0.0.1")
    with TestClient(create_app(settings, dispatch=False, schedule=False)) as c:
        made = create(c, webhook_url="http://127.0.0.1:9/x")
        r = c.patch(f"/api/v1/schedules/{made['id']}", json={"webhook_url": None})
        assert r.status_code == 200 and r.json()["webhook_url"] is None
        events = c.get(f"/api/v1/schedules/{made['id']}").json()["events"]
        assert events[-1]["detail"] == {
            "field": "webhook_url",
            "old": "http://127.0.0.1:9/x",
            "new": None,
        }
