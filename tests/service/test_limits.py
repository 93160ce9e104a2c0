"""The service's limits through the API, on SQLite and Postgres: rate limits (429 with
Retry-After, shared by replicas through the database), request size (413) and JSON depth,
cross-site requests (403), per-run cost and per-team queued runs (422 naming the limit),
and inputs that used to answer 500 (ids and offsets past INTEGER, NUL bytes, surrogates)."""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from db.session import session_scope
from service.api.main import create_app
from service.settings import Settings
from tests.service.conftest import QUICK_SPEC
from tests.service.live import live_server
from tests.service.test_api import count_rows

STUDY = {
    "name": "s",
    "task": "digits",
    "architecture": {"name": "mlp", "depth": 1, "width": 8},
    "fixed": {"optimizer": {"name": "sgd", "lr": 0.1}, "budget": {"steps": 20}},
    "search_space": {"init": ["default", "orthogonal"]},
    "n_trials": 4,
    "parallelism": 2,
}


def settings_for(url: str, **overrides: Any) -> Settings:
    return Settings(database_url=url, lease_seconds=10, poll_seconds=0.2, **overrides)


@contextmanager
def client_for(url: str, client: tuple[str, int] = ("testclient", 50000), **overrides: Any):
    app = create_app(settings_for(url, **overrides), dispatch=False)
    with TestClient(app, client=client) as c:
        yield c


@pytest.fixture
def make_client(migrated_url: str):
    return lambda **overrides: client_for(migrated_url, **overrides)


@pytest.fixture
def sqlite_client(sqlite_url: str):
    """For what no database decides (headers, guards): SQLite only."""
    from db.migrate import upgrade

    upgrade(sqlite_url)
    return lambda **overrides: client_for(sqlite_url, **overrides)


def spec(**changes: Any) -> dict[str, Any]:
    return copy.deepcopy(QUICK_SPEC) | changes


JSON = {"content-type": "application/json"}


# --- rate limits -----------------------------------------------------------------------


def test_submissions_past_the_rate_answer_429_with_retry_after(make_client, migrated_url):
    with make_client(submit_rate_limit="3/minute") as client:
        for _ in range(3):
            assert client.post("/api/v1/sweeps", json=QUICK_SPEC).status_code == 201
        refused = client.post("/api/v1/sweeps", json=QUICK_SPEC)
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        detail = refused.json()["detail"]
        assert "addr:testclient" in detail and "3 per 1 minute" in detail
        assert "PLATEAU_SUBMIT_RATE_LIMIT" in detail
        assert count_rows(migrated_url) == (3, 24)  # the refused one wrote nothing
        # a study and a retry are submissions too; reads are not limited
        assert client.post("/api/v1/studies", json=STUDY).status_code == 429
        assert client.post("/api/v1/sweeps/1/retry").status_code == 429
        for _ in range(10):
            assert client.get("/api/v1/sweeps").status_code == 200
    with make_client(submit_rate_limit="3/minute", client=("10.0.0.7", 4000)) as other:
        assert other.post("/api/v1/sweeps", json=QUICK_SPEC).status_code == 201  # its own count


@pytest.mark.slow
def test_the_window_reopens_after_retry_after(make_client):
    with make_client(submit_rate_limit="2/2 seconds") as client:
        assert [client.post("/api/v1/sweeps", json=QUICK_SPEC).status_code for _ in range(2)] == [
            201,
            201,
        ]
        refused = client.post("/api/v1/sweeps", json=QUICK_SPEC)
        assert refused.status_code == 429
        wait = int(refused.headers["retry-after"])
        assert 1 <= wait <= 2
        time.sleep(wait + 0.1)
        assert client.post("/api/v1/sweeps", json=QUICK_SPEC).status_code == 201


def test_replicas_count_together_through_the_database(migrated_url):
    """Two API replicas of one database: the third submission through either is the last."""
    with (
        client_for(migrated_url, submit_rate_limit="3/minute") as a,
        client_for(migrated_url, submit_rate_limit="3/minute") as b,
    ):
        assert a.post("/api/v1/sweeps", json=QUICK_SPEC).status_code == 201
        assert a.post("/api/v1/sweeps", json=QUICK_SPEC).status_code == 201
        assert b.post("/api/v1/sweeps", json=QUICK_SPEC).status_code == 201
        assert b.post("/api/v1/sweeps", json=QUICK_SPEC).status_code == 429
        assert a.post("/api/v1/sweeps", json=QUICK_SPEC).status_code == 429


