"""Acknowledged means committed: every write endpoint commits before it answers.

Through a real HTTP server (uvicorn on a port), where the answer leaves before anything a
route leaves for later; against Postgres, whose deferred constraint triggers refuse a
transaction at COMMIT, the point a cleanup-time commit would fail after a 2xx was sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import optuna
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import func, select, text

from db.models import Run, Study, Sweep
from db.session import session_scope
from service.api.deps import READ_METHODS, get_session
from service.api.main import create_app
from service.settings import Settings
from tests.service.conftest import QUICK_SPEC, LiveServer

STUDY_SPEC = {
    "name": "study",
    "task": "digits",
    "architecture": {"name": "mlp", "depth": 1, "width": 8},
    "fixed": {"optimizer": {"name": "sgd", "lr": 0.1}, "budget": {"steps": 10}},
    "search_space": {"init": ["default", "orthogonal"]},
    "n_trials": 2,
    "pruner": {"name": "none"},
}

# Refuse, at COMMIT, any transaction that wrote a row these conditions mark.
REFUSE_AT_COMMIT = """
CREATE FUNCTION refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'refused at commit: %', TG_ARGV[0];
END $$;
CREATE CONSTRAINT TRIGGER refuse_sweep AFTER INSERT ON sweep DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW WHEN (NEW.name = 'refuse-at-commit') EXECUTE FUNCTION refuse_marked('sweep');
CREATE CONSTRAINT TRIGGER refuse_cancel AFTER UPDATE ON sweep DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW WHEN (NEW.name = 'refuse-cancel' AND NEW.cancelled_at IS NOT NULL)
  EXECUTE FUNCTION refuse_marked('cancel');
CREATE CONSTRAINT TRIGGER refuse_study AFTER INSERT ON study DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW WHEN (NEW.name = 'refuse-at-commit') EXECUTE FUNCTION refuse_marked('study');
CREATE CONSTRAINT TRIGGER refuse_study_cancel AFTER UPDATE ON study
  DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW WHEN (NEW.name = 'refuse-cancel' AND NEW.state = 'cancelled')
  EXECUTE FUNCTION refuse_marked('study cancel');
