"""/openapi.json as a client that reads nothing else sees it: every operation and field
described, closed sets as enums, typed study answers, the 4xx answers documented (with the
shape the app really sends), the CSV as text/csv, and the README's short forms accepted by
the request body's schema."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from fastapi.testclient import TestClient

from db.leaderboard import METRICS
from db.models import RUN_STATUSES
from service.schemas import ValidationProblems
from tests.service.conftest import QUICK_SPEC

README = Path(__file__).parents[2] / "README.md"
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def document(sqlite_client: TestClient) -> dict[str, Any]:
    r = sqlite_client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method, path, operation


def properties(schema: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property of every object schema nested in `schema`, with where it is."""
    if isinstance(schema, dict):
        for name, prop in (schema.get("properties") or {}).items():
            yield f"{where}.{name}", prop
        for key, value in schema.items():
            yield from properties(value, f"{where}/{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            yield from properties(value, f"{where}[{i}]")


def undescribed(document: dict[str, Any]) -> list[str]:
    missing = []
    for method, path, operation in operations(document):
        if not operation.get("description"):
            missing.append(f"{method.upper()} {path}")
        for parameter in operation.get("parameters", []):
            if not parameter.get("description"):
                missing.append(f"{method.upper()} {path} ?{parameter['name']}")
    for where, prop in properties(document["components"]["schemas"], "#"):
        if not prop.get("description"):
            missing.append(where)
    for method, path, operation in operations(document):
        for where, prop in properties(operation, f"{method} {path}"):
            if not prop.get("description"):
                missing.append(where)
    return missing


def test_every_operation_and_field_is_described(document):
    n_operations = sum(1 for _ in operations(document))
    n_properties = sum(1 for _ in properties(document["components"]["schemas"], "#"))
    assert n_operations >= 25 and n_properties >= 300  # the count covers the whole document
    assert undescribed(document) == []


def test_the_count_finds_a_field_without_description(document):
    document["components"]["schemas"]["SweepCreated"]["properties"]["id"].pop("description")
    del document["paths"]["/api/v1/sweeps"]["post"]["description"]
    assert undescribed(document) == ["POST /api/v1/sweeps", "#/SweepCreated.id"]


def without_example(document: dict[str, Any]) -> list[str]:
    """What has no example: request bodies, answers (every documented status and media
    type), parameters, and the fields of every schema."""
    missing = []
    for method, path, operation in operations(document):
        where = f"{method.upper()} {path}"
        for parameter in operation.get("parameters", []):
            if "example" not in parameter and "examples" not in parameter.get("schema", {}):
                missing.append(f"{where} ?{parameter['name']}")
        for media, content in operation.get("requestBody", {}).get("content", {}).items():
            if "example" not in content:
                missing.append(f"{where} body {media}")
        for status, answer in operation["responses"].items():
            for media, content in answer.get("content", {}).items():
                if "example" not in content:
                    missing.append(f"{where} {status} {media}")
        for field, prop in properties(operation, where):
            if "examples" not in prop:
                missing.append(field)
    for where, prop in properties(document["components"]["schemas"], "#"):
        if "examples" not in prop:
            missing.append(where)
    return missing


def test_every_operation_and_field_has_an_example(document):
    bodies = [
        content
        for _, _, operation in operations(document)
        for answer in [operation.get("requestBody", {}), *operation["responses"].values()]
        for content in answer.get("content", {}).values()
    ]
    assert len(bodies) >= 80  # requests and answers of 30 operations, errors included
    assert without_example(document) == []


def test_the_example_count_finds_a_missing_one(document):
    document["components"]["schemas"]["SweepCreated"]["properties"]["id"].pop("examples")
    answers = document["paths"]["/api/v1/sweeps/{sweep_id}"]["get"]["responses"]
    answers["404"]["content"]["application/json"].pop("example")
    assert without_example(document) == [
        "GET /api/v1/sweeps/{sweep_id} 404 application/json",
        "#/SweepCreated.id",
    ]


def validator_of(document: dict[str, Any], node: dict[str, Any]) -> jsonschema.Validator:
    """A JSON-schema validator of one schema node, resolving the document's $refs."""
    return jsonschema.Draft202012Validator({**node, "components": document["components"]})


def test_the_recorded_examples_are_what_the_schema_describes(document):
    """The examples come from a recorded session (scripts/record_api_examples.py); a change
    of the API that makes them stale fails here: record them again."""
    checked = 0
    for method, path, operation in operations(document):
        answers = [(s, a) for s, a in operation["responses"].items()]
        for status, answer in [("body", operation.get("requestBody", {})), *answers]:
            content = answer.get("content", {}).get("application/json")
            if content is None:
                continue
            errors = list(validator_of(document, content["schema"]).iter_errors(content["example"]))
            assert errors == [], (method, path, status, [e.message[:200] for e in errors[:3]])
            checked += 1
    for where, prop in properties(document["components"]["schemas"], "#"):
        for example in prop["examples"]:
            errors = list(validator_of(document, prop).iter_errors(example))
            assert errors == [], (where, example, [e.message[:200] for e in errors[:3]])
            checked += 1
    assert checked >= 500


def test_the_sweep_example_is_the_readmes(document):
    body = document["paths"]["/api/v1/sweeps"]["post"]["requestBody"]["content"]
    assert body["application/json"]["example"] == readme_sweep()


def schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    return document["components"]["schemas"][name]


def enum_of(document: dict[str, Any], prop: dict[str, Any]) -> list[Any]:
    """The enum of a property, through $ref, anyOf (nullable) and additionalProperties' keys."""
    if "$ref" in prop:
        return enum_of(document, schema(document, prop["$ref"].rsplit("/", 1)[1]))
    for key in ("anyOf", "oneOf"):
        if key in prop:
            return [v for option in prop[key] for v in enum_of(document, option)]
    if "const" in prop:
        return [prop["const"]]
    return list(prop.get("enum", []))


def test_statuses_verdicts_and_metrics_are_enums(document):
    from workers.diagnose import VERDICTS

    run_status = enum_of(document, schema(document, "RunPublic")["properties"]["status"])
    assert tuple(run_status) == RUN_STATUSES
    sweep_status = schema(document, "SweepPublic")["properties"]["status"]
    assert set(enum_of(document, sweep_status)) == {"queued", "running", "finished", "cancelled"}
    assert set(enum_of(document, schema(document, "StudyPublic")["properties"]["state"])) == {
        "running",
        "finished",
        "cancelled",
    }
    trial_state = schema(document, "TrialPublic")["properties"]["state"]
    assert set(enum_of(document, trial_state)) == {
        "running",
        "waiting",
        "complete",
        "pruned",
        "fail",
    }
    verdict = enum_of(document, schema(document, "Diagnosis")["properties"]["verdict"])
    assert tuple(verdict) == VERDICTS
    verdict_keys = schema(document, "LeaderboardRow")["properties"]["verdicts"]["propertyNames"]
    assert set(enum_of(document, verdict_keys)) == {*verdict, "none"}
    leaderboard = document["paths"]["/api/v1/leaderboard"]["get"]["parameters"]
    metric = next(p for p in leaderboard if p["name"] == "metric")
    assert set(enum_of(document, metric["schema"])) == set(METRICS)
    runs = document["paths"]["/api/v1/sweeps/{sweep_id}/runs"]["get"]["parameters"]
    status = next(p for p in runs if p["name"] == "status")
    assert tuple(enum_of(document, status["schema"])) == RUN_STATUSES


def test_registry_names_are_examples_not_enums(document):
    from service.spec import ARCHITECTURE_NAMES, TASK_NAMES

    leaderboard = document["paths"]["/api/v1/leaderboard"]["get"]["parameters"]
    task = next(p for p in leaderboard if p["name"] == "task")
    assert enum_of(document, task["schema"]) == []
    assert set(task["schema"]["examples"]) == set(TASK_NAMES) >= {"digits"}
    sweep = schema(document, "SweepSpec")["properties"]
    short_task = [o for o in sweep["task"]["anyOf"] if o.get("type") == "string"]
    assert short_task and "digits" in short_task[0]["examples"] and "enum" not in short_task[0]
    short_arch = [o for o in sweep["architectures"]["items"]["anyOf"] if o.get("type") == "string"]
    assert set(short_arch[0]["examples"]) == set(ARCHITECTURE_NAMES)


def test_union_members_require_their_name(document):
    """A client builds a valid entry only if the discriminator is required."""
    for name in ("SGDOptim", "AdamOptim", "DigitsTask", "MLPArch", "DefaultInit", "NormalInit"):
        assert "name" in schema(document, name)["required"], name
        assert "const" in schema(document, name)["properties"]["name"]


def test_study_endpoints_answer_typed_models(document, sqlite_client):
    def response(path: str, method: str, status: str = "200") -> str:
        content = document["paths"][path][method]["responses"][status]["content"]
        return content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]

    assert response("/api/v1/studies", "post", "201") == "StudyCreated"
    assert response("/api/v1/studies", "get") == "StudiesPublic"
    assert response("/api/v1/studies/{study_id}", "get") == "StudyDetail"
    assert response("/api/v1/studies/{study_id}/cancel", "post") == "StudyCancelled"
    from tests.service.test_limits import STUDY

    created = sqlite_client.post("/api/v1/studies", json=STUDY)
    assert created.status_code == 201, created.text
    study = sqlite_client.get(created.json()["url"]).json()
    assert study["state"] == "running" and study["trials"] == [] and study["best_trial"] is None
    listed = sqlite_client.get("/api/v1/studies").json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == study["id"]
    cancelled = sqlite_client.post(f"/api/v1/studies/{study['id']}/cancel").json()
    assert cancelled == {"id": study["id"], "state": "cancelled"}