def test_in_memory_counters_are_per_replica(migrated_url):
    """memory:// counts per process: N replicas admit N times the limit (README's arithmetic)."""
    options = {"submit_rate_limit": "2/minute", "rate_limit_storage": "memory://"}
    with client_for(migrated_url, **options) as a, client_for(migrated_url, **options) as b:
        codes = [c.post("/api/v1/sweeps", json=QUICK_SPEC).status_code for c in (a, a, b, b)]
        assert codes == [201] * 4
        assert a.post("/api/v1/sweeps", json=QUICK_SPEC).status_code == 429
        assert b.post("/api/v1/sweeps", json=QUICK_SPEC).status_code == 429


def test_no_rate_limit_when_the_setting_is_empty(sqlite_client):
    with sqlite_client(submit_rate_limit="") as client:
        for _ in range(5):
            assert client.post("/api/v1/sweeps", json=QUICK_SPEC).status_code == 201


def test_a_long_identity_is_counted_under_its_hash():
    from limits import parse_many
    from limits.storage import MemoryStorage
    from limits.strategies import FixedWindowRateLimiter

    from service.ratelimit import SubmissionLimiter

    storage = MemoryStorage()
    limiter = SubmissionLimiter(parse_many("2/minute"), FixedWindowRateLimiter(storage))
    who = "key:" + "k" * 200
    assert [limiter.check(who) for _ in range(2)] == [None, None]
    wait = limiter.check(who)
    assert wait is not None and 1 <= wait <= 60
    assert storage.storage and all(len(key) < 120 for key in storage.storage)


def test_bad_rate_limit_settings_fail_at_start(migrated_url):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not in the `limits` notation"):
        settings_for(migrated_url, submit_rate_limit="sixty a minute")
    with pytest.raises(ValueError, match="PLATEAU_RATE_LIMIT_STORAGE 'bogus://x' cannot be used"):
        create_app(settings_for(migrated_url, rate_limit_storage="bogus://x"), dispatch=False)
    with pytest.raises(ValueError, match="is asynchronous"):
        create_app(settings_for(migrated_url, rate_limit_storage="async+memory://"), dispatch=False)


def test_the_database_storage_keeps_fixed_windows(migrated_url):
    import datetime as dt

    from db import ratelimit
    from db.models import utcnow
    from service.ratelimit import DatabaseStorage

    store = DatabaseStorage(migrated_url)
    assert store.check() and store.get("k") == 0 and store.get_expiry("k") <= time.time() + 1
    assert [store.incr("k", 60) for _ in range(3)] == [1, 2, 3]
    assert store.incr("k", 60, amount=4) == 7 and store.get("k") == 7
    assert time.time() + 55 < store.get_expiry("k") <= time.time() + 60
    store.clear("k")
    assert store.get("k") == 0
    # an expired window restarts at the hit's amount, with a new end
    now = utcnow()
    with session_scope(migrated_url) as s:
        assert ratelimit.hit(session=s, key="w", amount=5, expiry_seconds=10, now=now)[0] == 5
        later = now + dt.timedelta(seconds=11)
        count, end = ratelimit.hit(session=s, key="w", amount=1, expiry_seconds=10, now=later)
        assert count == 1 and end == later + dt.timedelta(seconds=10)
        assert ratelimit.current(session=s, key="w", now=end) is None  # ended at its end
        ratelimit.hit(session=s, key="v", amount=1, expiry_seconds=1, now=now)
        assert ratelimit.purge_expired(session=s, now=later) == 1  # v ended; w is live
    assert store.reset() == 1
    assert not DatabaseStorage("sqlite:////nonexistent/dir/x.db").check()


