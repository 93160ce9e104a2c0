"""Record the examples of /openapi.json from a real session with the service.

    .venv/bin/python scripts/record_api_examples.py      # about 2-3 minutes on 2 cores

Starts the app on a fresh SQLite file with keys on, submits the README's sweep (the
quickstart, as "Running a sweep" writes it), examples/deep_linear_init_scale.yaml (probed)
and the README's study (examples/search_deep_linear.yaml, confirmed on fresh seeds as
`plateau search` does), runs them to the end on a local Ray instance, then calls
every operation of the API (and a 404, 409 and 422 where an operation documents them) and
writes what was sent and answered to service/api/examples.json. service/api/examples.py
attaches those bodies and parameters to the document, and every field's example is a value
it held in one of them. tests/service/test_openapi.py checks that every operation and
field has an example and that every recorded body still matches the schema, so a change
of the API that makes a recording stale fails there: run this script again. (One exception:
a session of minutes has no week of nights to compare, so the fields of a schedule's
alerts carry the alert tests/service/test_nightwatch.py raises, as pydantic examples.)
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.api.examples import EXAMPLES, trim  # noqa: E402

ADMIN_KEY = "pb_recorder_admin_0123456789abcdef"
WEBHOOK = "http://127.0.0.1:9000/plateau-nightly"  # an address: the recorder resolves no names
BASE = "http://127.0.0.1:8000"
API = "/api/v1"

# Specs that set what the README's leave at their defaults, so that those fields have
# examples too; they are submitted (the service accepts them) and cancelled.
EVERY_FIELD_SWEEP = {
    "name": "every-field",
    "owner": "ada",
    "task": {"name": "digits", "n_train": 512},
    "architectures": [{"name": "cnn", "channels": [8, 16]}, "mlp"],
    "optimizers": [
        {"name": "sgd", "lr": 0.1, "momentum": 0.9, "schedule": {"name": "cosine"}},
        {"name": "adam", "lr": 0.001, "schedule": {"name": "linear_warmup", "warmup_steps": 50}},
        {"name": "adamw", "lr": 0.001, "schedule": {"name": "constant"}},
        {"name": "rmsprop", "lr": 0.001, "schedule": {"name": "constant"}},
        {"name": "adagrad", "lr": 0.01, "schedule": {"name": "constant"}},
    ],
    "grad_clip": [None, {"mode": "norm", "threshold": 1.0}],
    "budget": {"steps": 300, "batch_size": 128},
    "plateau": {"window": 25, "min_length": 50},
    "divergence": {"factor": 10.0, "patience": 20},
    "probes": {"at": ["end"], "every": 100, "measure": ["eigenvalues", "trace"]},
    "max_attempts": 2,
}
EVERY_FIELD_STUDY = {
    "name": "every-field-search",
    "owner": "ada",
    "task": {"name": "parity", "n_bits": 10, "k": 3},
    "architecture": "mlp",
    "fixed": {"optimizer": {"name": "adam", "lr": 0.001}, "probes": {"at": ["end"]}},
    "search_space": {
        "init": ["default", "orthogonal"],
        "init_scale": [0.25, 2.0],
        "grad_clip": [None, "norm"],
        "grad_clip_threshold": [0.1, 10.0],
        "lr": [0.0001, 0.01],
        "optimizer": ["adam", "sgd"],
    },
    "n_trials": 4,
    "max_attempts": 2,
    "enqueue": [
        {
            "init": "orthogonal",
            "init_scale": 1.0,
            "grad_clip": "norm",
            "grad_clip_threshold": 1.0,
            "lr": 0.001,
            "optimizer": "adam",
        },
    ],
}


class Recorder:
    """Calls through a TestClient, kept by operation ("METHOD /api/v1/path/{template}"):
    the first answer of each status, and the bodies and parameters of successful calls.
    `as_user` gives a recorder with another key that keeps into the same record."""

    def __init__(self, client: Any, headers: dict[str, str], operations: dict | None = None):
        self.client, self.headers = client, headers
        self.operations: dict[str, dict[str, Any]] = {} if operations is None else operations

    def as_user(self, key: str) -> Recorder:
        return Recorder(self.client, {"Authorization": f"Bearer {key}"}, self.operations)

    def call(self, method: str, template: str, expect: int, body: Any = None,
             params: dict[str, Any] | None = None, **path: Any) -> Any:  # fmt: skip
        template = API + template
        url = template.format(**path)
        r = self.client.request(method, url, json=body, params=params, headers=self.headers)
        assert r.status_code == expect, (method, url, r.status_code, r.text[:500])
        is_json = r.headers.get("content-type", "").startswith("application/json")
        answer = r.json() if is_json else r.text
        op = self.operations.setdefault(f"{method} {template}", {"responses": {}})
        op["responses"].setdefault(str(r.status_code), trim(answer))
        if expect < 300:
            op.setdefault("parameters", {}).update({**path, **(params or {})})
            if body is not None and "request" in op:  # kept for the fields it sets
                op.setdefault("more_requests", []).append(body)
            elif body is not None:
                op["request"] = body
        return answer

    def get(self, template: str, expect: int = 200, params: dict | None = None, **path: Any):
        return self.call("GET", template, expect, params=params, **path)

    def post(self, template: str, expect: int = 200, body: Any = None, **path: Any) -> Any:
        return self.call("POST", template, expect, body, **path)

    def patch(self, template: str, expect: int = 200, body: Any = None, **path: Any) -> Any:
        return self.call("PATCH", template, expect, body, **path)

    def delete(self, template: str, expect: int = 200, **path: Any) -> Any:
        return self.call("DELETE", template, expect, **path)


# The 404 of operations that name what is missing in the query or body, not the path.
MISSING_QUERY = {
    "GET /api/v1/figures/compare": {"runs": "999999"},
    "GET /api/v1/keys": {"user": "nobody"},
}
MISSING_BODY = {
    "POST /api/v1/keys": {"user": "nobody"},
    "PATCH /api/v1/users/{name}": {"role": "member"},
    "PATCH /api/v1/schedules/{schedule_id}": {"enabled": True},
}
# The 422 of operations whose path names something by a string.
BAD_PATH = {
    "PATCH /api/v1/users/{name}": {"name": "admin"},  # with a body that is no update
    "POST /api/v1/keys/{prefix}/revoke": {"prefix": "pb_" + "x" * 70},
}


def readme_sweep() -> dict[str, Any]:
    """The sweep of README.md's "Running a sweep" (the quickstart, written short)."""
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return yaml.safe_load(next(b for b in blocks if b.startswith("name: quickstart")))


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "examples" / name).read_text())


