"""Operations a team needs: delete a sweep (leaderboard sums corrected), retry its failed
runs, thin old curves (retention), and the Prometheus /metrics endpoint; on SQLite and
Postgres, with the real write paths (db.queue) and the API."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from db import queue
from db.errors import LeaseLost
from db.leaderboard import rebuild_rollups
from db.models import ConfigSummary, Probe, ResultRollup, Run, RunMetric, RunResult, Sweep, utcnow
from db.session import open_session, session_scope
from service.api.main import create_app
from service.settings import Settings
from tests.conftest import ROOT, plateau_cmd
from tests.service import test_leaderboard
from tests.service.conftest import QUICK_SPEC
from tests.service.live import live_server
from tests.service.test_leaderboard import check, rollup
from tests.service.test_limits import STUDY

board = test_leaderboard.board  # its fixture: two owners' finished sweeps


def count(url: str, table: Any, *where: Any) -> int:
    with session_scope(url) as s:
        return s.scalar(select(func.count()).select_from(table).where(*where)) or 0


@pytest.fixture
def client(migrated_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=migrated_url, submit_rate_limit="")
    with TestClient(create_app(settings, dispatch=False)) as c:
        yield c


def add_evidence(url: str, run_ids: list[int], attempt: int = 1) -> None:
    """Per-step rows and a probe for each run, as a worker writes them (rows of steps 0-9,
    evaluation at 0 and 5)."""
    for run_id in run_ids:
        rows = [
            {
                "step": step,
                "loss": 1.0 / (step + 1),
                "eval_loss": 0.5 if step % 5 == 0 else None,
                "activation_stats": {"l0": {"mean": 0.0, "std": 1.0}} if step % 5 == 0 else None,
            }
            for step in range(10)
        ]
        with session_scope(url) as s:
            queue.write_metrics(session=s, run_id=run_id, attempt=attempt, rows=rows)
            queue.write_probe(
                session=s,
                run_id=run_id,
                attempt=attempt,
                probe={"step": 9, "trigger": "end", "lambda_max": 1.0, "data": {}},
            )


def claim_all(url: str) -> list[queue.Claim]:
    with session_scope(url) as s:
        return queue.claim_runs(session=s, worker_id="t", limit=1000, lease_seconds=60)


def complete(url: str, claim: queue.Claim, outcome: str, **result: Any) -> None:
    with session_scope(url) as s:
        queue.complete_run(
            session=s, run_id=claim.run_id, attempt=claim.attempt, outcome=outcome, result=result
        )


# --- delete --------------------------------------------------------------------------


def sums(url: str) -> dict[str, Any]:
    return {"rollup": rollup(url), "summary": rollup(url, ConfigSummary)}


def rebuilt(url: str) -> dict[str, Any]:
    """What a rebuild from run_result gives (in a transaction that is rolled back)."""
    from db.session import _sessionmaker

    session = _sessionmaker(url)()
    try:
        rebuild_rollups(session=session)
        got = {
            "rollup": {
                tuple(getattr(r, k) for k in ("config_key", "sweep_id", "device", "day")): r.n_runs
                for r in session.scalars(select(ResultRollup))
            },
            "summary": {r.config_key: r.n_runs for r in session.scalars(select(ConfigSummary))},
        }
    finally:
        session.rollback()
        session.close()
    return got


def light(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "rollup": {(k[0], k[1], k[2], k[4]): v["n_runs"] for k, v in s["rollup"].items()},
        "summary": {k[0]: v["n_runs"] for k, v in s["summary"].items()},
    }


def test_deleting_sweeps_corrects_only_their_configurations(client, board):
    url, ana, ben = board["url"], board["ana"], board["ben"]
    with session_scope(url) as s:
        ben_sweep = s.get(Run, ben[0]).sweep_id
        ana_sweep = s.get(Run, ana[0]).sweep_id
        ben_keys = {s.get(Run, r).config_key for r in ben}
        for run_id in (*ben, ana[0]):  # curves and a probe, written as a worker would have
            s.add(RunMetric(run_id=run_id, attempt=1, step=0, loss=1.0))
            s.add(Probe(run_id=run_id, attempt=1, step=0, trigger="end", data={}))
    before = sums(url)
    untouched = {k: v for k, v in before["rollup"].items() if k[0] not in ben_keys}

    r = client.delete(f"/api/v1/sweeps/{ben_sweep}")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": ben_sweep, "runs": 3, "configurations": 2}
    assert client.get(f"/api/v1/sweeps/{ben_sweep}").status_code == 404
    for table, column in ((Run, Run.id), (RunResult, RunResult.run_id)):
        assert count(url, table, column.in_(ben)) == 0
    assert count(url, RunMetric, RunMetric.run_id.in_(ben)) == 0
    assert count(url, Probe, Probe.run_id.in_(ben)) == 0
    assert count(url, RunMetric, RunMetric.run_id == ana[0]) == 1  # ana's evidence stays
    after = sums(url)
    assert light(after) == rebuilt(url)  # the sums are those of the remaining results
    assert {k: v for k, v in after["rollup"].items() if k[0] not in ben_keys} == untouched
    check(client, url, {})  # the ranking agrees with the runs, through the API
    assert check(client, url, {"device": "cuda"}) == []  # ben's were the cuda runs

    r = client.delete(f"/api/v1/sweeps/{ana_sweep}")
    assert r.status_code == 200 and r.json()["runs"] == len(ana)
    assert count(url, ResultRollup) == count(url, ConfigSummary) == 0  # no results left
    assert client.get("/api/v1/leaderboard").json() == {"data": [], "count": 0}
    assert client.delete(f"/api/v1/sweeps/{ana_sweep}").status_code == 404


def test_a_deleted_sweeps_running_attempts_lose_their_lease(client, migrated_url):
    sweep = client.post("/api/v1/sweeps", json=QUICK_SPEC).json()["id"]
    claims = claim_all(migrated_url)
    add_evidence(migrated_url, [claims[0].run_id])
    assert client.delete(f"/api/v1/sweeps/{sweep}").json()["runs"] == 8
    with pytest.raises(LeaseLost), session_scope(migrated_url) as s:
        queue.write_metrics(session=s, run_id=claims[0].run_id, attempt=1, rows=[{"step": 10}])
    with pytest.raises(LeaseLost):
        complete(migrated_url, claims[1], "succeeded", final_loss=0.1)
    with session_scope(migrated_url) as s:
        assert (
            queue.renew_lease(session=s, run_id=claims[2].run_id, attempt=1, lease_seconds=5)
            is False
        )
    assert count(migrated_url, Run) == count(migrated_url, RunMetric) == 0


def test_a_studys_sweep_is_not_deleted_or_retried(client):
    study = client.post("/api/v1/studies", json=STUDY).json()
    for method, path in (("DELETE", ""), ("POST", "/retry")):
        r = client.request(method, f"/api/v1/sweeps/{study['sweep_id']}{path}")
        assert r.status_code == 409 and "study" in r.json()["detail"]
    assert client.get(f"/api/v1/studies/{study['id']}").status_code == 200
    assert client.delete("/api/v1/sweeps/999").status_code == 404


def test_deleting_a_sweep_that_is_already_gone_is_404(migrated_url):
    with session_scope(migrated_url) as s:
        assert queue.delete_sweep(session=s, sweep_id=12345) is None
        assert queue.retry_failed_runs(session=s, sweep_id=12345, extra_attempts=3) == 0


# --- retry ---------------------------------------------------------------------------


def test_retry_requeues_the_failed_runs_with_fresh_attempts(client, migrated_url):
    sweep = client.post("/api/v1/sweeps", json=QUICK_SPEC).json()["id"]
    claims = claim_all(migrated_url)
    add_evidence(migrated_url, [c.run_id for c in claims[:3]])
    for c in claims[:3]:
        complete(migrated_url, c, "failed")
    for c in claims[3:6]:
        complete(migrated_url, c, "succeeded", final_loss=0.2, steps_done=30)
    with session_scope(migrated_url) as s:  # the third failed by its lease, like the reaper
        s.execute(update(Run).where(Run.id == claims[2].run_id).values(error="lease expired"))
    failed = [c.run_id for c in claims[:3]]
    board_before = sums(migrated_url)

    r = client.post(f"/api/v1/sweeps/{sweep}/retry")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": sweep, "requeued": 3}
    with session_scope(migrated_url) as s:
        for run in s.scalars(select(Run).where(Run.id.in_(failed))):
            assert (run.status, run.attempts, run.max_attempts) == ("queued", 1, 1 + 3)
            assert run.error is None and run.finished_at is None and run.lease_owner is None
    assert count(migrated_url, RunResult, RunResult.run_id.in_(failed)) == 0
    assert count(migrated_url, RunMetric, RunMetric.run_id.in_(failed)) == 0
    assert count(migrated_url, Probe, Probe.run_id.in_(failed)) == 0
    assert sums(migrated_url) == board_before  # failed results never counted
    detail = client.get(f"/api/v1/sweeps/{sweep}").json()
    assert detail["counts"] == {"queued": 3, "running": 2, "succeeded": 3}

    # the next attempt is number 2 (attempts fence writes, so they never repeat) and records
    again = {c.run_id: c for c in claim_all(migrated_url)}
    assert {again[r].attempt for r in failed} == {2}
    add_evidence(migrated_url, [failed[0]], attempt=2)
    complete(migrated_url, again[failed[0]], "succeeded", final_loss=0.3, steps_done=30)
    run = client.get(f"/api/v1/runs/{failed[0]}").json()
    assert run["status"] == "succeeded" and run["result"]["attempt"] == 2
    assert run["curves"]["step"] == list(range(10))
    assert client.post(f"/api/v1/sweeps/{sweep}/retry").json()["requeued"] == 0


def test_retry_takes_the_specs_attempts_and_counts_against_the_queue(migrated_url):
    settings = Settings(database_url=migrated_url, submit_rate_limit="", max_queued_runs=9)
    with TestClient(create_app(settings, dispatch=False)) as client:
        spec = QUICK_SPEC | {"max_attempts": 5}
        sweep = client.post("/api/v1/sweeps", json=spec).json()["id"]
        claims = claim_all(migrated_url)
        for c in claims[:4]:
            complete(migrated_url, c, "failed")
        # 4 running, and a queued sweep of 8 more: 4 retried would make 16 > 9
        with session_scope(migrated_url) as s:
            s.execute(
                update(Run)
                .where(Run.id.in_([c.run_id for c in claims[4:]]))
                .values(status="cancelled")
            )
        client.post("/api/v1/sweeps", json=QUICK_SPEC)
        refused = client.post(f"/api/v1/sweeps/{sweep}/retry")
        assert refused.status_code == 422 and "PLATEAU_MAX_QUEUED_RUNS" in refused.text
        assert "has 8 unfinished" in refused.text and "this adds 4" in refused.text
    settings = Settings(database_url=migrated_url, submit_rate_limit="")
    with TestClient(create_app(settings, dispatch=False)) as client:
        assert client.post(f"/api/v1/sweeps/{sweep}/retry").json()["requeued"] == 4
        with session_scope(migrated_url) as s:
            tops = s.scalars(
                select(Run.max_attempts).where(Run.status == "queued", Run.sweep_id == sweep)
            )
            assert set(tops) == {1 + 5}
        client.post(f"/api/v1/sweeps/{sweep}/cancel")
        r = client.post(f"/api/v1/sweeps/{sweep}/retry")
        assert r.status_code == 409 and "cancelled" in r.json()["detail"]


@pytest.mark.postgres
def test_delete_and_retry_commit_before_they_answer(pg_migrated_url):
    """Through a real server whose session dependency is replaced by one that never
    commits in its cleanup: the two routes commit themselves, before they answer, so what
    they answered is in the database when the answer arrives."""
    from service.api.deps import get_session

    settings = Settings(database_url=pg_migrated_url, submit_rate_limit="")
    app = create_app(settings, dispatch=False)

    def no_commit() -> Iterator[Any]:
        session = open_session(pg_migrated_url)
        try:
            yield session
        finally:
            session.close()  # a rollback of anything the route did not commit itself

    with live_server(app) as base, httpx.Client(base_url=base, timeout=30) as http:
        first = http.post("/api/v1/sweeps", json=QUICK_SPEC).json()["id"]
        second = http.post("/api/v1/sweeps", json=QUICK_SPEC).json()["id"]
        for c in claim_all(pg_migrated_url)[8:]:
            complete(pg_migrated_url, c, "failed")
        app.dependency_overrides[get_session] = no_commit
        assert http.post(f"/api/v1/sweeps/{second}/retry").json()["requeued"] == 8
        assert count(pg_migrated_url, Run, Run.sweep_id == second, Run.status == "queued") == 8
        assert http.delete(f"/api/v1/sweeps/{first}").status_code == 200
        assert count(pg_migrated_url, Sweep, Sweep.id == first) == 0


# --- curve retention -----------------------------------------------------------------


def finished_runs(url: str, client: TestClient, n: int) -> list[int]:
    client.post("/api/v1/sweeps", json=QUICK_SPEC)
    claims = claim_all(url)[:n]
    add_evidence(url, [c.run_id for c in claims])
    for c in claims:
        complete(url, c, "succeeded", final_loss=0.2, steps_done=10)
    return [c.run_id for c in claims]


def test_old_curves_are_thinned_to_their_evaluation_steps(client, migrated_url, monkeypatch):
    from db import retention
    from service.maintenance import prune_curves

    monkeypatch.setattr(retention, "RUNS_PER_BATCH", 2)  # three batches for five runs
    runs = finished_runs(migrated_url, client, 6)
    old, recent = runs[:5], runs[5]
    with session_scope(migrated_url) as s:
        s.execute(
            update(Run).where(Run.id.in_(old)).values(finished_at=utcnow() - dt.timedelta(days=31))
        )
    results = {r: client.get(f"/api/v1/runs/{r}").json()["result"] for r in runs}

    pruned = prune_curves(migrated_url, days=30)
    assert (pruned.runs, pruned.rows) == (5, 5 * 8)
    for run_id in old:
        run = client.get(f"/api/v1/runs/{run_id}").json()
        assert run["curves"]["step"] == [0, 5] and run["curves"]["eval_loss"] == [0.5, 0.5]
        assert [a["step"] for a in run["activation_stats"]] == [0, 5]
        assert run["curves_pruned_at"] is not None and run["result"] == results[run_id]
        assert len(client.get(f"/api/v1/runs/{run_id}/probes").json()["data"]) == 1
    assert "thinned to the evaluation steps" in client.get(f"/runs/{old[0]}").text
    assert "thinned to" not in client.get(f"/runs/{recent}").text
    fresh = client.get(f"/api/v1/runs/{recent}").json()
    assert fresh["curves"]["step"] == list(range(10)) and fresh["curves_pruned_at"] is None
    assert prune_curves(migrated_url, days=30).runs == 0  # done once
    queued_or_running = count(migrated_url, Run, Run.status.in_(("queued", "running")))
    assert queued_or_running == 2 and prune_curves(migrated_url, days=0.000001).runs == 1


def test_the_cli_prunes_curves_and_says_how_many(client, migrated_url, tmp_path):
    runs = finished_runs(migrated_url, client, 2)
    with session_scope(migrated_url) as s:
        s.execute(
            update(Run).where(Run.id == runs[0]).values(finished_at=utcnow() - dt.timedelta(days=9))
        )

    def plateau(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            plateau_cmd("db", "prune-curves", *args),
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "DATABASE_URL": migrated_url, **env},
            timeout=120,
        )

    out = plateau("--days", "7")
    assert out.returncode == 0, out.stderr
    assert (
        "curves of 1 runs finished over 7 days ago thinned: 8 per-step rows deleted" in out.stdout
    )
    out = plateau(PLATEAU_CURVE_RETENTION_DAYS="0.00001")
    assert out.returncode == 0 and "curves of 1 runs" in out.stdout
    out = plateau()
    assert out.returncode != 0 and "PLATEAU_CURVE_RETENTION_DAYS" in out.stderr
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    out = plateau("--days", "7", DATABASE_URL=empty)
    assert out.returncode != 0 and "plateau db upgrade" in out.stderr


def test_a_dispatcher_does_the_upkeep_on_its_schedule(client, migrated_url):
    import datetime as dt

    from db import ratelimit
    from service.dispatcher import Dispatcher

    runs = finished_runs(migrated_url, client, 1)
    with session_scope(migrated_url) as s:
        s.execute(
            update(Run).where(Run.id == runs[0]).values(finished_at=utcnow() - dt.timedelta(days=2))
        )
        ratelimit.hit(
            session=s, key="old", amount=1, expiry_seconds=1, now=utcnow() - dt.timedelta(hours=1)
        )
    settings = Settings(database_url=migrated_url, curve_retention_days=1, maintenance_seconds=3600)
    dispatcher = Dispatcher(settings, capacity=1)
    dispatcher.maintain_if_due()
    assert count(migrated_url, RunMetric, RunMetric.run_id == runs[0]) == 2
    from db.models import RateLimitCounter

    assert count(migrated_url, RateLimitCounter) == 0
    with session_scope(migrated_url) as s:
        s.execute(update(Run).where(Run.id == runs[0]).values(curves_pruned_at=None))
        s.add(RunMetric(run_id=runs[0], attempt=1, step=3, loss=1.0))
    dispatcher.maintain_if_due()  # not due for an hour
    assert count(migrated_url, RunMetric, RunMetric.run_id == runs[0]) == 3
    without = Dispatcher(Settings(database_url=migrated_url), capacity=1)
    without.maintain_if_due()  # no retention set: curves stay
    assert count(migrated_url, RunMetric, RunMetric.run_id == runs[0]) == 3


# --- metrics -------------------------------------------------------------------------


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def test_metrics_report_the_queue_latencies_and_refusals(client, migrated_url):
    sweep = client.post("/api/v1/sweeps", json=QUICK_SPEC).json()["id"]
    claim_all(migrated_url)  # all 8 running
    client.post("/api/v1/sweeps", json=QUICK_SPEC)
    client.get(f"/api/v1/sweeps/{sweep}")
    client.get("/api/v1/nowhere/at/all")
    client.get("/static/plateau.css")
    before = client.get("/metrics").text
    refused = 'plateau_requests_refused_total{reason="cross_site"}'
    client.post(f"/api/v1/sweeps/{sweep}/cancel", headers={"origin": "https://evil.example"})
    page = client.get("/metrics")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
    text = page.text
    assert metric(text, 'plateau_runs{status="queued"}') == 8
    assert metric(text, 'plateau_runs{status="running"}') == 8
    assert metric(text, 'plateau_runs{status="failed"}') == 0
    assert metric(text, "plateau_database_up") == 1
    assert 0 <= metric(text, "plateau_queue_oldest_age_seconds") < 60
    assert (metric(text, refused) or 0) == (metric(before, refused) or 0) + 1
    route = 'route="/api/v1/sweeps/{sweep_id}"'
    assert (
        f'plateau_http_request_duration_seconds_count{{method="GET",{route},status="2xx"}}' in text
    )
    assert 'route="unmatched",status="4xx"' in text
    assert 'route="/static",status="2xx"' in text
    assert "plateau_dispatcher_claim_lag_seconds_count" in text
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_metrics_still_answer_when_the_database_does_not():
    from service.metrics import render

    text = render("sqlite:////nonexistent/folder/plateau.db").decode()
    assert metric(text, "plateau_database_up") == 0 and "plateau_runs{" not in text
    assert "plateau_http_request_duration_seconds" in text


def test_multiprocess_mode_adds_up_every_process(tmp_path):
    """With PROMETHEUS_MULTIPROC_DIR, /metrics of any process shows all processes' counts."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    bump = "from service.metrics import REFUSED; REFUSED.labels(reason='rate_limit').inc()"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", bump], cwd=ROOT, env=env, check=True)
    show = (
        "from prometheus_client import generate_latest; from service.metrics import "
        "process_registry; print(generate_latest(process_registry()).decode())"
    )
    out = subprocess.run(
        [sys.executable, "-c", show], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    assert metric(out.stdout, 'plateau_requests_refused_total{reason="rate_limit"}') == 2


@pytest.mark.ray
@pytest.mark.slow
def test_a_dispatcher_counts_claim_lag_and_finished_runs(local_ray, migrated_url):
    from service.dispatcher import Dispatcher
    from service.metrics import CLAIM_LAG, RUNS_FINISHED

    settings = Settings(database_url=migrated_url, lease_seconds=30, poll_seconds=0.2)
    with TestClient(create_app(settings, dispatch=False)) as client:
        sweep = client.post("/api/v1/sweeps", json=QUICK_SPEC).json()["id"]

        def done() -> bool:
            return client.get(f"/api/v1/sweeps/{sweep}").json()["status"] == "finished"

        def sample() -> tuple[float, float]:
            lags = CLAIM_LAG.collect()[0].samples
            finished = RUNS_FINISHED.collect()[0].samples
            n = next(s.value for s in lags if s.name.endswith("_count"))
            ok = sum(
                s.value
                for s in finished
                if s.name.endswith("_total") and s.labels["outcome"] in ("succeeded", "diverged")
            )
            return n, ok

        lag_before, ok_before = sample()
        dispatcher = Dispatcher(settings, capacity=2)
        dispatcher.run(until=lambda: done() and not dispatcher.inflight, timeout=180)
        lag_after, ok_after = sample()
    assert lag_after - lag_before == 8 and ok_after - ok_before == 8
