"""`plateau serve` on the embedded default fires a schedule with no other process, and
`plateau schedule add|list|run|pause|resume|rm` manage it through the API, as users run
them: subprocesses against a real server on 127.0.0.1."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
import yaml
from sqlalchemy import update

from db.models import Schedule
from db.session import session_scope
from tests.service.conftest import QUICK_SPEC
from tests.service.test_failover import start, stop, wait_for
from tests.service.test_identity_cli import env, free_port, plateau  # noqa: F401  (fixture)


@pytest.mark.slow
def test_serve_fires_a_schedule_by_itself_and_the_cli_manages_it(env, tmp_path):  # noqa: F811
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start(
        ["serve", "--no-dispatch", "--port", str(port)],
        # The scheduler is on by default; the test suite turns it off (tests/conftest.py).
        {**env, "PLATEAU_SCHEDULE": "true", "PLATEAU_SCHEDULE_POLL_SECONDS": "0.5"},
        tmp_path / "serve.log",
    )
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{url}/api/v1/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60, "plateau serve")
        document = {
            "name": "hourly watch",
            "cron": "0 * * * *",
            "timezone": "Europe/Berlin",
            "spec": QUICK_SPEC | {"seeds": [0, 1]},
        }
        path = tmp_path / "watch.yaml"
        path.write_text(yaml.safe_dump(document))
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump(document | {"spec": QUICK_SPEC | {"budget": {"steps": 0}}}))
        refused = plateau("schedule", "add", str(bad), "--url", url, env=env)
        assert refused.returncode == 2 and '"spec",' in refused.stderr, refused.stderr
        assert '"steps"' in refused.stderr
        added = plateau("schedule", "add", str(path), "--url", url, env=env)
        assert added.returncode == 0, added.stderr
        assert "schedule 1 created: 0 * * * * (Europe/Berlin)" in added.stdout
        listed = plateau("schedule", "list", "--url", url, env=env)
        assert "hourly watch" in listed.stdout and "enabled" in listed.stdout

        # Created two hours ago: the latest slot is due, and serve's own scheduler fires it.
        with session_scope(env["DATABASE_URL"]) as s:
            earlier = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
            s.execute(update(Schedule).values(slots_from=earlier))

        def fired() -> bool:
            return len(httpx.get(f"{url}/api/v1/schedules/1").json()["firings"]) == 1

        wait_for(fired, 30, "the scheduler inside plateau serve")
        (firing,) = httpx.get(f"{url}/api/v1/schedules/1").json()["firings"]
        assert firing["trigger"] == "cron" and firing["missed"] == 1 and firing["sweep_id"]
        assert firing["fired_by"].startswith("scheduler@")

        busy = plateau("schedule", "run", "1", "--url", url, env=env)  # night 0 is queued
        assert busy.returncode == 2 and "night 0" in busy.stderr and "409" in busy.stderr
        httpx.post(f"{url}/api/v1/sweeps/{firing['sweep_id']}/cancel").raise_for_status()
        now = plateau("schedule", "run", "1", "--url", url, env=env)
        assert now.returncode == 0 and "night 1 fired as sweep" in now.stdout, now.stderr
        sweep = httpx.get(f"{url}/api/v1/sweeps/{firing['sweep_id'] + 1}").json()
        assert sweep["spec"]["seeds"] == [2, 3]  # the next night's fresh seeds
        assert plateau("schedule", "pause", "1", "--url", url, env=env).returncode == 0
        assert httpx.get(f"{url}/api/v1/schedules/1").json()["enabled"] is False
        assert plateau("schedule", "resume", "1", "--url", url, env=env).returncode == 0
        assert plateau("schedule", "rm", "1", "--url", url, env=env).returncode == 0
        assert httpx.get(f"{url}/api/v1/schedules/1").status_code == 404
    finally:
        stop(server)


@pytest.mark.slow
def test_plateau_scheduler_fires_due_slots_as_its_own_process(env, tmp_path):  # noqa: F811
    """What docker-compose and the Kubernetes Deployment run: `plateau scheduler` on the
    database, no API in the same process."""
    from db.migrate import upgrade
    from tests.service.test_schedules import schedule_at

    upgrade(env["DATABASE_URL"])
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    sid = schedule_at(env["DATABASE_URL"], earlier)  # hourly: the latest slot is due
    process = start(
        ["scheduler"], {**env, "PLATEAU_SCHEDULE_POLL_SECONDS": "0.5"}, tmp_path / "sched.log"
    )
    try:
        from db.models import ScheduleFiring

        def fired() -> bool:
            with session_scope(env["DATABASE_URL"]) as s:
                return s.query(ScheduleFiring).filter_by(schedule_id=sid).count() == 1

        wait_for(fired, 60, "plateau scheduler")
        with session_scope(env["DATABASE_URL"]) as s:
            (firing,) = s.query(ScheduleFiring).all()
            assert firing.missed == 2 and firing.sweep_id is not None
            assert firing.fired_by.startswith("scheduler@")
    finally:
        stop(process)
    assert "firing schedules every 0.5s" in (tmp_path / "sched.log").read_text()
