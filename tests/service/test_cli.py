"""The `plateau` CLI as a user runs it (subprocesses), and the API process staying light."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT, plateau_cmd
from tests.service.conftest import QUICK_SPEC


def plateau(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run(
        plateau_cmd(*args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def test_the_api_process_never_imports_torch():
    code = (
        "import sys; import service.api.main, service.cli, service.dispatcher, "
        "service.studies; print(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('torch', 'ray'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import json; " + code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == []


@pytest.mark.parametrize(
    "content,message",
    [
        ("name: x\ntask: [unclosed", "spec.yaml, line 2, column 16: not valid YAML/JSON"),
        ("name: x\n  bad: indent", "spec.yaml, line 2, column 6: not valid YAML/JSON"),
        ("- a list\n- not a mapping", "must hold a mapping"),
        (
            yaml.safe_dump(QUICK_SPEC | {"optimizers": [{"name": "adamm", "lr": 0.1}]}),
            "optimizers.0",
        ),
        (yaml.safe_dump(QUICK_SPEC | {"budget": {"steps": -5}}), "budget.steps"),
    ],
)
def test_bad_specs_exit_2_with_a_message_naming_the_problem(tmp_path, content, message):
    # A long path: the message must come out whole, not wrapped at the terminal's width.
    spec = tmp_path / ("a-long-folder-name-" * 8) / "spec.yaml"
    spec.parent.mkdir()
    spec.write_text(content)
    result = plateau("run", str(spec), env={"DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "x.db").exists()  # nothing written


def test_a_missing_spec_file_is_named(tmp_path):
    result = plateau("run", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "nope.yaml" in result.stderr


def test_submit_to_an_unreachable_service_says_so():
    result = plateau("submit", "examples/quickstart.yaml", "--url", "http://127.0.0.1:9")
    assert result.returncode == 2 and "cannot reach" in result.stderr


@pytest.mark.ray
@pytest.mark.slow
def test_plateau_run_prints_the_ranked_table(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(QUICK_SPEC))
    db = tmp_path / "embedded.db"
    result = plateau(
        "run",
        str(spec),
        env={"DATABASE_URL": f"sqlite:///{db}", "PLATEAU_RAY_NUM_CPUS": "2", "RAY_ADDRESS": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "finished" in result.stdout and "{'succeeded': 8}" in result.stdout
    rows = [line.split("│") for line in result.stdout.splitlines() if line.startswith("│")]
    ranks = [row[1].strip() for row in rows if row[1].strip()]  # a wrapped setting's next
    # lines have no rank
    assert ranks == [str(i) for i in range(1, 9)]
    assert db.exists()