def test_404_409_and_422_are_documented(document):
    for method, path, operation in operations(document):
        responses = operation["responses"]
        if "{" in path and path.startswith("/api/v1/") and path != "/api/v1/me":
            assert "404" in responses, (method, path)
        if operation.get("parameters") or "requestBody" in operation:
            problem = responses.get("422", {}).get("content", {}).get("application/json", {})
            assert problem.get("schema", {}).get("$ref", "").endswith("/ValidationProblems"), (
                method,
                path,
            )
    sweep = document["paths"]["/api/v1/sweeps/{sweep_id}"]
    assert "409" in sweep["delete"]["responses"]
    assert "409" in document["paths"]["/api/v1/sweeps/{sweep_id}/retry"]["post"]["responses"]
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_documented_4xx_bodies_are_what_the_app_sends(sqlite_client):
    bad = [
        sqlite_client.post("/api/v1/sweeps", json={**QUICK_SPEC, "seeds": [0, 0]}),
        sqlite_client.get("/api/v1/leaderboard", params={"limit": 0}),
        sqlite_client.get("/api/v1/runs/0"),
    ]
    for r in bad:
        assert r.status_code == 422, r.text
        ValidationProblems.model_validate(r.json())
    missing = sqlite_client.get("/api/v1/sweeps/999999")
    assert missing.status_code == 404 and set(missing.json()) == {"detail"}


