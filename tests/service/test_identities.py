"""Identities through the ASGI app over real HTTP semantics (TestClient), on SQLite and
Postgres: keys and roles on every endpoint, owners from keys, the audit log, errors with
tracebacks for admins only, the single-user default, and starting up with a deployment's
admin key secret."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update

from db import auth as db_auth
from db import queue
from db.errors import AlreadyExists
from db.models import ApiKey, AuditEvent, Run, Sweep, User, WebSession
from db.session import get_engine, session_scope
from service import auth
from service.api.main import create_app
from service.auth import AuthConfigError, Identity, is_loopback
from service.settings import Settings
from tests.service.conftest import QUICK_SPEC

TRACEBACK = (
    "ValueError: the task made an empty split\n"
    "Traceback (most recent call last):\n"
    '  File "/srv/plateau/workers/runner.py", line 92, in execute\n'
    "    result = train(run_config, hooks)\n"
    "ValueError: the task made an empty split"
)


def add_user(url: str, name: str, role: str, *, key: bool = True) -> str | None:
    """A team user (and a key of it, returned) as `plateau users/keys create` make them."""
    with session_scope(url) as s:
        user = auth.create_user(session=s, name=name, role=role, actor="test")
        if not key:
            return None
        _, token = auth.create_key(session=s, user=user, name="test", actor="test")
        return token


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def team(migrated_url: str) -> Iterator[dict[str, Any]]:
    """A team (auto mode switches on: team users exist): an admin, two members, a viewer."""
    keys = {
        "ada": add_user(migrated_url, "ada", "admin"),
        "mia": add_user(migrated_url, "mia", "member"),
        "max": add_user(migrated_url, "max", "member"),
        "vic": add_user(migrated_url, "vic", "viewer"),
    }
    with TestClient(create_app(Settings(database_url=migrated_url), dispatch=False)) as c:
        yield {"client": c, "url": migrated_url, "keys": keys}


def submit(team: dict[str, Any], who: str, **changes: Any) -> int:
    r = team["client"].post(
        "/api/v1/sweeps", json=QUICK_SPEC | changes, headers=bearer(team["keys"][who])
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def statuses(url: str, sweep_id: int) -> set[str]:
    with session_scope(url) as s:
        return set(s.scalars(select(Run.status).where(Run.sweep_id == sweep_id)))


# --------------------------------------------------------------------- keys and roles


def test_without_a_key_reads_and_writes_are_401_but_health_and_ready_answer(team):
    c = team["client"]
    sweep = submit(team, "mia")
    for method, path in [
        ("GET", "/api/v1/sweeps"),
        ("GET", f"/api/v1/sweeps/{sweep}"),
        ("GET", f"/api/v1/sweeps/{sweep}/runs"),
        ("GET", "/api/v1/runs/1"),
        ("GET", "/api/v1/runs/1/probes"),
        ("GET", "/api/v1/studies"),
        ("GET", "/api/v1/leaderboard"),
        ("GET", "/api/v1/leaderboard.csv"),
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/keys"),
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/audit"),
        ("POST", "/api/v1/sweeps"),
        ("POST", f"/api/v1/sweeps/{sweep}/cancel"),
        ("POST", "/api/v1/studies/1/cancel"),
        ("POST", "/api/v1/keys"),
    ]:
        r = c.request(method, path, json=QUICK_SPEC if method == "POST" else None)
        assert r.status_code == 401, (method, path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        assert "requires an API key" in r.json()["detail"]
    assert statuses(team["url"], sweep) == {"queued"}  # the unauthenticated cancel did nothing
    assert c.get("/api/v1/health").status_code == 200
    assert c.get("/api/v1/ready").status_code == 200
    assert "/api/v1/sweeps" in c.get("/openapi.json").json()["paths"]
    # 401 comes before existence: nothing is learned about ids without a key
    assert c.get("/api/v1/sweeps/999999").status_code == 401


def test_a_wrong_key_a_revoked_key_and_a_disabled_user_are_401(team):
    c, url, keys = team["client"], team["url"], team["keys"]
    assert c.get("/api/v1/me", headers=bearer(keys["mia"])).status_code == 200
    wrong = c.get("/api/v1/me", headers=bearer(keys["mia"][:-1] + "x"))
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid API key"

    with session_scope(url) as s:
        key = db_auth.find_key(session=s, token=keys["mia"])
        assert auth.revoke_key(session=s, key=key, actor="test")
        assert not auth.revoke_key(session=s, key=key, actor="test")  # already revoked
        prefix = key.prefix
    revoked = c.post("/api/v1/sweeps", json=QUICK_SPEC, headers=bearer(keys["mia"]))
    assert revoked.status_code == 401 and f"API key {prefix} was revoked" in revoked.text

    with session_scope(url) as s:
        user = db_auth.get_user(session=s, name="max")
        auth.update_user(session=s, user=user, role=None, disabled=True, actor="test")
    disabled = c.get("/api/v1/sweeps", headers=bearer(keys["max"]))
    assert disabled.status_code == 401 and "user 'max' is disabled" in disabled.text


def test_the_x_api_key_header_works_as_well_as_bearer(team):
    me = team["client"].get("/api/v1/me", headers={"X-API-Key": team["keys"]["vic"]}).json()
    assert me == {"auth": True, "user": "vic", "role": "viewer", "via": "key",
                  "key_prefix": team["keys"]["vic"][:11]}  # fmt: skip


def test_a_viewer_reads_but_may_not_submit_or_cancel(team):
    c, keys = team["client"], team["keys"]
    sweep = submit(team, "mia")
    assert c.get(f"/api/v1/sweeps/{sweep}", headers=bearer(keys["vic"])).status_code == 200
    r = c.post("/api/v1/sweeps", json=QUICK_SPEC, headers=bearer(keys["vic"]))
    assert r.status_code == 403
    assert r.json()["detail"] == (
        "user 'vic' has role viewer; POST /api/v1/sweeps needs role member or admin"
    )
    r = c.post(f"/api/v1/sweeps/{sweep}/cancel", headers=bearer(keys["vic"]))
    assert r.status_code == 403 and statuses(team["url"], sweep) == {"queued"}
    assert c.get("/api/v1/audit", headers=bearer(keys["mia"])).status_code == 403


def test_the_owner_is_the_keys_user_and_a_spec_may_not_name_another(team):
    c, url, keys = team["client"], team["url"], team["keys"]
    sweep = submit(team, "mia")
    assert c.get(f"/api/v1/sweeps/{sweep}", headers=bearer(keys["vic"])).json()["owner"] == "mia"
    again = submit(team, "mia", owner="mia")  # repeating one's own name is harmless
    r = c.post("/api/v1/sweeps", json=QUICK_SPEC | {"owner": "max"}, headers=bearer(keys["mia"]))
    assert r.status_code == 422
    (problem,) = r.json()["detail"]
    assert problem["loc"] == ["body", "owner"] and "API key's user ('mia')" in problem["msg"]
    with session_scope(url) as s:
        owners = {
            sid: name for sid, name in s.execute(select(Sweep.id, User.name).join(Sweep.owner_user))
        }
        n_sweeps = s.scalar(select(Sweep.id).order_by(Sweep.id.desc()).limit(1))
    assert owners == {sweep: "mia", again: "mia"} and n_sweeps == again  # the 422 wrote nothing


def test_a_member_cancels_their_own_sweep_not_anothers_and_an_admin_any(team):
    c, url, keys = team["client"], team["url"], team["keys"]
    mine, theirs, third = submit(team, "mia"), submit(team, "max"), submit(team, "max")
    r = c.post(f"/api/v1/sweeps/{theirs}/cancel", headers=bearer(keys["mia"]))
    assert r.status_code == 403
    assert r.json()["detail"] == (
        f"sweep {theirs} belongs to max; only its owner or an admin may cancel it"
    )
    assert statuses(url, theirs) == {"queued"}
    r = c.post(f"/api/v1/sweeps/{mine}/cancel", headers=bearer(keys["mia"]))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = c.post(f"/api/v1/sweeps/{third}/cancel", headers=bearer(keys["ada"]))
    assert r.status_code == 200 and statuses(url, third) == {"cancelled"}

    log = c.get("/api/v1/audit", params={"action": "sweep.cancel"}, headers=bearer(keys["ada"]))
    events = log.json()["data"]
    assert [(e["actor"], e["target"], e["key_prefix"]) for e in events] == [
        ("ada", f"sweep:{third}", keys["ada"][:11]),
        ("mia", f"sweep:{mine}", keys["mia"][:11]),
    ]
    assert events[1]["detail"] == {"runs_cancelled": 8, "owner": "mia"}


def test_only_the_owner_or_an_admin_deletes_or_retries_a_sweep_and_both_are_audited(team):
    c, url, keys = team["client"], team["url"], team["keys"]
    mine, theirs = submit(team, "mia"), submit(team, "max")
    for method, path in (("post", f"/api/v1/sweeps/{theirs}/retry"), ("delete", "")):
        r = getattr(c, method)(path or f"/api/v1/sweeps/{theirs}", headers=bearer(keys["mia"]))
        assert r.status_code == 403, r.text
        assert "only its owner or an admin may" in r.json()["detail"]
    r = c.delete(f"/api/v1/sweeps/{theirs}", headers=bearer(keys["vic"]))
    assert r.status_code == 403  # a viewer changes nothing
    assert statuses(url, theirs) == {"queued"}
    r = c.post(f"/api/v1/sweeps/{mine}/retry", headers=bearer(keys["mia"]))
    assert r.status_code == 200 and r.json() == {"id": mine, "requeued": 0}
    r = c.delete(f"/api/v1/sweeps/{mine}", headers=bearer(keys["mia"]))
    assert r.status_code == 200 and r.json()["runs"] == 8
    r = c.delete(f"/api/v1/sweeps/{theirs}", headers=bearer(keys["ada"]))
    assert r.status_code == 200
    assert c.get(f"/api/v1/sweeps/{theirs}", headers=bearer(keys["ada"])).status_code == 404

    log = c.get("/api/v1/audit", headers=bearer(keys["ada"])).json()["data"]
    changes = [
        (e["action"], e["actor"], e["target"]) for e in log if e["target"].startswith("sweep")
    ]
    assert changes == [
        ("sweep.delete", "ada", f"sweep:{theirs}"),
        ("sweep.delete", "mia", f"sweep:{mine}"),
        ("sweep.retry", "mia", f"sweep:{mine}"),
    ]


def test_keys_are_stored_as_their_sha256_with_a_recognisable_prefix(team):
    token = team["keys"]["mia"]
    assert db_auth.KEY_PATTERN.fullmatch(token) and len(token) == 55
    with get_engine(team["url"]).connect() as conn:
        rows = conn.execute(text("SELECT * FROM api_key")).mappings().all()
    assert len(rows) == 4
    for row in rows:
        for value in row.values():
            assert token not in str(value) and token[12:] not in str(value)
    (mia,) = [r for r in rows if r["prefix"] == token[:11]]
    assert mia["key_hash"] == hashlib.sha256(token.encode()).hexdigest()


def test_last_use_is_recorded_at_most_once_a_minute(team):
    c, url, token = team["client"], team["url"], team["keys"]["vic"]

    def last_used() -> dt.datetime | None:
        with session_scope(url) as s:
            return s.scalar(select(ApiKey.last_used_at).where(ApiKey.prefix == token[:11]))

    assert last_used() is None
    c.get("/api/v1/sweeps", headers=bearer(token))
    first = last_used()
    assert first is not None and (dt.datetime.now(dt.UTC) - first).total_seconds() < 60
    c.get("/api/v1/sweeps", headers=bearer(token))
    assert last_used() == first  # within the minute: no write
    with session_scope(url) as s:  # a minute later it is written again
        s.execute(update(ApiKey).values(last_used_at=first - dt.timedelta(minutes=2)))
    c.get("/api/v1/sweeps", headers=bearer(token))
    assert last_used() > first


# ------------------------------------------------------------------- users, keys, audit


def test_admins_manage_users_and_keys_through_the_api(team):
    c, url, keys = team["client"], team["url"], team["keys"]
    admin = bearer(keys["ada"])
    r = c.post("/api/v1/users", json={"name": "nina", "role": "member"}, headers=admin)
    assert r.status_code == 201 and r.json()["origin"] == "team"
    assert c.post("/api/v1/users", json={"name": "nina"}, headers=admin).status_code == 409
    bad = c.post("/api/v1/users", json={"name": "two words"}, headers=admin)
    assert bad.status_code == 422
    refused = c.post("/api/v1/users", json={"name": "eve"}, headers=bearer(keys["mia"]))
    assert refused.status_code == 403

    r = c.post("/api/v1/keys", json={"user": "nina", "name": "laptop"}, headers=admin)
    assert r.status_code == 201
    created = r.json()
    token = created["key"]
    assert created["prefix"] == token[:11] and created["user"] == "nina"
    me = c.get("/api/v1/me", headers=bearer(token)).json()
    assert (me["user"], me["role"]) == ("nina", "member")
    assert c.post("/api/v1/keys", json={"user": "nobody"}, headers=admin).status_code == 404
    assert c.post("/api/v1/keys", json={"user": "nina"}, headers=bearer(token)).status_code == 403

    listed = c.get("/api/v1/keys", headers=admin).json()
    assert listed["count"] == 5 and all("key" not in k for k in listed["data"])
    own = c.get("/api/v1/keys", headers=bearer(token)).json()["data"]
    assert [k["prefix"] for k in own] == [token[:11]]  # a member sees only its own keys
    one = c.get("/api/v1/keys", params={"user": "vic"}, headers=admin).json()["data"]
    assert [k["user"] for k in one] == ["vic"]
    assert c.get("/api/v1/keys", params={"user": "zed"}, headers=admin).status_code == 404

    # a member may revoke its own key, not another's (404: it learns nothing of theirs)
    other = keys["max"][:11]
    assert c.post(f"/api/v1/keys/{other}/revoke", headers=bearer(token)).status_code == 404
    assert c.post("/api/v1/keys/pb_nothere/revoke", headers=admin).status_code == 404
    r = c.post(f"/api/v1/keys/{token[:11]}/revoke", headers=bearer(token))
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    assert c.get("/api/v1/me", headers=bearer(token)).status_code == 401
    again = c.post(f"/api/v1/keys/{token[:11]}/revoke", headers=admin)
    assert again.status_code == 200
    with_revoked = c.get("/api/v1/keys", params={"revoked": True}, headers=admin).json()
    assert with_revoked["count"] == 5 + 0 and len(listed["data"]) == 5

    r = c.patch("/api/v1/users/max", json={"role": "viewer"}, headers=admin)
    assert r.status_code == 200 and r.json()["role"] == "viewer"
    assert c.patch("/api/v1/users/zed", json={"role": "viewer"}, headers=admin).status_code == 404
    last = c.patch("/api/v1/users/ada", json={"disabled": True}, headers=admin)
    assert last.status_code == 409 and "last enabled admin" in last.json()["detail"]
    assert c.patch("/api/v1/users/ada", json={"role": "member"}, headers=admin).status_code == 409
    users = {u["name"]: u for u in c.get("/api/v1/users", headers=admin).json()["data"]}
    assert users["max"]["role"] == "viewer" and users["ada"]["disabled_at"] is None

    actions = [
        (e["action"], e["target"], e["actor"])
        for e in c.get("/api/v1/audit", headers=admin).json()["data"]
    ]
    assert actions[:4] == [
        ("user.update", "user:max", "ada"),
        ("key.revoke", f"key:{token[:11]}", "nina"),
        ("key.create", f"key:{token[:11]}", "ada"),
        ("user.create", "user:nina", "ada"),
    ]
    with session_scope(url) as s:  # the test's own setup is in the log too
        assert s.scalar(select(AuditEvent.id).where(AuditEvent.actor == "test").limit(1))


def test_creating_a_team_user_adopts_a_legacy_user_of_that_name(migrated_url):
    with session_scope(migrated_url) as s:
        legacy = db_auth.legacy_user(session=s, name="ana")
        assert (legacy.role, legacy.origin) == ("viewer", "legacy")
        assert db_auth.legacy_user(session=s, name="ana").id == legacy.id
        adopted = auth.create_user(session=s, name="ana", role="member", actor="test")
        assert adopted.id == legacy.id and (adopted.role, adopted.origin) == ("member", "team")
        with pytest.raises(AlreadyExists, match="user 'ana' exists"):
            auth.create_user(session=s, name="ana", role="admin", actor="test")


def test_a_failed_runs_traceback_is_for_admins_and_others_see_its_message(team):
    c, url, keys = team["client"], team["url"], team["keys"]
    sweep = submit(team, "mia")
    with session_scope(url) as s:
        (claim, *_) = queue.claim_runs(session=s, worker_id="t", limit=8, lease_seconds=60)
    with session_scope(url) as s:
        queue.complete_run(
            session=s,
            run_id=claim.run_id,
            attempt=claim.attempt,
            outcome="failed",
            result={},
            error=TRACEBACK,
        )
    for who, expected in (("ada", TRACEBACK), ("mia", TRACEBACK.splitlines()[0])):
        run = c.get(f"/api/v1/runs/{claim.run_id}", headers=bearer(keys[who])).json()
        assert run["error"] == expected, who
        runs = c.get(f"/api/v1/sweeps/{sweep}/runs", headers=bearer(keys[who])).json()["data"]
        assert next(r for r in runs if r["id"] == claim.run_id)["error"] == expected, who
    assert (
        "/srv/plateau"
        not in c.get(f"/api/v1/runs/{claim.run_id}", headers=bearer(keys["vic"])).text
    )


def test_the_leaderboard_filters_by_owners_from_keys(team):
    c, url, keys = team["client"], team["url"], team["keys"]
    submit(team, "mia")
    with session_scope(url) as s:
        claims = queue.claim_runs(session=s, worker_id="t", limit=8, lease_seconds=60)
    for claim in claims:
        with session_scope(url) as s:
            queue.complete_run(
                session=s, run_id=claim.run_id, attempt=claim.attempt, outcome="succeeded",
                result={"steps_done": 30, "final_loss": 0.4, "reached_target": True,
                        "steps_to_target": 20},
            )  # fmt: skip
    board = c.get("/api/v1/leaderboard", params={"owner": "mia"}, headers=bearer(keys["vic"]))
    assert board.status_code == 200 and board.json()["count"] == 8
    assert (
        c.get("/api/v1/leaderboard", params={"owner": "max"}, headers=bearer(keys["vic"])).json()[
            "count"
        ]
        == 0
    )
    page = c.get("/", headers=bearer(keys["vic"]))  # the owner filter offers the owners
    assert page.status_code == 200 and '<option value="mia">' in page.text
    assert '<option value="max">' not in page.text  # max owns nothing


# ------------------------------------------------------------------ studies


def test_studies_belong_to_the_key_user_and_only_its_owner_or_an_admin_cancels(team):
    from tests.service.test_studies import small

    c, keys = team["client"], team["keys"]
    r = c.post("/api/v1/studies", json=small(), headers=bearer(keys["max"]))
    assert r.status_code == 201, r.text
    study = r.json()["id"]
    assert c.post("/api/v1/studies", json=small(), headers=bearer(keys["vic"])).status_code == 403
    foreign = c.post("/api/v1/studies", json=small(owner="ada"), headers=bearer(keys["max"]))
    assert foreign.status_code == 422
    listed = c.get("/api/v1/studies", headers=bearer(keys["vic"])).json()["data"]
    assert [(s["id"], s["owner"]) for s in listed] == [(study, "max")]
    r = c.post(f"/api/v1/studies/{study}/cancel", headers=bearer(keys["mia"]))
    assert r.status_code == 403 and "belongs to max" in r.json()["detail"]
    r = c.post(f"/api/v1/studies/{study}/cancel", headers=bearer(keys["max"]))
    assert r.json() == {"id": study, "state": "cancelled"}
    (event,) = c.get(
        "/api/v1/audit", params={"action": "study.cancel"}, headers=bearer(keys["ada"])
    ).json()["data"]
    assert (event["actor"], event["target"]) == ("max", f"study:{study}")


# ------------------------------------------------------------------ single-user mode


def test_single_user_mode_needs_no_key_until_a_team_is_set_up(migrated_url):
    with TestClient(create_app(Settings(database_url=migrated_url), dispatch=False)) as c:
        me = c.get("/api/v1/me").json()
        assert me == {"auth": False, "user": "single-user", "role": "admin",
                      "via": "single-user", "key_prefix": None}  # fmt: skip
        r = c.post("/api/v1/sweeps", json=QUICK_SPEC | {"owner": "ana"})
        assert r.status_code == 201
        anon = c.post("/api/v1/sweeps", json=QUICK_SPEC).json()["id"]
        assert c.get(f"/api/v1/sweeps/{anon}").json()["owner"] == "anonymous"
        assert c.post(f"/api/v1/sweeps/{r.json()['id']}/cancel").status_code == 200
        assert c.get("/").status_code == 200  # pages need no sign-in
        assert c.get("/signin", follow_redirects=False).headers["location"] == "/"
        with session_scope(migrated_url) as s:
            ana = db_auth.get_user(session=s, name="ana")
            assert (ana.role, ana.origin) == ("viewer", "legacy")  # legacy users: still off
            assert not db_auth.team_configured(session=s)
        (event,) = c.get("/api/v1/audit").json()["data"]
        assert (event["actor"], event["action"]) == ("single-user", "sweep.cancel")

        token = add_user(migrated_url, "alice", "admin")  # `plateau users create` + keys
        r = c.get("/api/v1/sweeps")
        assert r.status_code == 401  # auto: a team exists now, the next request needs a key
        assert c.get("/api/v1/sweeps", headers=bearer(token)).status_code == 200
        follow = c.get("/sweeps/1", follow_redirects=False)
        assert follow.status_code == 303
        assert follow.headers["location"].endswith("/signin?next=%2Fsweeps%2F1")


def test_auth_off_keeps_a_loopback_server_single_user_even_with_a_team(migrated_url):
    add_user(migrated_url, "alice", "admin")
    settings = Settings(database_url=migrated_url, auth="off")
    with TestClient(create_app(settings, dispatch=False)) as c:
        assert c.post("/api/v1/sweeps", json=QUICK_SPEC).status_code == 201


# ------------------------------------------------------------------ starting up


def test_a_non_loopback_bind_refuses_to_start_without_a_usable_key(migrated_url):
    settings = Settings(database_url=migrated_url, host="0.0.0.0")
    with pytest.raises(AuthConfigError) as e, TestClient(create_app(settings, dispatch=False)):
        pass
    assert "PLATEAU_ADMIN_KEY" in str(e.value) and "plateau users create" in str(e.value)
    add_user(migrated_url, "alice", "admin", key=False)  # a user without a key: still no
    with pytest.raises(AuthConfigError), TestClient(create_app(settings, dispatch=False)):
        pass
    off = Settings(database_url=migrated_url, host="0.0.0.0", auth="off")
    with pytest.raises(AuthConfigError, match="PLATEAU_AUTH=off is refused on 0.0.0.0"):
        auth.prepare(off)
    on = Settings(database_url=migrated_url, auth="on")  # on, even on loopback, needs a key
    with pytest.raises(AuthConfigError, match="no usable key"):
        auth.prepare(on)


def test_the_admin_key_secret_creates_the_first_admin_once(migrated_url, tmp_path):
    secret = db_auth.generate_key()
    (tmp_path / "admin-key").write_text(secret + "\n")
    settings = Settings(
        database_url=migrated_url, host="0.0.0.0", admin_key_file=tmp_path / "admin-key"
    )
    for _ in range(2):  # a restart (or a second replica) creates nothing more
        with TestClient(create_app(settings, dispatch=False)) as c:
            assert c.get("/api/v1/sweeps").status_code == 401  # off loopback: keys required
            me = c.get("/api/v1/me", headers=bearer(secret)).json()
            assert (me["user"], me["role"], me["key_prefix"]) == ("admin", "admin", secret[:11])
    with session_scope(migrated_url) as s:
        assert [u.name for u in db_auth.list_users(session=s)] == ["admin"]
        (key,) = db_auth.list_keys(session=s, include_revoked=True)
        assert key.name == "PLATEAU_ADMIN_KEY"
        events = [
            (e.actor, e.action) for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))
        ]
        assert events == [("bootstrap", "user.create"), ("bootstrap", "key.create")]
        auth.revoke_key(session=s, key=key, actor="test")
    # a revoked secret stays revoked: the next start does not bring it back (and, with no
    # other usable key, refuses to start)
    with pytest.raises(AuthConfigError, match="no usable key"):
        auth.prepare(settings)
    with session_scope(migrated_url) as s:
        assert db_auth.find_key(session=s, token=secret).revoked_at is not None


def test_an_admin_key_secret_in_another_format_gets_a_prefix_that_reveals_nothing(migrated_url):
    secret = "0123456789abcdef" * 4  # `openssl rand -hex 32`
    auth.prepare(Settings(database_url=migrated_url, admin_key=secret, admin_user="root"))
    with session_scope(migrated_url) as s:
        key = db_auth.find_key(session=s, token=secret)
        assert key.user.name == "root" and key.prefix.startswith("pb_")
        assert key.prefix[3:] not in secret


def test_the_admin_key_secret_never_promotes_an_existing_user(migrated_url):
    add_user(migrated_url, "admin", "member", key=False)
    settings = Settings(database_url=migrated_url, admin_key=db_auth.generate_key())
    with pytest.raises(AuthConfigError, match="names user 'admin', which exists \\(role member"):
        auth.prepare(settings)


@pytest.mark.parametrize(
    "env,message",
    [
        ({"PLATEAU_ADMIN_KEY": "short"}, "at least 32 characters"),
        ({"PLATEAU_ADMIN_KEY": "REPLACE_ME_WITH_openssl_rand_hex_32"}, "placeholder"),
        ({"PLATEAU_ADMIN_KEY_FILE": "/nonexistent/admin-key"}, "cannot read it"),
        ({"PLATEAU_ADMIN_KEY": "k" * 40, "PLATEAU_ADMIN_KEY_FILE": "/x"}, "not both"),
    ],
)
def test_a_bad_admin_key_secret_fails_at_start_without_echoing_it(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message) as e:
        Settings()
    assert "short" not in str(e.value).replace("shorter", "") and "kkkk" not in str(e.value)


def test_loopback_addresses():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "example.org", ""))


def test_who_may_change_what():
    def user(uid: int, role: str) -> User:
        return User(id=uid, name=f"u{uid}", role=role, origin="team")

    assert Identity(user=None).may_change(7)  # single-user mode
    assert Identity(user=user(1, "admin")).may_change(7)
    assert Identity(user=user(7, "member")).may_change(7)
    assert not Identity(user=user(8, "member")).may_change(7)
    assert not Identity(user=user(7, "viewer")).may_change(7)  # a viewer changes nothing


# ------------------------------------------------------------------ page sessions


def sign_in(c: TestClient, token: str, next_url: str = "/") -> Any:
    form = c.get("/signin")
    assert form.status_code == 200 and 'name="csrf_token"' in form.text
    csrf = form.text.split('name="csrf_token" value="')[1].split('"')[0]
    return c.post(
        "/signin",
        data={"key": token, "csrf_token": csrf, "next": next_url},
        follow_redirects=False,
    )


def page_csrf(html: str) -> str:
    return html.split('name="csrf_token" value="')[1].split('"')[0]


def test_pages_sign_in_with_a_key_and_their_forms_need_the_sessions_csrf_token(team):
    c, url, keys = team["client"], team["url"], team["keys"]
    mine, theirs = submit(team, "mia"), submit(team, "max")
    c.headers.clear()
    assert c.get(f"/sweeps/{mine}", follow_redirects=False).status_code == 303

    bad = sign_in(c, "pb_wrong")
    assert bad.status_code == 401 and "that key is not valid" in bad.text
    r = sign_in(c, keys["mia"], f"/sweeps/{mine}")
    assert r.status_code == 303 and r.headers["location"] == f"/sweeps/{mine}"
    cookie = r.headers["set-cookie"].lower()
    assert "plateau_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    assert "secure" not in cookie  # plain http here; https sets it

    page = c.get(f"/sweeps/{mine}")
    assert page.status_code == 200 and 'id="cancel-sweep"' in page.text
    assert "mia <small>(member)</small>" in page.text
    assert 'id="cancel-sweep"' not in c.get(f"/sweeps/{theirs}").text  # not hers to cancel
    csrf = page_csrf(page.text)

    # the API takes the cookie for reads, never for writes
    assert c.get("/api/v1/sweeps").status_code == 200
    r = c.post(f"/api/v1/sweeps/{mine}/cancel")
    assert r.status_code == 401 and "does not authorize API writes" in r.text

    # a form post without the token (another site's) changes nothing
    r = c.post(f"/sweeps/{mine}/cancel", data={}, follow_redirects=False)
    assert r.status_code == 403 and "security token" in r.text
    r = c.post(f"/sweeps/{mine}/cancel", content=b"x=1", headers={"content-type": "text/plain"})
    assert r.status_code == 403 and statuses(url, mine) == {"queued"}
    r = c.post(f"/sweeps/{theirs}/cancel", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 403 and "belongs to max" in r.text
    assert statuses(url, theirs) == {"queued"}
    r = c.post(f"/sweeps/{mine}/cancel", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303 and statuses(url, mine) == {"cancelled"}

    r = c.post("/signout", data={"csrf_token": "nope"}, follow_redirects=False)
    assert r.status_code == 403  # signing out is a form too
    r = c.post("/signout", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    with session_scope(url) as s:
        assert s.scalar(select(WebSession.id)) is None
    assert c.get(f"/sweeps/{mine}", follow_redirects=False).status_code == 303


def test_a_session_ends_when_its_key_is_revoked_or_it_expires(team):
    c, url, keys = team["client"], team["url"], team["keys"]
    assert sign_in(c, keys["vic"]).status_code == 303
    assert c.get("/api/v1/me").json()["via"] == "session"
    with session_scope(url) as s:
        s.execute(update(WebSession).values(expires_at=dt.datetime.now(dt.UTC)))
    assert c.get("/api/v1/me").status_code == 401  # expired
    assert sign_in(c, keys["vic"]).status_code == 303
    assert c.get("/api/v1/me").status_code == 200
    with session_scope(url) as s:
        key = db_auth.find_key(session=s, token=keys["vic"])
        auth.revoke_key(session=s, key=key, actor="test")
    assert c.get("/api/v1/me").status_code == 401
    assert sign_in(c, keys["vic"]).status_code == 401  # a revoked key cannot sign in


def test_sign_in_refuses_a_forged_form_and_never_redirects_off_site(team):
    c, keys = team["client"], team["keys"]
    r = c.post(
        "/signin",
        data={"key": keys["mia"], "csrf_token": "forged", "next": "/"},
        follow_redirects=False,
    )
    assert r.status_code == 403 and "plateau_session" not in r.headers.get("set-cookie", "")
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        r = sign_in(c, keys["mia"], target)
        assert r.status_code == 303 and r.headers["location"] == "/", target


def test_single_user_pages_use_a_double_submit_token(migrated_url):
    with TestClient(create_app(Settings(database_url=migrated_url), dispatch=False)) as c:
        sweep = c.post("/api/v1/sweeps", json=QUICK_SPEC).json()["id"]
        page = c.get(f"/sweeps/{sweep}")
        assert 'id="cancel-sweep"' in page.text
        cookie = page.headers["set-cookie"].lower()
        assert "plateau_csrf=" in cookie and "samesite=strict" in cookie
        # no page may be framed by another site (its cancel button clicked through a decoy)
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["content-security-policy"] == "frame-ancestors 'none'"
        token = page_csrf(page.text)
        c.cookies.clear()  # another site's form: the browser sends no (strict) cookie
        r = c.post(f"/sweeps/{sweep}/cancel", data={"csrf_token": token})
        assert r.status_code == 403 and statuses(migrated_url, sweep) == {"queued"}
        page = c.get(f"/sweeps/{sweep}")
        r = c.post(
            f"/sweeps/{sweep}/cancel",
            data={"csrf_token": page_csrf(page.text)},
            follow_redirects=False,
        )
        assert r.status_code == 303 and statuses(migrated_url, sweep) == {"cancelled"}
        assert 'id="cancel-sweep"' not in c.get(f"/sweeps/{sweep}").text  # nothing to cancel