def accounts(admin: Recorder) -> str:
    """Users and keys; returns the key of ada, a member."""
    admin.get("/health")
    admin.get("/ready")
    admin.get("/me")
    admin.post("/users", 201, {"name": "ada", "role": "member"})
    admin.post("/users", 409, {"name": "ada", "role": "member"})
    admin.post("/users", 422, {"name": "bo", "role": "owner"})
    key = admin.post("/keys", 201, {"user": "ada", "name": "laptop"})["key"]
    admin.post("/keys", 404, {"user": "cy", "name": "ci"})
    spare = admin.post("/keys", 201, {"user": "ada", "name": "old"})
    admin.post("/keys/{prefix}/revoke", prefix=spare["prefix"])
    admin.post("/keys/{prefix}/revoke", 404, prefix="pb_missing")
    admin.get("/keys")
    admin.get("/keys", params={"user": "ada", "revoked": True})
    admin.get("/users")
    admin.patch("/users/{name}", 200, {"role": "member"}, name="ada")
    admin.patch("/users/{name}", 404, {"role": "member"}, name="cy")
    admin.patch("/users/{name}", 409, {"role": "viewer"}, name="admin")
    return key


def reads(admin: Recorder, sweep_id: int, probed_id: int, study_id: int) -> None:
    """Every read, on the finished sweeps and study."""
    admin.get(
        "/sweeps/{sweep_id}/runs", params={"status": "succeeded", "limit": 3}, sweep_id=sweep_id
    )
    # Two runs of the probed sweep (examples/deep_linear_init_scale.yaml): scales 0.35, 0.2.
    probed = admin.client.get(f"{API}/sweeps/{probed_id}/runs", headers=admin.headers).json()
    run_id, other = probed["data"][4]["id"], probed["data"][8]["id"]
    admin.get("/sweeps", params={"limit": 2})
    admin.get("/sweeps/{sweep_id}", sweep_id=sweep_id)
    admin.get("/sweeps/{sweep_id}", 404, sweep_id=999)
    admin.get("/sweeps/{sweep_id}/figures", params={"by": "init"}, sweep_id=sweep_id)
    admin.get("/runs", params={"status": "succeeded", "limit": 2})
    admin.get("/runs", 422, params={"status": "succeded"})
    admin.get("/runs/{run_id}", run_id=run_id)
    admin.get("/runs/{run_id}", 404, run_id=99999)
    probes = admin.get("/runs/{run_id}/probes", run_id=run_id)
    admin.get("/runs/{run_id}/figures", params={"probe": probes["count"] - 1}, run_id=run_id)
    admin.get("/figures/compare", params={"runs": f"{run_id},{other}"})
    admin.get("/studies")
    admin.get("/studies/{study_id}", study_id=study_id)
    admin.get("/studies/{study_id}/figures", study_id=study_id)
    admin.get("/leaderboard", params={"task": "digits", "limit": 3})
    admin.get("/leaderboard", 422, params={"task": "digit"})
    admin.get("/leaderboard.csv", params={"task": "digits", "limit": 3})
    # Every filter at once (the answers above are the examples; these add parameters).
    import torch

    every_filter = {
        "task": "digits", "architecture": "mlp", "metric": "final_loss", "order": "asc",
        "since": "2026-11-01", "sweep": sweep_id, "owner": "ada",
        "torch_version": torch.__version__.split("+")[0], "device": "cpu",
    }  # fmt: skip
    admin.get("/leaderboard", params=every_filter)
    admin.get("/leaderboard.csv", params=every_filter)


