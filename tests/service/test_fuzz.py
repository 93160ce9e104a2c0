"""Property-based tests of the whole API: schemathesis over /openapi.json against a live
server on Postgres (where an integer overflow or a NUL byte used to be a 500), and
hypothesis over the pages, which are outside the schema. The only check is the server-error
one: no request may answer 5xx (response-schema conformance is a later issue).

The schemathesis run is the README's command with a fixed seed, and a config
(tests/service/schemathesis.toml) that sends ids of seeded sweeps, runs and a study half
the time. The server counts what it answered (its latency histogram), so the figures do
not depend on how schemathesis counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db import queue
from db.session import session_scope
from service.api.main import create_app
from service.settings import Settings
from tests.service.conftest import QUICK_SPEC
from tests.service.live import live_server
from tests.service.test_limits import STUDY

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CONFIG = Path(__file__).with_name("schemathesis.toml")
MIN_REQUESTS = 1000


def answered(method: str | None = None, route: str | None = None) -> dict[str, float]:
    """Requests this process answered so far (of one method and route template, if given),
    by status class (the latency histogram)."""
    from service.metrics import REQUEST_LATENCY

    counts: dict[str, float] = {}
    for sample in REQUEST_LATENCY.collect()[0].samples:
        labels = sample.labels
        if method is not None and (labels["method"], labels["route"]) != (method, route):
            continue
        if sample.name.endswith("_count"):
            status = sample.labels["status"]
            counts[status] = counts.get(status, 0) + sample.value
    return counts


def seed(url: str, client: Any) -> None:
    """Two sweeps (one with finished, failed and probed runs), and a study."""
    for _ in range(2):
        assert client.post("/api/v1/sweeps", json=QUICK_SPEC).status_code == 201
    with session_scope(url) as s:
        claims = queue.claim_runs(session=s, worker_id="seed", limit=8, lease_seconds=3600)
    for i, c in enumerate(claims[:6]):
        with session_scope(url) as s:
            queue.write_metrics(
                session=s,
                run_id=c.run_id,
                attempt=c.attempt,
                rows=[{"step": k, "loss": 1.0 / (k + 1), "eval_loss": 0.4} for k in range(5)],
            )
            queue.write_probe(
                session=s,
                run_id=c.run_id,
                attempt=c.attempt,
                probe={"step": 4, "trigger": "end", "lambda_max": 2.0, "data": {}},
            )
            outcome = "failed" if i % 3 == 0 else "succeeded"
            result = {} if outcome == "failed" else {"final_loss": 0.3, "steps_done": 5}
            queue.complete_run(
                session=s, run_id=c.run_id, attempt=c.attempt, outcome=outcome, result=result
            )
    assert client.post("/api/v1/studies", json=STUDY).status_code == 201


# Every request signs in as an admin: without a key, the first user the coverage phase
# creates turns auth on (PLATEAU_AUTH=auto), and every later request answered 401.
ADMIN_KEY = "pb_fuzz_" + "0123456789abcdef" * 2
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def fuzz_settings(pg_migrated_url: str) -> Settings:
    # No rate limit (a test client sends hundreds of submissions a minute), small grids.
    return Settings(
        database_url=pg_migrated_url,
        submit_rate_limit="",
        max_grid_runs=64,
        admin_key=ADMIN_KEY,
    )


# Two runs, bounded: the coverage phase (boundary and invalid values of every parameter:
# ids at 2^31, offsets at 2^63, empty and NUL strings, ...) of every operation but the two
# whose bodies are whole specs, whose coverage cases number some 4,000 (about 3 minutes
# here; the README's command runs them); then fuzzing and stateful sequences (create, read,
# cancel, retry, delete through the links schemathesis infers) of every operation, after
# the examples phase (the schema's examples: valid sweeps among them).
RUNS = {
    "coverage": ["--phases", "coverage", "--exclude-operation-id-regex", "create_(sweep|study)"],
    "fuzzing": ["--phases", "examples,fuzzing,stateful", "--max-examples", "20"],
}


def schemathesis(base: str, report: Path, options: list[str]) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "schemathesis.cli",
        "--config-file", str(CONFIG),
        "run", f"{base}/openapi.json",
        "--checks", "not_a_server_error",
        "--seed", "20261202",
        "--workers", "1",
        "--generation-database", "none",
        "--report", "json", "--report-json-path", str(report),
        "--no-color",
        "--header", f"Authorization: Bearer {ADMIN_KEY}",
        *options,
    ]  # fmt: skip
    # Run from the report's folder: schemathesis keeps a cache (.schemathesis/) where it runs.
    return subprocess.run(
        command,
        cwd=report.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )


def test_schemathesis_finds_no_server_error(fuzz_settings, tmp_path):
    app = create_app(fuzz_settings, dispatch=False)
    with TestClient(app, headers=ADMIN) as client:
        seed(fuzz_settings.database_url, client)
    before = answered()
    sweeps_before = answered("POST", "/api/v1/sweeps").get("2xx", 0)
    cases, tested = 0, set()
    with live_server(app) as base:
        for name, options in RUNS.items():
            report = tmp_path / f"{name}.json"
            out = schemathesis(base, report, options)
            summary = json.loads(report.read_text())
            print(f"schemathesis {name}: {summary['test_cases']}")
            assert summary["failures"] == [] and summary["errors"] == [], out.stdout[-4000:]
            assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
            assert summary["operations"]["errored"] == 0
            cases += summary["test_cases"]["generated"]
            tested.add(summary["operations"]["tested"])
    after = answered()
    got = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    print(f"schemathesis: {cases} test cases; the server answered {got}")
    operations = sum(
        1
        for path in app.openapi()["paths"].values()
        for method in path
        if method in ("get", "post", "put", "patch", "delete")
    )
    assert max(tested) == operations  # every operation of the schema
    assert got.get("5xx", 0) == 0
    # The schema describes bodies the server accepts: some generated sweeps were created.
    assert answered("POST", "/api/v1/sweeps").get("2xx", 0) > sweeps_before
    assert sum(got.values()) >= MIN_REQUESTS and cases >= MIN_REQUESTS


# --- the pages, outside the schema ---------------------------------------------------------

PAGES = [
    "/compare?runs=",
    "/compare?runs=,",
    "/compare?runs=abc",
    "/compare?runs=1,2,x",
    "/compare?runs=9999999999",
    "/compare?runs=-1",
    "/compare?runs=%00",
    "/compare?runs=" + ",".join(["1"] * 21),
    "/compare",
    "/runs/abc",
    "/runs/0",
    "/runs/2147483648",
    "/runs/1e3",
    "/sweeps/99999999999",
    "/sweeps/%00",
    "/studies/99999999999",
    "/studies/x",
    "/?task=%00",
    "/?since=not-a-date",
    "/?since=0001-01-01T00:00:00%2B14:00",
    "/?since=9999-12-31T23:59:59-14:00",
    "/?offset=9223372036854775808",
    "/?limit=0",
    "/?metric=nope",
    "/?sweep=-5",
    "/?owner=" + "x" * 5000,
    "/static/../db/models.py",
    "/static/%2e%2e/%2e%2e/pyproject.toml",
    "/static/nothing.js",
]


@pytest.fixture
def page_client(fuzz_settings) -> Iterator[TestClient]:
    with TestClient(create_app(fuzz_settings, dispatch=False), headers=ADMIN) as client:
        seed(fuzz_settings.database_url, client)
        yield client


def test_known_bad_page_urls_are_4xx(page_client):
    answers = {path: page_client.get(path).status_code for path in PAGES}
    assert {p: code for p, code in answers.items() if code >= 500} == {}
    assert answers["/compare?runs="] == 422 and answers["/runs/abc"] == 422
    assert answers["/sweeps/99999999999"] == 422 and answers["/static/nothing.js"] == 404
    assert page_client.get("/compare?runs=1,2").status_code == 200
    assert page_client.get("/sweeps/1").status_code == 200


ids = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(max_size=30).map(lambda t: t.replace("/", "")),
)
LEADERBOARD_FIELDS = [
    "task", "architecture", "metric", "order", "since", "sweep", "owner",
    "torch_version", "device", "offset", "limit", "unknown",
]  # fmt: skip
page_urls = st.one_of(
    st.builds(lambda i: ("/sweeps/{}", i), ids),
    st.builds(lambda i: ("/runs/{}", i), ids),
    st.builds(lambda i: ("/studies/{}", i), ids),
    st.builds(lambda r: ("/compare", {"runs": r}), st.one_of(st.text(max_size=60), ids)),
    st.builds(
        lambda q: ("/", q),
        st.dictionaries(st.sampled_from(LEADERBOARD_FIELDS), st.one_of(st.text(), ids), max_size=4),
    ),
)


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(url=page_urls)
def test_no_page_answers_5xx_whatever_its_url(page_client, url):
    path, params = url
    if isinstance(params, dict):
        r = page_client.get(path, params=params)
    else:
        r = page_client.get(path.format(quote(params, safe="")))
    assert r.status_code < 500, (url, r.status_code, r.text[:300])
