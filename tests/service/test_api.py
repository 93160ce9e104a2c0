"""REST contract of sweeps and runs, on SQLite and Postgres (no dispatcher: runs stay queued)."""

from __future__ import annotations

import copy

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from db.models import Run, Sweep
from db.session import session_scope
from service.api.main import create_app
from service.settings import Settings
from tests.service.conftest import QUICK_SPEC


def count_rows(url: str) -> tuple[int, int]:
    with session_scope(url) as s:
        return (
            s.scalar(select(func.count()).select_from(Sweep)),
            s.scalar(select(func.count()).select_from(Run)),
        )


def test_post_sweep_expands_the_grid(client, settings):
    r = client.post("/api/v1/sweeps", json=QUICK_SPEC)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["runs"] == 2 * 2 * 2 and body["id"] >= 1
    assert count_rows(settings.database_url) == (1, 8)

    sweep = client.get(f"/api/v1/sweeps/{body['id']}").json()
    assert sweep["status"] == "queued" and sweep["counts"] == {"queued": 8}
    assert sweep["progress"] == 0.0 and sweep["spec"]["name"] == "tiny"

    runs = client.get(f"/api/v1/sweeps/{body['id']}/runs", params={"limit": 5}).json()
    assert runs["count"] == 8 and len(runs["data"]) == 5
    hashes = {
        r["config_hash"] for r in client.get(f"/api/v1/sweeps/{body['id']}/runs").json()["data"]
    }
    assert len(hashes) == 8  # every grid point is a distinct configuration

    run = client.get(f"/api/v1/runs/{runs['data'][0]['id']}").json()
    assert run["status"] == "queued" and run["attempts"] == 0
    assert run["config"]["task"]["name"] == "digits" and run["result"] is None


def test_identical_configs_hash_alike_across_sweeps(client):
    a = client.post("/api/v1/sweeps", json=QUICK_SPEC).json()["id"]
    b = client.post("/api/v1/sweeps", json=QUICK_SPEC | {"name": "again"}).json()["id"]
    ha = [r["config_hash"] for r in client.get(f"/api/v1/sweeps/{a}/runs").json()["data"]]
    hb = [r["config_hash"] for r in client.get(f"/api/v1/sweeps/{b}/runs").json()["data"]]
    assert ha == hb