def changes(admin: Recorder, ada: Recorder, sweep_id: int, study: dict[str, Any]) -> None:
    """Cancel, retry, delete: on sweeps and studies submitted for it."""
    second = ada.post("/sweeps", 201, readme_sweep())
    admin.delete("/sweeps/{sweep_id}", 409, sweep_id=study["sweep_id"])  # a study's trials
    ada.post("/sweeps/{sweep_id}/cancel", sweep_id=second["id"])
    ada.post("/sweeps/{sweep_id}/retry", 409, sweep_id=second["id"])  # cancelled
    ada.post("/sweeps/{sweep_id}/retry", sweep_id=sweep_id)
    ada.delete("/sweeps/{sweep_id}", sweep_id=second["id"])
    again = ada.post("/studies", 201, example("search_deep_linear.yaml"))
    ada.post("/studies/{study_id}/cancel", study_id=again["id"])
    full = ada.post("/sweeps", 201, EVERY_FIELD_SWEEP)
    ada.post("/sweeps/{sweep_id}/cancel", sweep_id=full["id"])
    saddle = ada.post("/sweeps", 201, example("saddle_escape.yaml"))  # the saddle init
    ada.post("/sweeps/{sweep_id}/cancel", sweep_id=saddle["id"])
    full = ada.post("/studies", 201, EVERY_FIELD_STUDY)
    ada.post("/studies/{study_id}/cancel", study_id=full["id"])
    admin.patch("/users/{name}", 200, {"disabled": False}, name="ada")
    admin.get("/audit", params={"limit": 3})
    admin.get("/audit", params={"action": "sweep.cancel", "actor": "ada"})


def schedules(admin: Recorder, ada: Recorder) -> None:
    """examples/nightly.yaml as a schedule, fired now, edited, paused; a study on a schedule."""
    nightly = example("nightly.yaml") | {"webhook_url": WEBHOOK}
    made = ada.post("/schedules", 201, nightly)
    ada.post("/schedules", 422, nightly | {"cron": "0 25 * * *"})
    fired = ada.post("/schedules/{schedule_id}/run", 201, schedule_id=made["id"])
    ada.post("/schedules/{schedule_id}/run", 409, schedule_id=made["id"])  # night 0 queued
    ada.post("/sweeps/{sweep_id}/cancel", sweep_id=fired["sweep_id"])
    edited = nightly["spec"] | {"seeds": [0, 1, 2, 3]}
    ada.patch("/schedules/{schedule_id}", 200, {"spec": edited}, schedule_id=made["id"])
    every_field = {
        "name": "nightly watch, weekdays",
        "cron": "30 3 * * 1-5",
        "timezone": "UTC",
        "catch_up": "none",
        "compare_nights": 7,
        "keep_curves_nights": 30,
        "webhook_url": WEBHOOK,
        "enabled": False,
    }
    ada.patch("/schedules/{schedule_id}", 200, every_field, schedule_id=made["id"])
    ada.get("/schedules/{schedule_id}", schedule_id=made["id"])
    study = {
        "name": "nightly search",
        "kind": "study",
        "cron": "0 4 * * 6",
        "timezone": "Europe/Berlin",
        "spec": example("search_deep_linear.yaml"),
        "enabled": False,
    }
    weekly = ada.post("/schedules", 201, study)
    admin.get("/schedules", params={"limit": 10})
    ada.get("/schedules/{schedule_id}/alerts", schedule_id=made["id"])
    ada.get("/schedules/{schedule_id}/figures", schedule_id=made["id"])
    ada.delete("/schedules/{schedule_id}", schedule_id=weekly["id"])


