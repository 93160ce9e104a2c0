"""`plateau users|keys|audit` on the database, the HTTP commands sending PLATEAU_API_KEY to a
real `plateau serve` (a subprocess on 127.0.0.1), and `serve` refusing a non-loopback
address without a usable key. Every command runs as a user runs it: a subprocess."""

from __future__ import annotations

import os
import re
import socket
import subprocess

import httpx
import pytest
import yaml

from db.auth import KEY_PATTERN, generate_key
from tests.conftest import ROOT, plateau_cmd
from tests.service.conftest import QUICK_SPEC
from tests.service.test_failover import start, stop, wait_for


def plateau(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PLATEAU_")}
    return subprocess.run(
        plateau_cmd(*args), cwd=ROOT, capture_output=True, text=True, env=base | env, timeout=120
    )


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {"DATABASE_URL": f"sqlite:///{tmp_path / 'team.db'}", "COLUMNS": "200"}


def test_the_first_admin_and_a_key_on_a_fresh_database(env):
    made = plateau("users", "create", "alice", "--role", "admin", env=env)
    assert made.returncode == 0, made.stderr
    assert "user alice (admin, team) created" in made.stdout
    assert "plateau keys create --user alice" in made.stderr

    created = plateau("keys", "create", "--user", "alice", "--name", "laptop", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert KEY_PATTERN.fullmatch(key), created.stdout  # the key alone on stdout
    assert f"key {key[:11]} of alice (admin)" in created.stderr
    assert "shown only now" in created.stderr

    listed = plateau("keys", "list", env=env)
    assert key[:11] in listed.stdout and "laptop" in listed.stdout
    assert key[12:] not in listed.stdout + listed.stderr
    users = plateau("users", "list", env=env)
    assert re.search(r"alice\s*│\s*admin\s*│\s*team", users.stdout), users.stdout

    assert plateau("users", "create", "bob", env=env).returncode == 0  # member by default
    changed = plateau("users", "update", "bob", "--role", "viewer", "--disable", env=env)
    assert changed.returncode == 0
    assert "user bob: role member -> viewer, disabled False -> True" in changed.stdout
    revoked = plateau("keys", "revoke", key[:11], env=env)
    assert revoked.stdout.strip() == f"key {key[:11]} revoked"
    again = plateau("keys", "revoke", key[:11], env=env)
    assert again.stdout.strip() == f"key {key[:11]} was already revoked"
    assert key[:11] not in plateau("keys", "list", env=env).stdout
    assert key[:11] in plateau("keys", "list", "--revoked", env=env).stdout

    log = plateau("audit", env=env).stdout
    actions = re.findall(r"│ (cli\S*)\s*│ \S+\s*│ (\S+)\s*│ (\S+)", log)
    assert [a[1:] for a in actions] == [
        ("key.revoke", f"key:{key[:11]}"),
        ("user.update", "user:bob"),
        ("user.create", "user:bob"),
        ("key.create", f"key:{key[:11]}"),
        ("user.create", "user:alice"),
    ]
    assert all(actor.startswith("cli") for actor, *_ in actions)
    only = plateau("audit", "--action", "key.revoke", env=env).stdout
    assert "key.revoke" in only and "user.create" not in only

    generated = plateau("keys", "generate", env=env).stdout.strip()
    assert KEY_PATTERN.fullmatch(generated) and generated != key


MISTAKES = [
    (["users", "create", "carol", "--role", "owner"], "unknown role 'owner'; expected one of"),
    (["users", "create", "two words"], "bad user name 'two words'"),
    (["users", "create", "alice"], "user 'alice' exists (role admin)"),
    (["users", "update", "zed", "--role", "viewer"], "no user 'zed'"),
    (["users", "update", "alice"], "nothing to change"),
    (["users", "update", "alice", "--disable"], "'alice' is the last enabled admin"),
    (["keys", "create", "--user", "zed"], "no user 'zed'"),
    (["keys", "list", "--user", "zed"], "no user 'zed'"),
    (["keys", "revoke", "pb_nothere"], "no key 'pb_nothere'"),
]


def test_cli_mistakes_exit_2_naming_the_problem(env):
    assert plateau("users", "create", "alice", "--role", "admin", env=env).returncode == 0
    for args, message in MISTAKES:
        result = plateau(*args, env=env)
        assert result.returncode == 2, (args, result.stdout)
        assert message in result.stderr, (args, result.stderr)
    users = plateau("users", "list", env=env).stdout
    assert "alice" in users and "carol" not in users and "two words" not in users


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_http_commands_send_the_key_in_plateau_api_key(env, tmp_path):
    """A real `plateau serve` (loopback, the admin key from the environment as a deployment
    gives it) and the CLI's submit/status with and without PLATEAU_API_KEY."""
    admin = generate_key()
    port = free_port()
    server = start(
        ["serve", "--no-dispatch", "--port", str(port)],
        {**env, "PLATEAU_ADMIN_KEY": admin},
        tmp_path / "serve.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{url}/api/v1/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60, "plateau serve")
        log = (tmp_path / "serve.log").read_text()
        assert "team mode: API keys required on 127.0.0.1" in log
        assert admin not in log and admin[12:] not in log

        spec = tmp_path / "tiny.yaml"
        spec.write_text(yaml.safe_dump(QUICK_SPEC))
        anonymous = plateau("submit", str(spec), "--url", url, env=env)
        assert anonymous.returncode == 2
        assert "answered 401" in anonymous.stderr
        assert "set PLATEAU_API_KEY" in anonymous.stderr

        # the admin makes a member over the API with its key; the member submits
        r = httpx.post(
            f"{url}/api/v1/users",
            json={"name": "mia", "role": "member"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert r.status_code == 201, r.text
        member = plateau("keys", "create", "--user", "mia", env=env).stdout.strip()
        submitted = plateau(
            "submit", str(spec), "--url", url, env=env | {"PLATEAU_API_KEY": member}
        )
        assert submitted.returncode == 0, submitted.stderr
        sweep_id = int(re.search(r"sweep (\d+) queued: 8 runs", submitted.stdout).group(1))
        status = plateau(
            "status", str(sweep_id), "--url", url, env=env | {"PLATEAU_API_KEY": member}
        )
        assert status.returncode == 0 and "queued" in status.stdout
        sweep = httpx.get(f"{url}/api/v1/sweeps/{sweep_id}", headers={"X-API-Key": member}).json()
        assert sweep["owner"] == "mia"

        plateau("users", "create", "vic", "--role", "viewer", env=env)
        viewer = plateau("keys", "create", "--user", "vic", env=env).stdout.strip()
        refused = plateau("submit", str(spec), "--url", url, env=env | {"PLATEAU_API_KEY": viewer})
        assert refused.returncode == 2 and "answered 403" in refused.stderr
        assert "role viewer" in refused.stderr and "set PLATEAU_API_KEY" not in refused.stderr
    finally:
        stop(server)


def test_serve_refuses_a_non_loopback_address_without_a_usable_key(env):
    """Refused before it binds: nothing listens on 0.0.0.0 during this test."""
    bare = plateau("serve", "--host", "0.0.0.0", "--no-dispatch", env=env)
    assert bare.returncode == 2
    assert "the API on 0.0.0.0 requires API keys, and no usable key exists" in bare.stderr
    assert "PLATEAU_ADMIN_KEY" in bare.stderr and "plateau users create" in bare.stderr

    off = plateau("serve", "--host", "0.0.0.0", env=env | {"PLATEAU_AUTH": "off"})
    assert off.returncode == 2 and "PLATEAU_AUTH=off is refused on 0.0.0.0" in off.stderr

    short = plateau("serve", "--host", "0.0.0.0", env=env | {"PLATEAU_ADMIN_KEY": "hunter2"})
    assert short.returncode != 0 and "at least 32 characters" in short.stderr
    assert "hunter2" not in short.stdout + short.stderr