@pytest.mark.postgres
def test_concurrent_hits_from_many_connections_are_all_counted(pg_migrated_url):
    from service.ratelimit import DatabaseStorage

    store = DatabaseStorage(pg_migrated_url)
    seen: list[int] = []
    start = threading.Barrier(8)

    def hammer() -> None:
        start.wait()
        for _ in range(25):
            seen.append(store.incr("shared", 60))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == list(range(1, 201)) and store.get("shared") == 200


# --- request size and JSON depth -------------------------------------------------------


def test_a_body_above_the_limit_answers_413_without_echoing_it(make_client, migrated_url):
    with make_client(max_body_bytes=2048) as client:
        padded = json.dumps(spec(name="x" * 3000)).encode()
        r = client.post("/api/v1/sweeps", content=padded, headers=JSON)
        assert r.status_code == 413 and "PLATEAU_MAX_BODY_BYTES" in r.json()["detail"]
        assert len(r.content) < 300 and b"xxxx" not in r.content
        fits = json.dumps(spec(name="y" * 100)).encode()
        assert len(fits) <= 2048
        assert client.post("/api/v1/sweeps", content=fits, headers=JSON).status_code == 201
    assert count_rows(migrated_url)[0] == 1


def test_a_long_invalid_field_is_not_echoed_whole(sqlite_client):
    with sqlite_client() as client:
        r = client.post("/api/v1/sweeps", json=spec(name="z" * 200_000))
        assert r.status_code == 422 and len(r.content) < 1000
        (error,) = r.json()["detail"]
        assert error["loc"] == ["body", "name"] and error["input"].endswith("(200,000 characters)")
        r = client.post("/api/v1/sweeps", json=spec(optimizers={"lr": "9" * 1000}))
        (error,) = r.json()["detail"]
        assert error["input"].startswith('{"lr": "999') and error["input"].endswith(
            "(1,010 characters)"
        )
        small = client.post("/api/v1/sweeps", json=spec(optimizers={"lr": 1})).json()["detail"]
        assert small[0]["input"] == {"lr": 1}  # short inputs are echoed as they were


def test_json_nested_too_deep_answers_422_before_parsing(make_client, migrated_url):
    def nested(depth: int) -> bytes:
        return b'{"name": "d", "task": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"

    with make_client(max_json_depth=32) as client:
        deep = client.post("/api/v1/sweeps", content=nested(33), headers=JSON)
        assert deep.status_code == 422
        assert deep.json()["detail"][0]["type"] == "json_too_deep"
        assert "33 levels" in deep.json()["detail"][0]["msg"]
        at_limit = client.post("/api/v1/sweeps", content=nested(32), headers=JSON)
        assert at_limit.status_code == 422 and "json_too_deep" not in at_limit.text
        # Python's parser recursed through this one and answered 500
        huge = client.post("/api/v1/sweeps", content=b"[" * 200_000, headers=JSON)
        assert huge.status_code == 422 and huge.json()["detail"][0]["type"] == "json_too_deep"
        # brackets inside strings are text, not nesting
        bracketed = spec(name="[" * 60 + '\\"{' * 40)
        assert client.post("/api/v1/sweeps", json=bracketed).status_code == 201
        # a body FastAPI does not parse as JSON is not measured as JSON
        for other in ({"content-type": "text/plain"}, {}):
            plain = client.post("/api/v1/sweeps", content=b"[" * 100, headers=other)
            assert plain.status_code == 422 and "json_too_deep" not in plain.text
        problem = {"content-type": "application/problem+json; charset=utf-8"}
        assert client.post("/api/v1/sweeps", content=nested(40), headers=problem).status_code == 422
    assert count_rows(migrated_url)[0] == 1


