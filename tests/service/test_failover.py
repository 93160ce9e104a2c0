"""Several processes against one Postgres: exactly-once execution and recovery after a kill.

The dispatchers here are real `plateau` processes; the Ray cluster is the test session's
local Ray instance (their RAY_ADDRESS), or one the killed `plateau serve` started itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from sqlalchemy import func, select

from db.models import Run, RunResult
from db.session import session_scope
from service.spec import SweepSpec
from service.sweeps import submit_sweep
from tests.conftest import ROOT, plateau_cmd

pytestmark = [pytest.mark.postgres, pytest.mark.ray, pytest.mark.slow]


def enqueue(url: str, *, seeds: int, steps: int, name: str = "failover") -> int:
    spec = SweepSpec.model_validate(
        {
            "name": name,
            "task": "digits",
            "architectures": [{"name": "mlp", "depth": 2, "width": 32}],
            "optimizers": [{"name": "adam", "lr": 0.003}],
            "seeds": list(range(seeds)),
            "budget": {"steps": steps, "batch_size": 64, "log_every": 10, "eval_every": 100},
        }
    )
    with session_scope(url) as s:
        return submit_sweep(session=s, spec=spec, source="api", max_attempts=3).id


def statuses(url: str) -> dict[str, int]:
    with session_scope(url) as s:
        rows = s.execute(select(Run.status, func.count()).group_by(Run.status)).all()
    return dict(rows)  # type: ignore[arg-type]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def start(args: list[str], env: dict[str, str], log_path) -> subprocess.Popen:
    with open(log_path, "w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            plateau_cmd(*args),
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_two_dispatchers_execute_each_of_50_runs_exactly_once(pg_migrated_url, local_ray, tmp_path):
    enqueue(pg_migrated_url, seeds=50, steps=20)
    # One run at a time per dispatcher: two drivers over-subscribing 2 CPUs would make Ray
    # recycle worker processes between the two jobs (a torch import per run).
    env = {
        "DATABASE_URL": pg_migrated_url,
        "RAY_ADDRESS": local_ray,
        "PLATEAU_CAPACITY": "1",
        "PLATEAU_POLL_SECONDS": "0.1",
        "PLATEAU_LEASE_SECONDS": "60",
    }
    procs = [start(["dispatcher"], env, tmp_path / f"d{i}.log") for i in range(2)]
    try:
        wait_for(lambda: statuses(pg_migrated_url) == {"succeeded": 50}, 240, "50 runs")
    finally:
        for p in procs:
            stop(p)
    with session_scope(pg_migrated_url) as s:
        runs = s.scalars(select(Run)).all()
        assert all(r.attempts == 1 for r in runs), "a run was claimed twice"
        assert s.scalar(select(func.count()).select_from(RunResult)) == 50
        owners = {r.lease_owner for r in runs}  # the dispatcher whose attempt recorded it
        assert len(owners) == 2, f"one dispatcher did all the work: {owners}"
    text = "".join((tmp_path / f"d{i}.log").read_text() for i in range(2))
    assert "Traceback" not in text, text[-3000:]


def test_killing_the_serve_process_mid_sweep_loses_no_run(pg_migrated_url, local_ray, tmp_path):
    lease = 4
    enqueue(pg_migrated_url, seeds=6, steps=1500)
    base = {
        "DATABASE_URL": pg_migrated_url,
        "PLATEAU_LEASE_SECONDS": str(lease),
        "PLATEAU_POLL_SECONDS": "0.2",
        "PLATEAU_RAY_NUM_CPUS": "2",
    }
    serve_env = base | {"RAY_ADDRESS": ""}  # its own local Ray instance, killed with it
    server = start(["serve", "--port", "0"], serve_env, tmp_path / "serve.log")
    try:
        wait_for(lambda: statuses(pg_migrated_url).get("running", 0) >= 1, 90, "a running run")
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    killed_at = statuses(pg_migrated_url)
    assert killed_at.get("succeeded", 0) < 6, "the sweep finished before the kill"

    dispatcher = start(
        ["dispatcher"], base | {"RAY_ADDRESS": local_ray}, tmp_path / "dispatcher.log"
    )
    try:
        wait_for(lambda: statuses(pg_migrated_url) == {"succeeded": 6}, 300, "recovery")
    finally:
        stop(dispatcher)
    with session_scope(pg_migrated_url) as s:
        assert s.scalar(select(func.count()).select_from(RunResult)) == 6
        attempts = s.scalars(select(Run.attempts)).all()
        results = s.execute(select(RunResult.run_id, RunResult.attempt)).all()
    assert max(attempts) >= 2, "no run was re-executed after the kill"
    assert all(a <= 3 for a in attempts)
    # the one result of each run came from its last attempt
    by_run = dict(results)
    with session_scope(pg_migrated_url) as s:
        for run in s.scalars(select(Run)).all():
            assert by_run[run.id] == run.attempts


@pytest.mark.parametrize("pack_size", [1, 16], ids=["a-task-per-run", "packed"])
def test_a_worker_killed_mid_run_is_re_executed_and_recorded_once(
    pg_migrated_url, local_ray, tmp_path, pack_size
):
    """kill -9 of the Ray worker process training a run (or a pack of runs): each of its
    runs' leases expires, the run goes back to the queue and a new attempt records the one
    result; the dead attempt writes nothing after it."""
    import psutil

    lease = 4
    seeds = 3 if pack_size == 1 else 4
    enqueue(pg_migrated_url, seeds=seeds, steps=1500, name="worker-kill")
    env = {
        "DATABASE_URL": pg_migrated_url,
        "RAY_ADDRESS": local_ray,
        "PLATEAU_CAPACITY": "1",
        "PLATEAU_LEASE_SECONDS": str(lease),
        "PLATEAU_POLL_SECONDS": "0.2",
        "PLATEAU_PACK_SIZE": str(pack_size),
    }
    task = "ray::execute_run" if pack_size == 1 else "ray::execute_pack"
    dispatcher = start(["dispatcher"], env, tmp_path / "dispatcher.log")

    def training_worker() -> psutil.Process | None:
        # A worker process running execute_run under *this* cluster's raylet (other Ray
        # instances on the machine have workers of the same name).
        port = local_ray.rsplit(":", 1)[-1]
        for proc in psutil.process_iter(["name", "cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if "raylet" not in (proc.info["name"] or "") or f":{port}" not in cmdline:
                continue
            for child in proc.children(recursive=True):
                if task in " ".join(child.cmdline()):
                    return child
        return None

    try:
        # One task in flight (capacity 1): one run, or a pack of all four.
        running = 1 if pack_size == 1 else seeds
        wait_for(lambda: statuses(pg_migrated_url).get("running", 0) >= running, 90, "runs")
        with session_scope(pg_migrated_url) as s:
            victims = set(s.scalars(select(Run.id).where(Run.status == "running")))
        assert len(victims) == running
        wait_for(lambda: training_worker() is not None, 30, "the worker process of the run")
        worker = training_worker()
        assert worker is not None
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        wait_for(lambda: statuses(pg_migrated_url) == {"succeeded": seeds}, 300, "recovery")
    finally:
        stop(dispatcher)
    with session_scope(pg_migrated_url) as s:
        assert s.scalar(select(func.count()).select_from(RunResult)) == seeds
        for victim in victims:
            killed = s.get(Run, victim)
            assert killed is not None and killed.attempts == 2, f"run {victim} not re-executed"
            result = s.scalars(select(RunResult).where(RunResult.run_id == victim)).one()
            assert result.attempt == 2  # recorded by the new attempt, once
        others = s.scalars(select(Run.attempts).where(Run.id.not_in(victims))).all()
        assert others == [1] * (seeds - len(victims))
