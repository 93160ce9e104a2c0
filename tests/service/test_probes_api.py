"""Landscape probes through the whole path: spec -> Ray worker -> probe rows -> REST."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.api.main import create_app
from service.settings import Settings
from tests.service.conftest import QUICK_SPEC
from tests.service.test_e2e import wait_finished
from workers.diagnose import VERDICTS

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def client(local_ray, pg_migrated_url):
    settings = Settings(database_url=pg_migrated_url, lease_seconds=20, poll_seconds=0.2)
    with TestClient(create_app(settings, dispatch=True)) as c:
        yield c


def test_probes_at_the_end_are_stored_for_every_run(client):
    spec = QUICK_SPEC | {"probes": {"at": ["end"]}, "budget": QUICK_SPEC["budget"] | {"steps": 60}}
    sweep_id = client.post("/api/v1/sweeps", json=spec).json()["id"]
    assert wait_finished(client, sweep_id)["counts"] == {"succeeded": 8}
    runs = client.get(f"/api/v1/sweeps/{sweep_id}/runs").json()["data"]
    for run in runs:
        probes = client.get(f"/api/v1/runs/{run['id']}/probes").json()
        assert probes["count"] == 1
        (probe,) = probes["data"]
        assert probe["trigger"] == "end" and probe["step"] == 60
        assert probe["lambda_max"] > 0 and probe["lambda_max"] >= probe["lambda_min"]
        assert probe["trace_stderr"] > 0
        assert 0 <= probe["negative_mass"] <= 1 and probe["negative_mass_stderr"] >= 0
        assert probe["data"]["mode"] == "eval" and probe["data"]["density"]
        assert len(probe["data"]["slices"]["random_1d"]["values"]) == 21
        diagnosis = run["diagnosis"]
        assert diagnosis["verdict"] in VERDICTS and diagnosis["sentence"]
        assert diagnosis["evidence"]["lambda_min"] == probe["lambda_min"]
        assert set(diagnosis["thresholds"]) >= {"neg_tol", "stationary", "window", "target"}
        flags = probe["data"]["eigenvalue_converged"]
        assert len(flags["top"]) == len(flags["bottom"]) == 3  # k


def test_unconverged_eigenvalues_are_marked_in_the_api_and_on_the_page(client):
    """Three Lanczos steps cannot resolve λmin of an MLP: the probe says so, the page marks
    it, and the verdict does not claim a minimum from it; eigenvalues only: no trace."""
    probes = {"at": ["end"], "k": 1, "lanczos_steps": 3, "lanczos_max_steps": 3}
    spec = QUICK_SPEC | {
        "optimizers": QUICK_SPEC["optimizers"][:1],
        "inits": ["default"],
        "grad_clip": [None],
        "probes": probes | {"measure": ["eigenvalues"]},
    }
    sweep_id = client.post("/api/v1/sweeps", json=spec).json()["id"]
    assert wait_finished(client, sweep_id)["counts"] == {"succeeded": 1}
    (run,) = client.get(f"/api/v1/sweeps/{sweep_id}/runs").json()["data"]
    (probe,) = client.get(f"/api/v1/runs/{run['id']}/probes").json()["data"]
    assert probe["data"]["lanczos_steps"] == 3 and probe["data"]["converged"] is False
    assert probe["data"]["eigenvalue_converged"]["bottom"] == [False]
    assert probe["trace"] is None and probe["negative_mass"] is None
    assert probe["data"].get("slices") is None
    assert run["diagnosis"]["verdict"] != "local_minimum"
    page = client.get(f"/runs/{run['id']}").text
    assert 'class="num unconverged" data-eig="bottom"' in page
    assert "not converged" in page


def test_a_tiny_init_deep_linear_run_is_probed_on_its_first_plateau(client):
    spec = {
        "name": "origin-saddle",
        "task": {"name": "deep_linear", "n_train": 256, "singular_values": [4.0, 2.0, 1.0]},
        "architectures": [{"name": "deep_linear", "depth": 4, "width": 16}],
        "optimizers": [{"name": "sgd", "lr": 0.02}],
        "inits": [{"name": "orthogonal", "scale": 0.2}],
        "budget": {"steps": 400, "batch_size": 256, "log_every": 10, "eval_every": 200},
        "target": {"loss": 0.01},
        "plateau": {"window": 25, "min_length": 50},
        "probes": {"at": ["plateau"], "max_plateau_probes": 1},
    }
    sweep_id = client.post("/api/v1/sweeps", json=spec).json()["id"]
    wait_finished(client, sweep_id)
    (run,) = client.get(f"/api/v1/sweeps/{sweep_id}/runs").json()["data"]
    detail = client.get(f"/api/v1/runs/{run['id']}").json()
    first = detail["result"]["plateaus"]["segments"][0]
    (probe,) = client.get(f"/api/v1/runs/{run['id']}/probes").json()["data"]
    assert probe["trigger"] == "plateau" and first["start"] <= probe["step"] <= first["end"]
    # Near the saddle at the origin: small gradient, curvature small on the loss's scale
    # (loss ~10) and clearly negative along some direction.
    assert probe["grad_norm"] < 0.05
    assert abs(probe["lambda_max"]) < 1.0
    assert probe["lambda_min"] + probe["data"]["residuals"]["bottom"][0] < 0
