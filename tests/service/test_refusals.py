"""Bad input refused, not ignored: unknown filter values answer 422 listing the valid ones
(API and leaderboard page alike), and a missing page is an HTML 404 page with a link home,
while the API keeps answering JSON."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.api.main import create_app
from service.leaderboard import LeaderboardQuery
from service.schemas import ValidationProblems
from service.settings import Settings
from tests.service.conftest import QUICK_SPEC

BROWSER = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@pytest.mark.parametrize(
    "params,loc,message",
    [
        ({"task": "digit"}, "task", "unknown task 'digit'; did you mean 'digits'? (known: "),
        ({"task": "mnist"}, "task", "unknown task 'mnist' (known: deep_linear, digits,"),
        (
            {"architecture": "mpl"},
            "architecture",
            "unknown architecture 'mpl'; did you mean 'mlp'?",
        ),
    ],
)
def test_unknown_leaderboard_filters_are_422_listing_the_known(sqlite_client, params, loc, message):
    for path in ("/api/v1/leaderboard", "/api/v1/leaderboard.csv"):
        r = sqlite_client.get(path, params=params)
        assert r.status_code == 422, r.text
        (error,) = r.json()["detail"]
        assert error["loc"] == ["query", loc] and error["msg"].startswith(message), error
    # The page shows the same message where the table would be.
    page = sqlite_client.get("/", params=params, headers=BROWSER)
    assert page.status_code == 422
    assert f"{loc}: {message}".replace("'", "&#39;") in page.text


def test_the_leaderboard_query_refuses_what_the_cli_passes():
    """`plateau leaderboard --task digit` validates through LeaderboardQuery."""
    with pytest.raises(ValueError, match="did you mean 'digits'"):
        LeaderboardQuery(task="digit")
    assert LeaderboardQuery(task="digits", architecture="mlp").task == "digits"


def test_known_filters_still_answer(sqlite_client):
    r = sqlite_client.get("/api/v1/leaderboard", params={"task": "digits", "architecture": "mlp"})
    assert r.status_code == 200 and r.json() == {"data": [], "count": 0}


def test_an_unknown_run_status_is_422_with_did_you_mean(sqlite_client):
    sweep = sqlite_client.post("/api/v1/sweeps", json=QUICK_SPEC).json()["id"]
    for path in ("/api/v1/runs", f"/api/v1/sweeps/{sweep}/runs"):
        r = sqlite_client.get(path, params={"status": "succeded"})
        assert r.status_code == 422, r.text
        (error,) = r.json()["detail"]
        assert error["loc"] == ["query", "status"]
        assert error["msg"].startswith("unknown run status 'succeded'; did you mean 'succeeded'?")
        assert "(known: cancelled, diverged, failed, queued, running, succeeded)" in error["msg"]
        ok = sqlite_client.get(path, params={"status": "queued"})
        assert ok.status_code == 200 and ok.json()["count"] == 8
        none = sqlite_client.get(path, params={"status": "succeeded"})
        assert none.status_code == 200 and none.json() == {"data": [], "count": 0}


def test_the_runs_of_every_sweep_newest_first(sqlite_client):
    first = sqlite_client.post("/api/v1/sweeps", json=QUICK_SPEC).json()["id"]
    second = sqlite_client.post("/api/v1/sweeps", json=QUICK_SPEC).json()["id"]
    page = sqlite_client.get("/api/v1/runs", params={"limit": 10}).json()
    assert page["count"] == 16 and len(page["data"]) == 10
    ids = [run["id"] for run in page["data"]]
    assert ids == sorted(ids, reverse=True)
    assert [run["sweep_id"] for run in page["data"]] == [second] * 8 + [first] * 2


@pytest.mark.parametrize(
    "path,message",
    [
        ("/runs/999999", "run 999999 not found"),
        ("/sweeps/999999", "sweep 999999 not found"),
        ("/studies/999999", "study 999999 not found"),
        ("/compare?runs=999999", "run(s) not found: 999999"),
        ("/no/such/page", "there is no page at /no/such/page"),
    ],
)
def test_missing_pages_are_html_404_pages_with_a_link_home(sqlite_client, path, message):
    r = sqlite_client.get(path, headers=BROWSER)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert '<p class="error" role="alert" id="error-message">' + message in r.text
    assert 'href="http://testserver/">leaderboard</a>' in r.text  # the way home


def test_pages_are_html_for_any_client_and_unknown_paths_only_for_browsers(sqlite_client):
    # A page's own 404 is a page whoever asks; an unknown path is, when a browser asks.
    assert sqlite_client.get("/runs/999999").headers["content-type"].startswith("text/html")
    plain = sqlite_client.get("/no/such/page", headers={"accept": "*/*"})
    assert plain.status_code == 404 and plain.json() == {"detail": "Not Found"}


@pytest.mark.parametrize("path", ["/api/v1/runs/999999", "/api/v1/sweeps/999999", "/api/v1/nope"])
def test_the_api_keeps_answering_json(sqlite_client, path):
    r = sqlite_client.get(path, headers=BROWSER)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert set(r.json()) == {"detail"}


@pytest.mark.postgres
def test_a_user_whose_name_fills_its_column_is_created_and_audited(pg_migrated_url):
    """Found by schemathesis signed in as an admin: the audit target "user:<name>" of a
    200-character name overflowed its VARCHAR(200) on Postgres (a 500)."""
    name = "u" * 200
    key = "pb_admin_" + "0123456789abcdef" * 2
    settings = Settings(database_url=pg_migrated_url, submit_rate_limit="", admin_key=key)
    app = create_app(settings, dispatch=False)
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        r = client.post("/api/v1/users", json={"name": name})
        assert r.status_code == 201, r.text
        events = client.get("/api/v1/audit", params={"action": "user.create"}).json()["data"]
        assert events[0]["detail"]["target"] == f"user:{name}"
        assert events[0]["target"] == f"user:{name}"[:200]


@pytest.mark.postgres
def test_compare_figures_of_an_id_past_integer_is_422_not_500(pg_migrated_url):
    """Found by schemathesis on the merged app: ten digits pass the `runs` pattern, and an
    id past 2^31 - 1 overflowed Postgres' INTEGER (a 500)."""
    settings = Settings(database_url=pg_migrated_url, submit_rate_limit="")
    with TestClient(create_app(settings, dispatch=False)) as client:
        r = client.get("/api/v1/figures/compare", params={"runs": "1,9802099783"})
        assert r.status_code == 422, r.text
        (error,) = r.json()["detail"]
        assert error["loc"] == ["query", "runs"] and "at most 2147483647" in error["msg"]
        ValidationProblems.model_validate(r.json())
        assert (
            client.get("/api/v1/figures/compare", params={"runs": "2147483647"}).status_code == 404
        )
