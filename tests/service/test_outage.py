"""A 20 s PostgreSQL outage in the middle of a sweep, on a private cluster this test starts
on its own port (never the shared server): every request during the outage answers 503
with Retry-After (none 500), /health stays 200 and says so, the dispatcher waits with
backoff instead of a traceback per tick, the workers ride it out, and afterwards the sweep
finishes with exactly one result per run and no run left running."""

from __future__ import annotations

import collections
import shutil
import tempfile
import time

import httpx
import pytest
from sqlalchemy import func, select

from db.models import Run, RunMetric, RunResult
from db.session import dispose_engines, read_scope
from tests.service.clusters import PrivatePostgres, free_port
from tests.service.test_failover import start, stop, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SPEC = {
    "name": "outage",
    "task": "digits",
    "architectures": [{"name": "mlp", "depth": 2, "width": 32}],
    "optimizers": [{"name": "adam", "lr": 0.003}],
    "seeds": [0, 1, 2, 3],
    "budget": {"steps": 6000, "batch_size": 64, "log_every": 20, "eval_every": 2000},
}


@pytest.fixture
def private_postgres():
    pg = PrivatePostgres().init()
    try:
        yield pg
    finally:
        dispose_engines()
        pg.remove()


def outage_requests(sweep_id: int, run_id: int) -> list[tuple[str, str, dict | None]]:
    return [
        ("GET", "/api/v1/sweeps", None),
        ("GET", f"/api/v1/sweeps/{sweep_id}", None),
        ("GET", f"/api/v1/sweeps/{sweep_id}/runs", None),
        ("GET", f"/api/v1/runs/{run_id}", None),
        ("GET", f"/api/v1/runs/{run_id}/probes", None),
        ("GET", "/api/v1/studies", None),
        ("GET", "/api/v1/leaderboard", None),
        ("GET", "/api/v1/leaderboard.csv", None),
        ("POST", "/api/v1/sweeps", SPEC | {"name": "during the outage"}),
        ("POST", f"/api/v1/sweeps/{sweep_id + 1}/cancel", None),
        ("GET", "/", None),
        ("GET", f"/sweeps/{sweep_id}", None),
        ("GET", f"/runs/{run_id}", None),
        ("GET", f"/compare?runs={run_id}", None),
        ("GET", "/api/v1/ready", None),
    ]


def test_a_postgres_outage_is_503_everywhere_and_the_sweep_still_finishes(
    private_postgres, tmp_path
):
    url = private_postgres.url
    port = free_port()
    env = {
        "DATABASE_URL": url,
        "RAY_ADDRESS": "",  # its own local Ray instance
        "PLATEAU_RAY_NUM_CPUS": "2",
        "PLATEAU_LEASE_SECONDS": "60",
        "PLATEAU_POLL_SECONDS": "0.2",
        # A run per Ray task, two at a time, so that the outage falls mid-training (packed,
        # the four runs train at once and may finish before it; test_failover covers packs)
        "PLATEAU_PACK_SIZE": "1",
        "PLATEAU_BACKOFF_MAX_SECONDS": "2",
        "PLATEAU_RETRY_AFTER_SECONDS": "3",
        # Ray's session logs of this instance, here (short: unix socket paths live there)
        "RAY_TMPDIR": tempfile.mkdtemp(prefix="plr-"),
    }
    log = tmp_path / "serve.log"
    server = start(["serve", "--port", str(port)], env, log)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:

        def ready() -> bool:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                return http.get("/api/v1/ready").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 90, "plateau serve")
        created = http.post("/api/v1/sweeps", json=SPEC)
        assert created.status_code == 201, created.text
        sweep_id = created.json()["id"]

        def training() -> bool:  # both CPUs busy, curves arriving
            with read_scope(url) as s:
                running = s.scalar(select(func.count()).where(Run.status == "running"))
                rows = s.scalar(select(func.count()).select_from(RunMetric))
            return running == 2 and rows > 0

        wait_for(training, 90, "two runs training")
        run_id = http.get(f"/api/v1/sweeps/{sweep_id}/runs").json()["data"][0]["id"]
        dispose_engines()  # this test's own pool: no stale connections after the restart

        private_postgres.stop()
        stopped_at = time.monotonic()
        answers: collections.Counter[int] = collections.Counter()
        without_retry_after = []
        healths = []
        while time.monotonic() - stopped_at < 20:
            for method, path, body in outage_requests(sweep_id, run_id):
                r = http.request(method, path, json=body)
                answers[r.status_code] += 1
                if r.status_code == 503 and r.headers.get("retry-after") != "3":
                    without_retry_after.append(path)
                if r.status_code != 503:
                    print(method, path, r.status_code, r.text[:300])
            health = http.get("/api/v1/health")
            healths.append((health.status_code, health.json()["database"]["ok"]))
            time.sleep(0.5)
        private_postgres.start()
        print(f"\nduring the outage: {dict(answers)}")
        assert answers[500] == 0 and set(answers) == {503}, dict(answers)
        assert without_retry_after == []
        assert set(healths) == {(200, False)}

        def finished() -> bool:
            r = http.get(f"/api/v1/sweeps/{sweep_id}")
            return r.status_code == 200 and r.json()["status"] == "finished"

        wait_for(finished, 150, "the sweep to finish after the outage")
        assert http.get("/api/v1/health").json()["database"]["ok"] is True
        text = log.read_text()  # before the shutdown, whose SIGTERM Ray reports at length
    finally:
        stop(server)
        http.close()
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    with read_scope(url) as s:
        runs = s.scalars(select(Run).where(Run.sweep_id == sweep_id)).all()
        results = s.execute(select(RunResult.run_id, RunResult.attempt)).all()
    assert [r.status for r in runs] == ["succeeded"] * 4
    assert sorted(rid for rid, _ in results) == sorted(r.id for r in runs)  # one each
    assert dict(results) == {r.id: r.attempts for r in runs}
    waits = text.count("WARNING:service.dispatcher:database unavailable (")
    print(f"dispatcher waits logged: {waits}; attempts: {[r.attempts for r in runs]}")
    assert 5 <= waits <= 25  # backoff capped at 2 s over ~20 s, not one line per 0.2 s tick
    assert "dispatcher tick failed" not in text
    assert "Traceback" not in text, text[-4000:]