def errors(rec: Recorder, document: dict[str, Any]) -> None:
    """A 404 and a 422 of every operation that documents one and was not answered one in
    the session: a missing id or name for the 404, a malformed one (or a bad query value
    or body) for the 422."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            key = f"{method.upper()} {path}"
            have = rec.operations.get(key, {}).get("responses", {})
            params = operation.get("parameters", [])
            in_path = {p["name"]: p for p in params if p["in"] == "path"}
            body = "requestBody" in operation
            short = path.removeprefix(API)
            if "404" in operation["responses"] and "404" not in have:
                missing = {
                    n: 999999 if p["schema"].get("type") == "integer" else "nobody"
                    for n, p in in_path.items()
                }
                rec.call(method.upper(), short, 404, MISSING_BODY.get(key) if body else None,
                         MISSING_QUERY.get(key), **missing)  # fmt: skip
            if "422" in operation["responses"] and "422" not in have:
                names = {p["name"] for p in params}
                query = None
                if key in BAD_PATH:
                    bad = BAD_PATH[key]
                elif in_path:
                    bad = {n: "seven" for n in in_path}  # an id that is no integer
                else:  # a page of no items, or a flag that is no boolean
                    bad, query = {}, {"limit": 0} if "limit" in names else {"revoked": "maybe"}
                rec.call(method.upper(), short, 422, {"unknown": 1} if body else None, query, **bad)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    from fastapi.testclient import TestClient

    from db.migrate import upgrade
    from service import studies
    from service.api.main import create_app
    from service.cli import unfinished_runs
    from service.dispatcher import Dispatcher, init_ray
    from service.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/recorder.db"
        upgrade(url)
        settings = Settings(
            database_url=url,
            admin_key=ADMIN_KEY,
            poll_seconds=0.1,
            webhook_allowed_hosts="127.0.0.1",
            schedule=False,
        )
        app = create_app(settings, dispatch=False)
        with TestClient(app, base_url=BASE) as client:
            admin = Recorder(client, {"Authorization": f"Bearer {ADMIN_KEY}"})
            ada = admin.as_user(accounts(admin))
            # The README's sweep and study and a probed sweep, submitted by ada (a member).
            sweep = ada.post("/sweeps", 201, readme_sweep())
            probed = ada.post("/sweeps", 201, example("deep_linear_init_scale.yaml"))
            typo = dict(readme_sweep(), optimizers=[{"name": "adma", "lr": 0.001}])
            ada.post("/sweeps", 422, typo)
            study = ada.post("/studies", 201, example("search_deep_linear.yaml"))
            ada.post("/studies", 422, dict(example("search_deep_linear.yaml"), n_trials=0))

        init_ray(settings, log_to_driver=False)
        dispatcher = Dispatcher(settings)

        def done() -> bool:
            waiting = sum(unfinished_runs(url, sweep["id"])) + sum(
                unfinished_runs(url, probed["id"])
            )
            return (
                waiting == 0
                and studies.progress(url=url, study_id=study["id"])["state"] != "running"
            )

        dispatcher.run(until=done, timeout=900)
        _, confirm_id = studies.confirm(settings=settings, study_id=study["id"])
        dispatcher.run(until=lambda: sum(unfinished_runs(url, confirm_id)) == 0, timeout=600)

        with TestClient(app, base_url=BASE) as client:
            admin.client = ada.client = client
            reads(admin, sweep["id"], probed["id"], study["id"])
            changes(admin, ada, sweep["id"], study)
            schedules(admin, ada)
            errors(admin, app.openapi())

    document = {
        "recorded_with": "scripts/record_api_examples.py",
        "operations": dict(sorted(admin.operations.items())),
    }
    EXAMPLES.write_text(json.dumps(document, indent=1) + "\n")
    print(f"{len(admin.operations)} operations recorded in {EXAMPLES.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