"""


def test_every_write_route_commits_before_it_answers():
    """Structure: a route of any method but GET/HEAD that uses the database gets it from
    `get_session` with scope "function", whose commit runs before the response is sent."""

    def sessions(dependant):
        for sub in dependant.dependencies:
            if sub.call is get_session:
                yield sub
            yield from sessions(sub)

    def api_routes(routes):
        for route in routes:
            if isinstance(route, APIRoute):
                yield route
            elif hasattr(route, "original_router"):  # FastAPI's record of include_router
                yield from api_routes(route.original_router.routes)

    app = create_app(Settings(database_url="sqlite://"), dispatch=False)
    writes = [r for r in api_routes(app.routes) if r.methods - READ_METHODS]
    names = {r.name for r in writes}
    assert {"create_sweep", "cancel_sweep", "create_study", "cancel_study"} <= names
    for route in writes:
        found = list(sessions(route.dependant))
        assert found, f"{route.path} writes without the request's unit of work"
        assert all(d.scope == "function" for d in found), route.path


@pytest.fixture
def refusing_url(pg_migrated_url: str) -> str:
    with session_scope(pg_migrated_url) as s:
        s.execute(text(REFUSE_AT_COMMIT))
    return pg_migrated_url


def serve(url: str) -> LiveServer:
    # The per-client submission limit (60/minute by default) is raised for the race below:
    # 200 submissions in seconds from one client address.
    settings = Settings(database_url=url, submit_rate_limit="1000/minute")
    return LiveServer(create_app(settings, dispatch=False))


@pytest.fixture
def refusing_server(refusing_url: str) -> Iterator[LiveServer]:
    with serve(refusing_url) as server:
        yield server


@pytest.fixture
def pg_server(pg_migrated_url: str) -> Iterator[LiveServer]:
    with serve(pg_migrated_url) as server:
        yield server


def _count(url: str, model, *where) -> int:
    with session_scope(url) as s:
        return s.scalar(select(func.count()).select_from(model).where(*where)) or 0


@pytest.mark.postgres
def test_a_commit_the_database_refuses_is_a_5xx_and_leaves_nothing(refusing_url, refusing_server):
    api = f"{refusing_server.url}/api/v1"
    with httpx.Client(timeout=30) as client:
        # create: refused at COMMIT
        r = client.post(f"{api}/sweeps", json=QUICK_SPEC | {"name": "refuse-at-commit"})
        assert r.status_code == 500, r.text
        assert "rolled back" in r.json()["detail"]
        assert _count(refusing_url, Sweep) == 0 and _count(refusing_url, Run) == 0

        # cancel: the update is refused at COMMIT, so the runs stay queued
        created = client.post(f"{api}/sweeps", json=QUICK_SPEC | {"name": "refuse-cancel"})
        assert created.status_code == 201
        sweep_id = created.json()["id"]
        r = client.post(f"{api}/sweeps/{sweep_id}/cancel")
        assert r.status_code == 500, r.text
        assert _count(refusing_url, Run, Run.status == "queued") == 8
        assert client.get(f"{api}/sweeps/{sweep_id}").json()["cancelled_at"] is None

        # a study: our rows refused at COMMIT; the Optuna study made before them is gone too
        r = client.post(f"{api}/studies", json=STUDY_SPEC | {"name": "refuse-at-commit"})
        assert r.status_code == 500, r.text
        assert _count(refusing_url, Study) == 0
        assert optuna.get_all_study_names(storage=refusing_url) == []

        # cancel a study: refused at COMMIT, so it keeps running
        created = client.post(f"{api}/studies", json=STUDY_SPEC | {"name": "refuse-cancel"})
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]
        r = client.post(f"{api}/studies/{study_id}/cancel")
        assert r.status_code == 500, r.text
        with session_scope(refusing_url) as s:
            assert s.get(Study, study_id).state == "running"

        # the same requests without the mark are acknowledged and committed
        r = client.post(f"{api}/sweeps", json=QUICK_SPEC | {"name": "kept"})
        assert r.status_code == 201
        assert client.get(r.json()["url"]).status_code == 200
        assert client.post(f"{api}/sweeps/{r.json()['id']}/cancel").status_code == 200
        assert _count(refusing_url, Run, Run.status == "cancelled") == 8


@pytest.mark.postgres
@pytest.mark.slow
def test_200_concurrent_submissions_are_readable_the_moment_they_are_acknowledged(
    pg_migrated_url, pg_server
):
    """200 submissions from 16 concurrent clients: every 201's sweep answers 200 to a GET
    sent right after the 201; then 100 concurrent cancels: every 200 means its runs are
    cancelled in the database by the time the client reads the answer."""
    api = f"{pg_server.url}/api/v1"
    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60)
        return local.client

    def submit(i: int) -> tuple[int, int | None, int | None]:
        r = client().post(f"{api}/sweeps", json=QUICK_SPEC | {"name": f"race-{i}"})
        if r.status_code != 201:
            return r.status_code, None, None
        body = r.json()
        return 201, body["id"], client().get(body["url"]).status_code

    def cancel(sweep_id: int) -> tuple[int, int]:
        r = client().post(f"{api}/sweeps/{sweep_id}/cancel")
        if r.status_code != 200:
            return r.status_code, -1
        return 200, _count(
            pg_migrated_url, Run, Run.sweep_id == sweep_id, Run.status != "cancelled"
        )

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(submit, range(200)))
        acknowledged = [r for r in results if r[0] == 201]
        took = time.monotonic() - started
        print(f"\n200 submissions: {len(acknowledged)} answered 201 in {took:.1f} s")
        assert len(acknowledged) >= 190, [r[0] for r in results]
        unreadable = [sweep_id for _, sweep_id, read in acknowledged if read != 200]
        assert unreadable == [], f"acknowledged but not readable at once: {unreadable}"
        assert _count(pg_migrated_url, Sweep) == len(acknowledged)

        cancels = list(pool.map(cancel, [sweep_id for _, sweep_id, _ in acknowledged[:100]]))
    confirmed = [left for status, left in cancels if status == 200]
    print(f"100 cancels: {len(confirmed)} answered 200, runs left uncancelled: {sum(confirmed)}")
    assert len(confirmed) >= 95
    assert set(confirmed) == {0}, "a cancel answered 200 before its runs were cancelled"
