"""Ray without capacity, or without a raylet: queued runs stay queued and spend no attempt.

Topology as in a team deployment: a Ray head this module starts itself (`ray start --head`
on 127.0.0.1, one CPU, its own port, temp dir and token) and separate `plateau dispatcher`
processes pointed at it, against a fresh Postgres database. The head's workers read the
database URL from a file (never from task arguments); each test writes its URL there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import Run, RunResult
from db.session import read_scope
from service.spec import SweepSpec
from service.sweeps import submit_sweep
from tests.service.clusters import RayHead
from tests.service.test_failover import start, statuses, stop, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory) -> Iterator[RayHead]:
    url_file = tmp_path_factory.mktemp("worker") / "database-url"
    head = RayHead(num_cpus=1, worker_env={"PLATEAU_DATABASE_URL_FILE": str(url_file)})
    head.url_file = url_file  # type: ignore[attr-defined]
    try:
        yield head.start()
    finally:
        head.remove()


def use_database(head: RayHead, url: str) -> None:
    Path(head.url_file).write_text(url)  # type: ignore[attr-defined]


def enqueue(url: str, *, runs: int, steps: int, max_attempts: int) -> None:
    spec = SweepSpec.model_validate(
        {
            "name": "capacity",
            "task": "digits",
            "architectures": [{"name": "mlp", "depth": 2, "width": 32}],
            "optimizers": [{"name": "adam", "lr": 0.003}],
            "seeds": list(range(runs)),
            "budget": {"steps": steps, "batch_size": 64, "log_every": 50, "eval_every": 1000},
        }
    )
    from db.session import session_scope

    with session_scope(url) as s:
        submit_sweep(session=s, spec=spec, source="api", max_attempts=max_attempts)


def runs(url: str) -> list[Run]:
    with read_scope(url) as s:
        return list(s.scalars(select(Run).order_by(Run.id)).all())


def results(url: str) -> list[tuple[int, int]]:
    with read_scope(url) as s:
        return [tuple(r) for r in s.execute(select(RunResult.run_id, RunResult.attempt)).all()]


def dispatcher_env(head: RayHead, url: str, lease: float) -> dict[str, str]:
    return head.client_env | {
        "DATABASE_URL": url,
        "PLATEAU_LEASE_SECONDS": str(lease),
        "PLATEAU_POLL_SECONDS": "0.2",
        "PLATEAU_BACKOFF_MAX_SECONDS": "2",
        "PLATEAU_RAY_TIMEOUT_SECONDS": "3",
        # A Ray task per run: these tests are about one run waiting in Ray's queue behind
        # another (packed, the four would be one task; test_failover.py kills a pack).
        "PLATEAU_PACK_SIZE": "1",
    }


def test_two_dispatchers_on_one_cpu_burn_no_attempt(ray_head, pg_migrated_url, tmp_path):
    """Default capacity (the cluster's one CPU) each, a 2 s lease, one attempt allowed:
    before, the run waiting in Ray's queue behind the other dispatcher's outlived its lease
    and failed with its attempts spent. Now it waits unclaimed and every run succeeds on
    its first attempt."""
    use_database(ray_head, pg_migrated_url)
    enqueue(pg_migrated_url, runs=4, steps=6000, max_attempts=1)
    env = dispatcher_env(ray_head, pg_migrated_url, lease=2)
    procs = [start(["dispatcher"], env, tmp_path / f"d{i}.log") for i in range(2)]
    try:
        wait_for(lambda: not {"queued", "running"} & set(statuses(pg_migrated_url)), 180, "4 runs")
    finally:
        for p in procs:
            stop(p)
    logs = "".join((tmp_path / f"d{i}.log").read_text() for i in range(2))
    assert statuses(pg_migrated_url) == {"succeeded": 4}, logs[-3000:]
    done = runs(pg_migrated_url)
    assert [r.attempts for r in done] == [1, 1, 1, 1]
    assert sorted(a for _, a in results(pg_migrated_url)) == [1, 1, 1, 1]
    # The situation that burnt attempts before really arose: one CPU, runs one after the
    # other, each longer than the lease, so the second dispatcher's run waited in Ray's
    # queue (unstarted, unleased) for longer than a lease.
    spans = sorted((r.started_at, r.finished_at) for r in done)
    print("run seconds:", [round((b - a).total_seconds(), 1) for a, b in spans])
    assert all(a2 >= b1 for (_, b1), (a2, _) in zip(spans, spans[1:], strict=False))
    assert all((b - a).total_seconds() > 2 for a, b in spans)
    assert "Traceback" not in logs, logs[-3000:]


def test_a_killed_raylet_fails_no_queued_run_and_they_finish_once_ray_is_back(
    ray_head, pg_migrated_url, tmp_path
):
    """Kill the head's raylet with one run started and three queued: no run fails (the
    started one is requeued when its lease runs out, the queued ones stay untouched with
    no attempt spent) while Ray is gone; restart Ray: the dispatcher rejoins by itself and
    every run finishes, each with one result."""
    use_database(ray_head, pg_migrated_url)
    enqueue(pg_migrated_url, runs=4, steps=3000, max_attempts=3)
    log = tmp_path / "dispatcher.log"
    proc = start(["dispatcher"], dispatcher_env(ray_head, pg_migrated_url, lease=4), log)
    try:
        wait_for(lambda: statuses(pg_migrated_url).get("running", 0) == 1, 90, "a started run")
        ray_head.kill_raylet()
        killed_at = time.monotonic()
        # Ray is gone for 15 s: longer than three leases, time enough to burn attempts.
        while time.monotonic() - killed_at < 15:
            now = runs(pg_migrated_url)
            assert not [r.id for r in now if r.status == "failed"], [r.error for r in now]
            time.sleep(1)
        during = runs(pg_migrated_url)
        assert [r.status for r in during].count("queued") >= 3, [r.status for r in during]
        assert sum(r.attempts for r in during) <= 1 + sum(r.status == "succeeded" for r in during)
        assert "restarting this dispatcher" in log.read_text()

        ray_head.kill()
        ray_head.start()
        wait_for(lambda: statuses(pg_migrated_url) == {"succeeded": 4}, 180, "recovery")
    finally:
        stop(proc)
    text = log.read_text()
    after = runs(pg_migrated_url)
    assert all(r.attempts <= 2 for r in after), [r.attempts for r in after]
    assert sorted(rid for rid, _ in results(pg_migrated_url)) == [r.id for r in after]
    assert dict(results(pg_migrated_url)) == {r.id: r.attempts for r in after}
    assert text.count("Traceback") == 0, text[-3000:]