def test_chunked_bodies_are_counted_as_they_stream(sqlite_url):
    from db.migrate import upgrade

    upgrade(sqlite_url)
    app = create_app(settings_for(sqlite_url, max_body_bytes=4096), dispatch=False)
    body = json.dumps(spec()).encode()

    def chunks(data: bytes, size: int = 500) -> Iterator[bytes]:
        for i in range(0, len(data), size):
            yield data[i : i + size]

    with live_server(app) as base, httpx.Client(base_url=base, timeout=10) as http:
        ok = http.post("/api/v1/sweeps", content=chunks(body), headers=JSON)  # chunked
        assert ok.status_code == 201, ok.text
        # the last chunk crosses the limit: the client has sent all when the 413 comes
        over = [b"[" + b"1," * 1999 + b"1]", b" " * 200]
        big = http.post("/api/v1/sweeps", content=iter(over), headers=JSON)
        assert big.status_code == 413 and "more than 4,096 bytes" in big.json()["detail"]
        # a 50 MB upload is answered from its headers, before a byte of it is sent
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(
                b"POST /api/v1/sweeps HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                b"content-length: 50000000\r\n\r\n"
            )
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413") and len(answer) < 600
    assert count_rows(sqlite_url)[0] == 1


def run_asgi(app: Any, headers: list[tuple[bytes, bytes]], messages: list[dict]) -> list[dict]:
    import asyncio

    sent: list[dict] = []
    incoming = iter(messages)

    async def receive() -> dict:
        return next(incoming)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "scheme": "http"}
    asyncio.run(app(scope, receive, send))
    return sent


def test_the_body_guard_refuses_a_bad_length_and_stops_at_a_disconnect():
    from service.api.guards import BodyGuard

    called: list[bytes] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        called.append((await receive())["body"])

    guard = BodyGuard(inner, max_bytes=100, max_depth=4)
    sent = run_asgi(guard, [(b"content-length", b"12abc")], [])
    assert sent[0]["status"] == 400 and b"invalid Content-Length" in sent[1]["body"]
    chunk = {"type": "http.request", "body": b"[1,", "more_body": True}
    assert run_asgi(guard, [], [chunk, {"type": "http.disconnect"}]) == [] and not called
    last = {"type": "http.request", "body": b"2]", "more_body": False}
    assert run_asgi(guard, [], [chunk, last]) == [] and called == [b"[1,2]"]


