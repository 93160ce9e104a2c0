"""Reads never wait for writers (SQLite), and a database that cannot be reached is a 503
with Retry-After on every endpoint and page, never a 500."""

from __future__ import annotations

import logging
import socket
import sqlite3
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from db.migrate import upgrade
from service.api.main import create_app
from service.settings import Settings
from tests.service.conftest import QUICK_SPEC, LiveServer

# Every route that reads or writes the database, as a client calls it.
REQUESTS = [
    ("GET", "/api/v1/sweeps"),
    ("GET", "/api/v1/sweeps/1"),
    ("GET", "/api/v1/sweeps/1/runs"),
    ("GET", "/api/v1/runs/1"),
    ("GET", "/api/v1/runs/1/probes"),
    ("GET", "/api/v1/studies"),
    ("GET", "/api/v1/studies/1"),
    ("GET", "/api/v1/leaderboard"),
    ("GET", "/api/v1/leaderboard.csv"),
    ("POST", "/api/v1/sweeps"),
    ("POST", "/api/v1/sweeps/1/cancel"),
    ("POST", "/api/v1/studies"),
    ("POST", "/api/v1/studies/1/cancel"),
    ("GET", "/"),
    ("GET", "/sweeps/1"),
    ("GET", "/runs/1"),
    ("GET", "/compare?runs=1,2"),
    ("GET", "/studies/1"),
]
STUDY = {
    "name": "s",
    "task": "digits",
    "architecture": {"name": "mlp", "depth": 1, "width": 8},
    "fixed": {"optimizer": {"name": "sgd", "lr": 0.1}, "budget": {"steps": 10}},
    "search_space": {"init": ["default", "orthogonal"]},
    "n_trials": 2,
}


def body_of(path: str) -> dict | None:
    if path == "/api/v1/sweeps":
        return QUICK_SPEC
    if path == "/api/v1/studies":
        return STUDY
    return None


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_database_is_503_with_retry_after_everywhere(caplog):
    """Postgres refusing connections (nothing listens on the port): every route answers
    503 with Retry-After, JSON on the API and HTML on the pages, with one log line each;
    /health still answers 200 (degraded) and /ready 503."""
    url = f"postgresql+psycopg://plateau:pw@127.0.0.1:{closed_port()}/plateau"
    app = create_app(Settings(database_url=url, retry_after_seconds=7), dispatch=False)
    client = TestClient(app)  # no `with`: the start-up schema check would need the database
    caplog.set_level(logging.WARNING)
    for method, path in REQUESTS:
        r = client.request(method, path, json=body_of(path))
        assert r.status_code == 503, (method, path, r.status_code, r.text[:300])
        assert r.headers["retry-after"] == "7", path
        if path.startswith("/api/"):
            assert "unreachable" in r.json()["detail"]
        else:
            assert r.headers["content-type"].startswith("text/html")
    assert "Traceback" not in caplog.text
    assert sum("503, database unavailable" in m for m in caplog.messages) == len(REQUESTS)
    health = client.get("/api/v1/health")
    assert health.status_code == 200 and health.json()["database"]["ok"] is False
    ready = client.get("/api/v1/ready")
    assert ready.status_code == 503 and ready.headers["retry-after"] == "7"


def test_a_database_error_that_is_not_an_outage_is_a_500_saying_nothing_was_saved(
    sqlite_url, caplog
):
    """A table missing (a broken deployment, not an outage): 500 with a JSON message, the
    traceback in the log, not a 503 that would invite retrying forever."""
    client = TestClient(create_app(Settings(database_url=sqlite_url), dispatch=False))
    caplog.set_level(logging.ERROR)
    r = client.get("/api/v1/sweeps")
    assert r.status_code == 500
    assert "rolled back" in r.json()["detail"] and "OperationalError" in r.json()["detail"]
    assert "no such table" in caplog.text


def test_sqlite_reads_answer_while_a_writer_holds_the_lock(sqlite_url, tmp_path):
    """A worker's long write transaction (an open BEGIN IMMEDIATE) holds SQLite's write lock:
    the API's reads and pages still answer at once over HTTP (WAL, deferred read-only
    transactions); a submission waits for the lock and then commits."""
    upgrade(sqlite_url)
    settings = Settings(database_url=sqlite_url)
    with LiveServer(create_app(settings, dispatch=False)) as server:
        http = httpx.Client(base_url=server.url, timeout=10)
        sweep_id = http.post("/api/v1/sweeps", json=QUICK_SPEC).json()["id"]
        run_id = http.get(f"/api/v1/sweeps/{sweep_id}/runs").json()["data"][0]["id"]
        writer = sqlite3.connect(tmp_path / "plateau.db", isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE run SET error = 'held' WHERE id = ?", (run_id,))
        try:
            for path in (
                "/api/v1/sweeps",
                f"/api/v1/sweeps/{sweep_id}",
                f"/api/v1/sweeps/{sweep_id}/runs",
                f"/api/v1/runs/{run_id}",
                "/api/v1/leaderboard",
                "/",
                f"/sweeps/{sweep_id}",
                f"/runs/{run_id}",
            ):
                started = time.monotonic()
                r = http.get(path)
                took = time.monotonic() - started
                assert r.status_code == 200, (path, r.text[:200])
                assert took < 1.0, f"{path} waited {took:.1f} s for the writer"
            assert http.get(f"/api/v1/runs/{run_id}").json()["error"] is None  # uncommitted
        finally:
            writer.execute("COMMIT")
        assert http.post("/api/v1/sweeps", json=QUICK_SPEC).status_code == 201
        assert http.get(f"/api/v1/runs/{run_id}").json()["error"] == "held"


@pytest.mark.postgres
def test_a_dropped_database_mid_request_is_503_not_500(pg_migrated_url):
    """The database disappears while the app runs (connections in the pool die with it)."""
    from sqlalchemy import create_engine, text

    from db.session import dispose_engines
    from tests.conftest import ADMIN_URL

    with TestClient(create_app(Settings(database_url=pg_migrated_url), dispatch=False)) as c:
        assert c.get("/api/v1/sweeps").status_code == 200
        admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            name = pg_migrated_url.rsplit("/", 1)[1]
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
        for method, path in REQUESTS:
            r = c.request(method, path, json=body_of(path))
            assert r.status_code == 503, (method, path, r.status_code, r.text[:300])
        dispose_engines()


def test_health_without_a_ray_driver_says_it_only_knows_the_port(monkeypatch, sqlite_url):
    """An API replica is no Ray driver: it reports whether the GCS port answers, says that
    this is all it knows, and reports a closed port as not ok."""
    from service.api.routes import health

    monkeypatch.setattr(health, "is_driver", lambda: False)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        settings = Settings(database_url=sqlite_url, ray_address=address)
        ray = health._ray_status(settings)
        assert ray["ok"] is True and ray["mode"] == "port" and "not a Ray driver" in ray["note"]
    closed = Settings(database_url=sqlite_url, ray_address=f"127.0.0.1:{closed_port()}")
    assert health._ray_status(closed)["ok"] is False
    nothing = health._ray_status(Settings(database_url=sqlite_url))
    assert nothing["ok"] is False and "no RAY_ADDRESS" in nothing["error"]