def test_list_and_cancel(client):
    ids = [client.post("/api/v1/sweeps", json=QUICK_SPEC).json()["id"] for _ in range(3)]
    listing = client.get("/api/v1/sweeps", params={"limit": 2}).json()
    assert listing["count"] == 3 and [s["id"] for s in listing["data"]] == ids[::-1][:2]
    cancelled = client.post(f"/api/v1/sweeps/{ids[0]}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["counts"] == {"cancelled": 8}


def test_missing_resources_are_404(client):
    assert client.get("/api/v1/sweeps/999").status_code == 404
    assert client.get("/api/v1/runs/999").json() == {"detail": "run 999 not found"}
    assert client.post("/api/v1/sweeps/999/cancel").status_code == 404


def test_openapi_and_health(client):
    assert "/api/v1/sweeps" in client.get("/openapi.json").json()["paths"]
    health = client.get("/api/v1/health").json()
    assert health["database"]["ok"] is True
    ready = client.get("/api/v1/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True


@pytest.mark.postgres
def test_a_lost_database_makes_the_api_unready_but_alive(pg_migrated_url):
    """The database disappears under a running app: readiness answers 503 with the
    database's error (the load balancer stops routing here); health still answers 200."""
    from sqlalchemy import create_engine, text

    from db.session import dispose_engines
    from tests.conftest import ADMIN_URL

    settings = Settings(database_url=pg_migrated_url, lease_seconds=10, poll_seconds=0.2)
    with TestClient(create_app(settings, dispatch=False)) as client:
        assert client.get("/api/v1/ready").status_code == 200
        dispose_engines()
        admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            name = pg_migrated_url.rsplit("/", 1)[1]
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
        ready = client.get("/api/v1/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json()["ready"] is False and name in ready.json()["database"]["error"]
        health = client.get("/api/v1/health")
        assert health.status_code == 200 and health.json()["status"] == "degraded"


def _with(path: str, value):
    spec = copy.deepcopy(QUICK_SPEC)
    node = spec
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node[k]
    last = keys[-1]
    if value is _DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return spec


_DELETE = object()

BAD_INPUTS = [
    # (what is wrong, spec, a fragment of the error's location, a fragment of its message)
    (
        "unknown optimizer",
        _with("optimizers.0", {"name": "adamm", "lr": 0.1}),
        "optimizers.0.name",
        "unknown optimizer 'adamm'; did you mean 'adam' or 'adamw'? (known: adagrad, adam,",
    ),
    (
        "misspelled optimizer",
        _with("optimizers.1", {"name": "adma", "lr": 0.1}),
        "optimizers.1.name",
        "unknown optimizer 'adma'; did you mean 'adam'",
    ),
    ("unknown init", _with("inits.0", "glorot"), "inits.0.name", "(known: default, kaiming_"),
    ("misspelled init", _with("inits.1", "orthogonl"), "inits.1.name", "mean 'orthogonal'?"),
    ("unknown task", _with("task", "mnist"), "task.name", "unknown task 'mnist' (known: de"),
    ("misspelled task", _with("task", "digit"), "task.name", "did you mean 'digits'?"),
    (
        "unknown architecture",
        _with("architectures.0", {"name": "vit"}),
        "architectures.0.name",
        "unknown architecture 'vit' (known: cnn, deep_linear, mlp,",
    ),
    (
        "misspelled architecture",
        _with("architectures.0", "mpl"),
        "architectures.0.name",
        "unknown architecture 'mpl'; did you mean 'mlp'?",
    ),
    (
        "unknown normalization",
        _with("normalization", ["groupnorm"]),
        "normalization.0",
        "unknown normalization 'groupnorm' (known: batchnorm, layernorm, none)",
    ),
    (
        "misspelled normalization",
        _with("normalization", ["batchnrom"]),
        "normalization.0",
        "did you mean 'batchnorm'?",
    ),
    ("zero lr", _with("optimizers.0", {"name": "sgd", "lr": 0}), "lr", "greater than 0"),
    ("negative lr", _with("optimizers.1", {"name": "adam", "lr": -1}), "lr", "greater than 0"),
    ("zero steps", _with("budget", {"steps": 0}), "steps", "greater than or equal to 1"),
    ("empty optimizers", _with("optimizers", []), "optimizers", "at least 1"),
    ("empty seeds", _with("seeds", []), "seeds", "at least 1"),
    ("empty architectures", _with("architectures", []), "architectures", "at least 1"),
    ("missing task", _with("task", _DELETE), "task", "required"),
    ("unknown field", _with("optimisers", []), "optimisers", "not permitted"),
    ("grid too large", _with("seeds", list(range(300))), "body", "grid: "),
    # settings that landscape papers use, with the combinations that cannot run
    (
        "one Hutchinson vector",
        _with("probes", {"at": ["end"], "hutchinson_vectors": 1}),
        "hutchinson_vectors",
        "greater than or equal to 2",
    ),
    (
        "probe cadence beyond the budget",
        _with("probes", {"every": 500}) | {"budget": {"steps": 30}},
        "body",
        "probes.every: 500",
    ),
    (
        "cross-entropy on a regression task",
        _with("task", "deep_linear") | {"loss": "cross_entropy"},
        "body",
        "loss: 'cross_entropy' needs class labels",
    ),
    ("unknown loss", _with("loss", "hinge"), "loss", "unknown loss 'hinge' (known: cross_entropy"),
    ("misspelled loss", _with("loss", "mes"), "loss", "did you mean 'mse'?"),
    ("duplicate seeds", _with("seeds", [0, 0]), "seeds", "seeds[1] repeats seeds[0] (0)"),
    (
        "duplicate inits",
        _with("inits", ["default", {"name": "normal"}, {"name": "normal", "std": 0.01}]),
        "inits",
        'inits[2] repeats inits[1] ({"name": "normal", "scale": 1.0',
    ),
    (
        "duplicate optimizers",
        _with("optimizers.1", {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0}),
        "optimizers",
        'optimizers[1] repeats optimizers[0] ({"name": "sgd", "lr": 0.1',
    ),
    (
        "duplicate clipping",
        _with("grad_clip", [1.0, {"threshold": 1}]),
        "grad_clip",
        "grad_clip[1]",
    ),
    ("duplicate normalization", _with("normalization", ["none", "none"]), "normalization", "[1]"),
    (
        "duplicate architectures",
        _with("architectures", ["mlp", {"name": "mlp", "depth": 2}]),
        "architectures",
        "architectures[1] repeats architectures[0]",
    ),
    (
        "training subset larger than the split",
        _with("task", {"name": "digits", "n_train": 1700}),
        "task",
        "n_train=1700 exceeds the 1438 training samples",
    ),
    ("unknown probe", _with("probes", {"measure": ["hessian"]}), "measure", "eigenvalues"),
    ("divergence factor 1", _with("divergence", {"factor": 1}), "factor", "greater than 1"),
    (
        "cnn on a vector task",
        _with("task", "parity") | {"architectures": [{"name": "cnn"}]},
        "body",
        "cannot read the vector inputs",
    ),
]


@pytest.mark.parametrize("what,spec,loc,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_422_naming_the_field_and_writes_nothing(
    client, settings, what, spec, loc, message
):
    r = client.post("/api/v1/sweeps", json=spec)
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert any(loc in ".".join(map(str, e["loc"])) and message in e["msg"] for e in errors), errors
    assert count_rows(settings.database_url) == (0, 0)


def test_malformed_json_is_422(client, settings):
    r = client.post(
        "/api/v1/sweeps",
        content=b'{"name": "x", "task": ',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "json_invalid"
    assert count_rows(settings.database_url) == (0, 0)