def test_websocket_and_lifespan_scopes_pass_through():
    import asyncio

    from service.api.guards import BodyGuard, SameOriginGuard
    from service.metrics import LatencyTimer

    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    for guard in (BodyGuard(inner, 10, 2), SameOriginGuard(inner, []), LatencyTimer(inner)):
        asyncio.run(guard({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    assert seen == ["lifespan"] * 3


def test_json_depth_is_linear_and_skips_strings():
    from service.api.guards import json_depth

    assert json_depth(b"") == 0 and json_depth(b"3") == 0 and json_depth(b"]]") < 0
    assert json_depth(b'{"a": [1, {"b": "[[[["}]}') == 3
    assert json_depth(b'["\\"", [[]]]') == 3  # an escaped quote does not end the string
    assert json_depth(b'[["open') == 2  # an unterminated string runs to the end
    started = time.perf_counter()
    json_depth(b'"' + b'\\"' * 400_000)  # quadratic for a pattern that must find the close
    json_depth(b"[" * 1_000_000)
    assert time.perf_counter() - started < 2


# --- text the database cannot hold, numbers it cannot store ---------------------------


@pytest.mark.parametrize(
    "path,body,loc",
    [
        ("/api/v1/sweeps", spec(name="a\x00b"), ["body", "name"]),
        ("/api/v1/sweeps", spec(owner="\x00"), ["body", "owner"]),
        ("/api/v1/sweeps", spec(name="line\nbreak"), ["body", "name"]),
        ("/api/v1/studies", STUDY | {"name": "nul\x00"}, ["body", "name"]),
        ("/api/v1/studies", STUDY | {"owner": "\x7f"}, ["body", "owner"]),
    ],
)
def test_control_characters_in_names_are_422(make_client, migrated_url, path, body, loc):
    with make_client() as client:
        r = client.post(path, json=body)
        assert r.status_code == 422, r.text
        assert any(e["loc"] == loc and "control characters" in e["msg"] for e in r.json()["detail"])
    assert count_rows(migrated_url) == (0, 0)


def test_lone_surrogates_and_non_finite_numbers_are_422(make_client, migrated_url):
    with make_client() as client:
        surrogate = json.dumps(spec()).replace('"tiny"', '"\\ud800"').encode()
        r = client.post("/api/v1/sweeps", content=surrogate, headers=JSON)
        assert r.status_code == 422 and r.content.isascii()
        assert r.json()["detail"][0]["loc"] == ["body", "name"]
        infinite = json.dumps(spec()).replace('"lr": 0.1', '"lr": Infinity').encode()
        r = client.post("/api/v1/sweeps", content=infinite, headers=JSON)
        assert r.status_code == 422 and "finite number" in r.text
        nan = json.dumps(STUDY).replace("0.1", "NaN")
        r = client.post("/api/v1/studies", content=nan, headers=JSON)
        assert r.status_code == 422 and "finite number" in r.text
    assert count_rows(migrated_url) == (0, 0)


OUT_OF_RANGE = [
    ("GET", "/api/v1/sweeps/2147483648"),
    ("GET", "/api/v1/sweeps/0"),
    ("GET", "/api/v1/sweeps/-1"),
    ("GET", "/api/v1/sweeps/99999999999999999999999"),
    ("GET", "/api/v1/sweeps?offset=9223372036854775808"),
    ("GET", "/api/v1/sweeps/1/runs?offset=2147483648"),
    ("GET", "/api/v1/sweeps/1/runs?status=%00"),
    ("GET", "/api/v1/sweeps/1/runs?status=done"),
    ("POST", "/api/v1/sweeps/4294967296/cancel"),
    ("POST", "/api/v1/sweeps/4294967296/retry"),
    ("DELETE", "/api/v1/sweeps/4294967296"),
    ("GET", "/api/v1/runs/2147483648"),
    ("GET", "/api/v1/runs/2147483648/probes"),
    ("GET", "/api/v1/studies/9999999999"),
    ("POST", "/api/v1/studies/9999999999/cancel"),
    ("GET", "/api/v1/studies?offset=9223372036854775808"),
    ("GET", "/api/v1/leaderboard?sweep=9999999999"),
    ("GET", "/api/v1/leaderboard?offset=9223372036854775808"),
    ("GET", "/api/v1/leaderboard?owner=%00"),
    ("GET", "/api/v1/leaderboard.csv?task=dig%00its"),
    ("GET", "/api/v1/leaderboard?device=%1b%5b31m"),
    ("GET", "/sweeps/99999999999"),
    ("GET", "/runs/99999999999"),
    ("GET", "/runs/abc"),
    ("GET", "/studies/99999999999"),
    ("GET", "/compare?runs="),
    ("GET", "/compare?runs=,,"),
    ("GET", "/compare?runs=9999999999"),
    ("GET", "/compare?runs=1,x"),
    ("GET", "/compare?runs=%D9%A1"),  # an Arabic-Indic one: a digit, not an id
    ("GET", "/compare?runs=" + "9" * 5000),
    ("GET", "/?owner=%00"),
    ("GET", "/?sweep=99999999999"),
    ("GET", "/?offset=9223372036854775808"),
]


def test_out_of_range_ids_offsets_and_nul_bytes_are_4xx(make_client):
    with make_client() as client:
        client.post("/api/v1/sweeps", json=QUICK_SPEC)
        answers = {(m, p): client.request(m, p).status_code for m, p in OUT_OF_RANGE}
    assert {k: v for k, v in answers.items() if v not in (404, 422)} == {}


# --- requests from other sites ---------------------------------------------------------

CROSS_SITE = [
    # (headers, refused?)
    ({"origin": "https://evil.example"}, True),
    ({"origin": "null"}, True),
    ({"origin": "http://testserver.evil.example"}, True),
    ({"origin": "http://testserver:8080"}, True),  # another port is another origin
    ({"origin": "not a url"}, True),
    ({"origin": "http://[::1"}, True),  # not even parseable
    ({"sec-fetch-site": "cross-site"}, True),
    ({"sec-fetch-site": "same-site", "origin": "http://testserver"}, True),
    ({"referer": "https://evil.example/page"}, True),
    ({"origin": "https://evil.example", "sec-fetch-site": "same-origin"}, True),
    ({"origin": "http://testserver", "sec-fetch-site": "same-origin"}, False),
    ({"origin": "http://TESTSERVER:80"}, False),
    ({"sec-fetch-site": "same-origin"}, False),
    ({"sec-fetch-site": "none"}, False),  # the user's own navigation
    ({"sec-fetch-site": "none", "referer": "https://evil.example/"}, False),
    ({"referer": "http://testserver/sweeps/1"}, False),
    ({"referer": "https://ui.example.com/x"}, False),  # a trusted origin
    ({"origin": "https://ui.example.com"}, False),
    ({"origin": "https://ui.example.com", "sec-fetch-site": "cross-site"}, False),
    ({}, False),  # curl, the CLI: no browser, no site
]


@pytest.mark.parametrize("headers,refused", CROSS_SITE, ids=[str(h) for h, _ in CROSS_SITE])
def test_a_request_from_another_site_changes_nothing(sqlite_client, headers, refused):
    with sqlite_client(trusted_origins="https://ui.example.com") as client:
        sweep = client.post("/api/v1/sweeps", json=QUICK_SPEC).json()["id"]
        # a cross-site form post: no body, the browser's form content type
        form = {"content-type": "application/x-www-form-urlencoded"} | headers
        r = client.post(f"/api/v1/sweeps/{sweep}/cancel", headers=form)
        status = client.get(f"/api/v1/sweeps/{sweep}").json()["status"]
        if refused:
            assert r.status_code == 403, r.text
            assert "cross-site request refused" in r.json()["detail"]
            assert status == "queued"
            assert client.delete(f"/api/v1/sweeps/{sweep}", headers=headers).status_code == 403
            created = client.post("/api/v1/sweeps", json=QUICK_SPEC, headers=headers)
            assert created.status_code == 403
            assert client.get("/api/v1/sweeps").json()["count"] == 1
        else:
            assert r.status_code == 200, r.text
            assert status == "cancelled"
        # reads are not state-changing, whoever asks
        assert client.get(f"/api/v1/sweeps/{sweep}", headers=headers).status_code == 200


def test_behind_a_tls_proxy_the_origin_matches_the_host_without_a_port(sqlite_client):
    with sqlite_client() as client:
        headers = {"host": "plateau.example.com", "origin": "https://plateau.example.com"}
        assert client.post("/api/v1/sweeps", json=QUICK_SPEC, headers=headers).status_code == 201
        with_port = {"host": "plateau.example.com:8443", "origin": "https://plateau.example.com"}
        assert client.post("/api/v1/sweeps", json=QUICK_SPEC, headers=with_port).status_code == 403
        ipv6 = {"host": "[::1]:8000", "origin": "http://[::1]:8000"}
        assert client.post("/api/v1/sweeps", json=QUICK_SPEC, headers=ipv6).status_code == 201


def test_trusted_origins_must_be_origins(migrated_url):
    from pydantic import ValidationError

    for bad in ("ui.example.com", "ftp://x", "https://x/path", "https://"):
        with pytest.raises(ValidationError, match="is not scheme://host"):
            settings_for(migrated_url, trusted_origins=bad)
    ok = settings_for(migrated_url, trusted_origins=" https://A.example , http://b:81 ,")
    assert ok.trusted_origin_list() == ["https://a.example", "http://b:81"]


# --- cost of one run, runs of one team --------------------------------------------------

COSTLY = [
    # (what, the submission, settings, location, fragment of the message)
    (
        "the issue's 64x8192 MLP",
        spec(
            architectures=[{"name": "mlp", "depth": 64, "width": 8192}],
            budget={"steps": 1_000_000, "batch_size": 128},
        ),
        {},
        ["body", "architectures", 0],
        "has 4,228,988,938 parameters, above the limit of 100,000,000 (PLATEAU_MAX_RUN_PARAMETERS)",
    ),
    (
        "a probe every step",
        spec(budget={"steps": 1000, "batch_size": 8}, probes={"every": 1}),
        {},
        ["body", "probes"],
        "up to 999 probes per run, above the limit of 100 (PLATEAU_MAX_PROBES_PER_RUN)",
    ),
    (
        "steps x batch x parameters",
        spec(
            architectures=[{"name": "mlp", "depth": 1, "width": 8}, {"name": "mlp", "width": 512}],
            budget={"steps": 100_000, "batch_size": 4096},
        ),
        {"max_run_cost": 1e12},
        ["body", "architectures", 1],
        "(PLATEAU_MAX_RUN_COST)",
    ),
    (
        "the data",
        spec(
            task={"name": "teacher_student", "input_dim": 4096, "n_train": 200_000},
            architectures=[{"name": "mlp", "depth": 1, "width": 4}],
        ),
        {},
        ["body", "task"],
        "holds 821,448,500 numbers (inputs and targets), above the limit of 100,000,000",
    ),
    (
        "a study's probes",
        STUDY | {"fixed": STUDY["fixed"] | {"probes": {"every": 1}}},
        {},
        ["body", "fixed", "probes"],
        "19 probes per run",
    ),
    (
        "a study's architecture",
        STUDY | {"architecture": {"name": "mlp", "depth": 4, "width": 4096}},
        {"max_run_parameters": 1_000_000},
        ["body", "architecture"],
        "architecture (mlp, normalization none) has 50,651,146 parameters",
    ),
]


@pytest.mark.parametrize("what,body,options,loc,message", COSTLY, ids=[c[0] for c in COSTLY])
def test_a_run_past_a_cost_limit_is_422_naming_it(
    make_client, migrated_url, what, body, options, loc, message
):
    options = {"max_probes_per_run": 18} if what == "a study's probes" else options
    with make_client(**options) as client:
        path = "/api/v1/studies" if "search_space" in body else "/api/v1/sweeps"
        r = client.post(path, json=body)
        assert r.status_code == 422, r.text
        (error,) = r.json()["detail"]
        assert error["type"] == "limit_exceeded" and error["loc"] == loc
        assert message in error["msg"], error["msg"]
    assert count_rows(migrated_url) == (0, 0)


def test_a_team_past_its_unfinished_runs_is_422_naming_the_limit(make_client, migrated_url):
    with make_client(max_queued_runs=10) as client:
        first = client.post("/api/v1/sweeps", json=QUICK_SPEC)  # 8 runs
        assert first.status_code == 201
        refused = client.post("/api/v1/sweeps", json=QUICK_SPEC)
        assert refused.status_code == 422
        (error,) = refused.json()["detail"]
        assert error["loc"] == ["body"] and "PLATEAU_MAX_QUEUED_RUNS" in error["msg"]
        assert "has 8 unfinished (queued or running) runs and this adds 8" in error["msg"]
        study = client.post("/api/v1/studies", json=STUDY | {"parallelism": 3})
        assert study.status_code == 422 and "this adds 3" in study.text
        assert client.post("/api/v1/studies", json=STUDY).status_code == 201  # 2 in flight
        client.post(f"/api/v1/sweeps/{first.json()['id']}/cancel")  # finished runs do not count
        assert client.post("/api/v1/sweeps", json=QUICK_SPEC).status_code == 201
    assert count_rows(migrated_url)[1] == 16


@pytest.mark.postgres
def test_concurrent_submissions_of_a_team_never_pass_its_limit(pg_migrated_url):
    """Six submissions of 4 runs at once against a limit of 10: the queue lock makes each
    count the ones before it, so exactly two get in."""
    from service.limits import LimitExceeded, reserve_queue
    from service.spec import SweepSpec
    from service.sweeps import submit_sweep

    settings = settings_for(pg_migrated_url, max_queued_runs=10)
    four = SweepSpec.model_validate(spec(grad_clip=[None, 1.0], inits=["default"]))
    assert four.grid_size() == 4
    start = threading.Barrier(6)
    outcomes: list[str] = []

    def submit() -> None:
        start.wait()
        try:
            with session_scope(pg_migrated_url) as s:
                reserve_queue(session=s, settings=settings, team=None, adding=4)
                time.sleep(0.05)  # widen the window a missing lock would leave
                submit_sweep(session=s, spec=four, source="api", max_attempts=3)
            outcomes.append("in")
        except LimitExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["in"] * 2 + ["refused"] * 4
    assert count_rows(pg_migrated_url) == (2, 8)
