"""A real two-node Ray cluster on this machine: a head (`ray start --head`, one CPU, label
pool=head) and a worker node that joins it (`ray start --address`, one CPU, its own
resource and label pool=cpu-workers), as a team's CPU worker group joins its head.
`plateau serve` against Postgres drives a sweep through it; the runs execute on both
nodes and each is recorded once; the worker node dies mid-sweep (every process SIGKILLed,
the head untouched) and nothing is lost: its runs' leases expire and they are executed
again on the head."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from db.models import Run, RunResult
from db.session import read_scope
from tests.service.clusters import RayHead, RayNode, free_port, listening_addresses
from tests.service.test_failover import start, statuses, stop, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.ray, pytest.mark.slow]

POOL = "plateau.dev/pool"
SWEEP = {
    "name": "two-nodes",
    "task": "digits",
    "architectures": [{"name": "mlp", "depth": 2, "width": 32}],
    "optimizers": [{"name": "adam", "lr": 0.003}],
    "seeds": list(range(12)),
    "budget": {"steps": 800, "batch_size": 64, "log_every": 50, "eval_every": 400},
}


@pytest.fixture
def cluster(tmp_path) -> Iterator[tuple[RayHead, RayNode]]:
    worker_env = {"PLATEAU_DATABASE_URL_FILE": str(tmp_path / "database-url")}
    head = RayHead(num_cpus=1, worker_env=worker_env, labels={POOL: "head"})
    node = RayNode(head, num_cpus=1, labels={POOL: "cpu-workers"}, resources={"cpu_worker": 1})
    try:
        head.start()
        node.start().wait_joined()
        yield head, node
    finally:
        node.remove()
        head.remove()


def recorded(url: str) -> list[tuple[Run, RunResult]]:
    with read_scope(url) as s:
        rows = s.execute(select(Run, RunResult).join(RunResult).order_by(Run.id)).all()
        s.expunge_all()
        return [(run, result) for run, result in rows]


def pools(url: str) -> list[str]:
    return [r.environment.get("ray_node_labels", {}).get(POOL) for _, r in recorded(url)]


def test_runs_execute_on_both_nodes_and_a_dead_worker_node_loses_none(
    cluster, pg_migrated_url, tmp_path
):
    head, node = cluster
    (tmp_path / "database-url").write_text(pg_migrated_url)
    every_socket = listening_addresses(set(head.processes()) | node.processes())
    assert {address for _, address, _ in every_socket} <= {"127.0.0.1", "::ffff:127.0.0.1"}
    port = free_port()
    env = head.client_env | {
        "DATABASE_URL": pg_migrated_url,
        "PLATEAU_LEASE_SECONDS": "4",
        "PLATEAU_POLL_SECONDS": "0.2",
        "PLATEAU_PACK_SIZE": "2",  # 6 packs of 2: each node trains several in turn
        "PLATEAU_BACKOFF_MAX_SECONDS": "2",
        "PLATEAU_RAY_TIMEOUT_SECONDS": "3",
    }
    server = start(["serve", "--port", str(port)], env, tmp_path / "serve.log")
    base = f"http://127.0.0.1:{port}/api/v1"
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 60, "plateau serve")
        created = httpx.post(f"{base}/sweeps", json=SWEEP, timeout=10)
        assert created.status_code == 201, created.text
        # The worker node has finished runs of its own and holds a pack in flight (both
        # nodes busy: 4 runs running) when it dies.
        wait_for(lambda: "cpu-workers" in pools(pg_migrated_url), 120, "a run on the worker")
        wait_for(lambda: statuses(pg_migrated_url).get("running", 0) == 4, 60, "both busy")
        node.kill()
        wait_for(lambda: statuses(pg_migrated_url) == {"succeeded": 12}, 180, "the sweep's end")
        assert httpx.get(f"{base}/health", timeout=5).status_code == 200
    finally:
        stop(server)
    rows = recorded(pg_migrated_url)
    assert len(rows) == 12 and len({run.id for run, _ in rows}) == 12  # each recorded once
    assert all(result.attempt == run.attempts for run, result in rows)
    assert {result.environment["ray_node_labels"][POOL] for _, result in rows} == {
        "head",
        "cpu-workers",
    }
    assert len({result.environment["ray_node"] for _, result in rows}) == 2
    again = [(run, result) for run, result in rows if run.attempts == 2]
    assert again, "no run was in flight on the worker node when it died"
    assert {result.environment["ray_node_labels"][POOL] for _, result in again} == {"head"}
    print(
        f"runs per node: {sorted(pools(pg_migrated_url)).count('head')} on the head, "
        f"{pools(pg_migrated_url).count('cpu-workers')} on the worker; "
        f"{len(again)} executed again after the worker node died"
    )