def test_the_csv_is_declared_and_sent_as_text_csv(document, sqlite_client):
    answers = document["paths"]["/api/v1/leaderboard.csv"]["get"]["responses"]
    assert list(answers["200"]["content"]) == ["text/csv"]
    r = sqlite_client.get("/api/v1/leaderboard.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")


def readme_sweep() -> dict[str, Any]:
    """The sweep spec of README.md's "Running a sweep" (its YAML block), as a document."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    text = next(b for b in blocks if b.startswith("name: quickstart"))
    return yaml.safe_load(text)


def body_validator(document: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    """A JSON-schema validator of one component, resolving the document's $refs."""
    root = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema.Draft202012Validator(root)


def test_the_readme_example_matches_the_request_schema(document, sqlite_client):
    spec = readme_sweep()
    assert spec["inits"][0] == "default" and spec["grad_clip"] == [None, 1.0]
    assert spec["task"] == "digits"
    validator = body_validator(document, "SweepSpec")
    assert list(validator.iter_errors(spec)) == []
    r = sqlite_client.post("/api/v1/sweeps", json=spec)
    assert r.status_code == 201, r.text
    # What the server refuses for its shape, the schema refuses too.
    for bad in (
        {**spec, "optimizers": [{"lr": 0.1}]},  # no name: no member of the union
        {**spec, "grad_clip": [-1.0]},
        {**spec, "normalization": ["groupnorm"]},
        {**spec, "inits": [3]},
    ):
        assert list(validator.iter_errors(bad)), bad
        assert sqlite_client.post("/api/v1/sweeps", json=bad).status_code == 422
