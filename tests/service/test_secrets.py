"""The database password travels nowhere but where it must: with a distinctive password, a
sweep runs end to end through the CLI (`plateau db upgrade`, `plateau run`, a dispatcher
facing an un-migrated database) and through `plateau serve` with its embedded Ray, and the
password appears in no CLI output, no service or worker log, no file of Ray's session logs,
no command line of a Ray process and no API response. (What a Ray task receives as its
arguments is checked in tests/service/test_dispatcher.py.) The embedded Ray listens on
127.0.0.1 only, and /health reports its raylet's death."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, text

from tests.conftest import ADMIN_URL, ROOT, plateau_cmd, require_postgres
from tests.service.clusters import descendants, free_port, listening_addresses, process_table
from tests.service.test_failover import start, stop, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.ray, pytest.mark.slow]

PASSWORD = f"distinctive-{uuid.uuid4().hex[:10]}-pw"
SPEC = {
    "name": "secrets",
    "task": "digits",
    "architectures": [{"name": "mlp", "depth": 1, "width": 16}],
    "optimizers": [{"name": "adam", "lr": 0.01}],
    "seeds": [0, 1],
    "budget": {"steps": 40, "batch_size": 64, "log_every": 10, "eval_every": 20},
    "target": {"loss": 0.5},
}


@pytest.fixture
def secret_databases() -> Iterator[tuple[str, str]]:
    """(a database, an empty un-migrated one), both reached as a role with PASSWORD. The
    shared server trusts 127.0.0.1, so the password is not checked, but it is in the URL."""
    require_postgres()
    tag = uuid.uuid4().hex[:8]
    role, db, empty = f"plateau_secret_{tag}", f"plateau_secret_{tag}", f"plateau_empty_{tag}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'"))
        conn.execute(text(f"CREATE DATABASE {db} OWNER {role}"))
        conn.execute(text(f"CREATE DATABASE {empty} OWNER {role}"))
    base = f"postgresql+psycopg://{role}:{PASSWORD}@127.0.0.1:5432"
    try:
        yield f"{base}/{db}", f"{base}/{empty}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            conn.execute(text(f"DROP DATABASE IF EXISTS {empty} WITH (FORCE)"))
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


def plateau(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        plateau_cmd(*args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )


def files_containing(root: Path, secret: str) -> list[str]:
    needle = secret.encode()
    return [
        str(p)
        for p in root.rglob("*")
        if p.is_file() and not p.is_socket() and needle in p.read_bytes()
    ]


def test_the_database_password_appears_nowhere(secret_databases, tmp_path):
    url, empty_url = secret_databases
    ray_dirs = [Path(tempfile.mkdtemp(prefix="plr-")) for _ in range(2)]
    seen: list[str] = []  # every output and response of this test
    shown = url.replace(PASSWORD, "***")
    try:
        # the CLI: migrate, a dispatcher facing an un-migrated database, a whole sweep
        upgraded = plateau("db", "upgrade", env={"DATABASE_URL": url})
        assert upgraded.returncode == 0, upgraded.stderr
        assert f"schema at {shown} is current" in upgraded.stdout
        refused = plateau("dispatcher", env={"DATABASE_URL": empty_url, "RAY_ADDRESS": ""})
        assert refused.returncode == 2 and "plateau db upgrade" in refused.stderr
        assert empty_url.replace(PASSWORD, "***") in refused.stderr
        spec = tmp_path / "spec.yaml"
        spec.write_text(yaml.safe_dump(SPEC))
        ran = plateau(
            "run",
            str(spec),
            env={
                "DATABASE_URL": url,
                "RAY_ADDRESS": "",
                "PLATEAU_RAY_NUM_CPUS": "2",
                "RAY_TMPDIR": str(ray_dirs[0]),
            },
        )
        assert ran.returncode == 0, ran.stderr[-3000:]
        assert shown in ran.stdout.replace("\n", "") and "{'succeeded': 2}" in ran.stdout
        seen += [p.stdout + p.stderr for p in (upgraded, refused, ran)]

        # the service: API + dispatcher + embedded Ray, a sweep through the API
        port = free_port()
        log = tmp_path / "serve.log"
        serve_env = {
            "DATABASE_URL": url,
            "RAY_ADDRESS": "",
            "PLATEAU_RAY_NUM_CPUS": "2",
            "PLATEAU_POLL_SECONDS": "0.2",
            "RAY_TMPDIR": str(ray_dirs[1]),
            # notice a dead raylet in ~2 s (the last check below)
            "RAY_health_check_period_ms": "500",
            "RAY_health_check_timeout_ms": "500",
            "RAY_health_check_failure_threshold": "3",
        }
        server = start(["serve", "--port", str(port)], serve_env, log)
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        try:

            def up() -> bool:
                assert server.poll() is None, log.read_text()[-3000:]
                try:
                    return http.get("/api/v1/ready").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(up, 90, "plateau serve")
            created = http.post("/api/v1/sweeps", json=SPEC | {"name": "through the API"})
            assert created.status_code == 201
            sweep_id = created.json()["id"]
            wait_for(
                lambda: http.get(f"/api/v1/sweeps/{sweep_id}").json()["status"] == "finished",
                120,
                "the sweep",
            )
            run_ids = [r["id"] for r in http.get(f"/api/v1/sweeps/{sweep_id}/runs").json()["data"]]
            paths = [
                "/openapi.json",
                "/api/v1/health",
                "/api/v1/ready",
                "/api/v1/sweeps",
                f"/api/v1/sweeps/{sweep_id}",
                f"/api/v1/sweeps/{sweep_id}/runs",
                "/api/v1/leaderboard",
                "/api/v1/leaderboard.csv",
                "/api/v1/studies",
                "/",
                f"/sweeps/{sweep_id}",
                f"/compare?runs={','.join(map(str, run_ids))}",
                "/api/v1/sweeps/999999",
            ]
            for run_id in run_ids:
                paths += [f"/api/v1/runs/{run_id}", f"/api/v1/runs/{run_id}/probes"]
                paths += [f"/runs/{run_id}"]
            for path in paths:
                r = http.get(path)
                assert r.status_code in (200, 404), (path, r.status_code)
                seen.append(r.text + json.dumps(dict(r.headers)))
            health = http.get("/api/v1/health").json()
            assert health["ray"]["ok"] is True and health["ray"]["mode"] == "driver"
            assert health["ray"]["nodes"] == 1 and health["ray"]["cpus"] == 2

            # The embedded Ray listens on 127.0.0.1 only, and no Ray process carries the
            # password on its command line (the workers have it in their environment).
            table = process_table()
            family = descendants({server.pid}, table)
            sockets = listening_addresses(family)
            assert len(sockets) >= 5, sockets  # uvicorn, GCS, raylet, workers, agents
            assert {ip for _, ip, _ in sockets} <= {"127.0.0.1", "::ffff:127.0.0.1"}, sockets
            assert not [table[p][1] for p in family if PASSWORD in table[p][1]]

            # /health tells the truth about Ray: kill the raylet, the API stays up and says so
            raylets = [p for p in family if "/raylet/raylet" in table[p][1]]
            assert len(raylets) == 1
            os.kill(raylets[0], 9)
            deadline = time.monotonic() + 30
            while (ray_now := http.get("/api/v1/health").json()["ray"])["ok"]:
                assert time.monotonic() < deadline, "health kept saying ray ok"
                time.sleep(0.5)
            assert "dead" in ray_now["error"] or "answer" in ray_now["error"], ray_now
            assert http.get("/api/v1/ready").status_code == 200  # the API still serves
            assert http.get(f"/api/v1/sweeps/{sweep_id}").status_code == 200
            seen.append(json.dumps(ray_now))
        finally:
            stop(server)
            http.close()
        seen.append(log.read_text())

        leaks = [i for i, text in enumerate(seen) if PASSWORD in text]
        assert leaks == [], [seen[i][:2000] for i in leaks]
        for ray_dir in ray_dirs:
            sessions = list(ray_dir.rglob("session_*"))
            assert sessions, f"no Ray session logs under {ray_dir}"
            assert files_containing(ray_dir, PASSWORD) == []
    finally:
        for ray_dir in ray_dirs:
            shutil.rmtree(ray_dir, ignore_errors=True)
