"""The whole path on real components: REST -> queue -> dispatcher -> Ray task -> results."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from db.models import Run, RunMetric, RunResult
from db.session import session_scope
from service.api.main import create_app
from tests.service.conftest import QUICK_SPEC

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def wait_finished(client, sweep_id: int, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sweep = client.get(f"/api/v1/sweeps/{sweep_id}").json()
        if sweep["status"] in ("finished", "cancelled"):
            return sweep
        time.sleep(0.5)
    raise AssertionError(f"sweep {sweep_id} did not finish: {sweep}")


def test_a_sweep_runs_to_the_end_through_the_api(local_ray, settings):
    from fastapi.testclient import TestClient

    bad = {"name": "sgd", "lr": 1e6}  # diverges within a few steps
    spec = QUICK_SPEC | {"optimizers": QUICK_SPEC["optimizers"] + [bad]}
    with TestClient(create_app(settings, dispatch=True)) as client:
        created = client.post("/api/v1/sweeps", json=spec).json()
        sweep = wait_finished(client, created["id"])
        assert sweep["counts"] == {"succeeded": 8, "diverged": 4}, sweep
        assert sweep["progress"] == 1.0
        runs = client.get(f"/api/v1/sweeps/{created['id']}/runs").json()["data"]
        ok = next(r for r in runs if r["status"] == "succeeded")
        detail = client.get(f"/api/v1/runs/{ok['id']}").json()
        assert detail["attempts"] == 1 and detail["final_loss"] > 0
        assert detail["curves"]["step"][:3] == [0, 5, 10]  # log_every=5
        assert all(g > 0 for g in detail["curves"]["grad_norm"])
        assert detail["result"]["environment"]["torch"].startswith("2.")
        assert detail["diagnosis"]["verdict"] in ("converged", "still_improving", "plateau")
        diverged = next(r for r in runs if r["status"] == "diverged")
        detail = client.get(f"/api/v1/runs/{diverged['id']}").json()
        step = detail["result"]["diverged_step"]
        assert step is not None and f"step {step}" in detail["error"]
        assert detail["diagnosis"]["verdict"] == "diverged"
        assert f"step {step}" in detail["diagnosis"]["sentence"]
        assert detail["result"]["diagnosis"]["sentence"] == detail["diagnosis"]["sentence"]
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.count()).select_from(RunResult)) == 12
        assert s.scalar(select(func.count(func.distinct(RunMetric.run_id)))) == 12


def test_an_exception_inside_a_run_fails_that_run_only(local_ray, settings):
    from fastapi.testclient import TestClient

    spec = QUICK_SPEC | {"device": "cuda"}  # no GPU here: each run raises at start
    healthy = QUICK_SPEC | {"name": "healthy"}
    with TestClient(create_app(settings, dispatch=True)) as client:
        broken_id = client.post("/api/v1/sweeps", json=spec).json()["id"]
        healthy_id = client.post("/api/v1/sweeps", json=healthy).json()["id"]
        assert wait_finished(client, broken_id)["counts"] == {"failed": 8}
        assert wait_finished(client, healthy_id)["counts"] == {"succeeded": 8}
        run = client.get(f"/api/v1/sweeps/{broken_id}/runs").json()["data"][0]
        assert "cuda" in run["error"] and run["attempts"] == 1
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.count()).select_from(Run).where(Run.status == "failed")) == 8
