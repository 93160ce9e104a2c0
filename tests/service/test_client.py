"""A client that knows only /openapi.json: pydantic models generated from the live document
(datamodel-code-generator), then the README's sweep example sent through them to a live
server and read back. A schema that rejects the README's short forms, answers that do not
parse into the documented models, or a document the generator cannot read fail it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from db.migrate import upgrade
from service.api.main import create_app
from service.settings import Settings
from tests.service.live import live_server
from tests.service.test_openapi import readme_sweep


def generate_client(document: str, folder: Path) -> ModuleType:
    """The models of `document` (OpenAPI JSON), generated and imported as a module."""
    source, models = folder / "openapi.json", folder / "plateau_client.py"
    source.write_text(document)
    command = [
        sys.executable, "-m", "datamodel_code_generator",
        "--input", str(source), "--input-file-type", "openapi",
        "--output", str(models), "--output-model-type", "pydantic_v2.BaseModel",
        "--target-python-version", "3.11",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    spec = importlib.util.spec_from_file_location("plateau_client", models)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves generic models through it
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def server(sqlite_url):
    upgrade(sqlite_url)
    app = create_app(Settings(database_url=sqlite_url, submit_rate_limit=""), dispatch=False)
    with live_server(app) as base:
        yield base


def test_a_generated_client_runs_the_readme_example(server, tmp_path):
    document = httpx.get(f"{server}/openapi.json").text
    client = generate_client(document, tmp_path)

    # The README's spec, short forms included, through the generated request model.
    example = readme_sweep()
    spec = client.SweepSpec.model_validate(example)
    assert spec.inits[0] == "default" and spec.grad_clip == [None, 1.0]
    body = spec.model_dump(mode="json", exclude_unset=True)
    r = httpx.post(f"{server}/api/v1/sweeps", json=body)
    assert r.status_code == 201, r.text
    created = client.SweepCreated.model_validate(r.json())
    assert created.runs == 24  # 2 optimizers x 3 inits x 2 normalizations x 2 clippings

    # Read back through the documented answers.
    sweep = client.SweepDetail.model_validate(httpx.get(created.url).json())
    assert sweep.id == created.id and sweep.n_runs == 24
    assert sweep.status.value == "queued"  # an enum in the client, not a free string
    assert sweep.spec["inits"][0] == {"name": "default", "scale": 1.0, "zeros_bias": False}
    runs = httpx.get(f"{server}/api/v1/sweeps/{created.id}/runs", params={"limit": 5})
    page = client.RunsPublic.model_validate(runs.json())
    assert page.count == 24 and {run.status.value for run in page.data} == {"queued"}

    # The documented 422 parses too, and names the field.
    bad = {**body, "seeds": [0, 0]}
    refused = httpx.post(f"{server}/api/v1/sweeps", json=bad)
    assert refused.status_code == 422
    problems = client.ValidationProblems.model_validate(refused.json())
    assert problems.detail[0].loc == ["body", "seeds"]

    # A body without the discriminator is refused by the client before it is sent.
    with pytest.raises(ValueError):
        client.SweepSpec.model_validate({**example, "optimizers": [{"lr": 0.1}]})
