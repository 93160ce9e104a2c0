"""What the `plateau` CLI says to a person (issue 12): versions, progress, next steps, help
that reads at 80 columns, and errors that name the bad value and the nearest good one."""

from __future__ import annotations

import itertools
import os
import subprocess

import pytest
import yaml

from tests.conftest import ROOT, plateau_cmd
from tests.service.conftest import QUICK_SPEC
from tests.service.test_cli import plateau


def early_breaks(text: str, width: int = 80) -> list[tuple[str, str]]:
    """Pairs of lines of a help text where the second line's first word would have fitted
    on the first: a sentence broken by a line break of its source, not by the width."""
    found = []
    lines = text.splitlines()
    for a, b in itertools.pairwise(lines):
        boxed = a.startswith("│") and b.startswith("│")
        a_in, b_in = (a[1:-1], b[1:-1]) if boxed else (a, b)
        if not a_in.strip() or not b_in.strip() or a.startswith(("╭", "╰")):
            continue
        start = len(b_in) - len(b_in.lstrip())
        if boxed and start <= 4:  # b begins a row of its own (an option, a command)
            continue
        if len(a_in) <= start or not a_in[start].strip() or a_in[start - 1 : start].strip():
            continue  # a has no text in b's column: b does not continue it
        word = b_in.split()[0]
        room = (width - 2 if boxed else width) - 1
        if not word.startswith("[") and len(a_in.rstrip()) + 1 + len(word) <= room:
            found.append((a, b))
    return found


def test_version_names_the_package_torch_and_its_device():
    result = plateau("--version")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("plateau-bench ") and ", torch 2." in line, line
    assert line.endswith((" on cpu", ")")), line  # "on cpu" or "on cuda (<device name>)"


@pytest.fixture
def queued_sweep(sqlite_url: str) -> str:
    """A SQLite database (its URL) holding sweep 1, QUICK_SPEC's 8 runs, all queued."""
    from db.migrate import upgrade
    from db.session import session_scope
    from service.spec import SweepSpec
    from service.sweeps import submit_sweep

    upgrade(sqlite_url)
    with session_scope(sqlite_url) as session:
        submit_sweep(
            session=session, spec=SweepSpec.model_validate(QUICK_SPEC), source="cli", max_attempts=1
        )
    return sqlite_url


def test_status_without_url_reads_the_database(queued_sweep):
    result = plateau("status", "1", env={"DATABASE_URL": queued_sweep})
    assert result.returncode == 0, result.stderr
    assert "sweep 1 'tiny': queued, {'queued': 8}" in result.stdout
    assert "cannot reach" not in result.stderr
    missing = plateau("status", "2", env={"DATABASE_URL": queued_sweep})
    assert missing.returncode == 2 and "sweep 2 not found" in missing.stderr


def test_status_with_url_asks_the_service():
    result = plateau("status", "1", "--url", "http://127.0.0.1:9")
    assert result.returncode == 2 and "cannot reach http://127.0.0.1:9" in result.stderr


def test_search_of_a_sweep_spec_points_to_run():
    result = plateau("search", "examples/quickstart.yaml")
    assert result.returncode == 2
    assert "examples/quickstart.yaml is a sweep spec (no search_space)" in result.stderr
    assert "`plateau run`" in result.stderr


@pytest.mark.parametrize(
    "spec,page",
    [("examples/quickstart.yaml", "/sweeps/3"), ("examples/search_deep_linear.yaml", "/studies/3")],
)
def test_submit_says_which_page_to_open(monkeypatch, spec, page):
    from typer.testing import CliRunner

    from service import cli

    class Answer:
        def json(self):
            return {"id": 3, "runs": 24, "trials": 30, "url": "/api/v1/..."}

    monkeypatch.setattr(cli, "_request", lambda method, url, **kw: Answer())
    result = CliRunner().invoke(cli.app, ["submit", spec, "--url", "http://lab:8000/"])
    assert result.exit_code == 0, result.output
    assert f"next: open http://lab:8000{page}" in result.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["leaderboard", "--metric", "stpes"],
            "--metric: unknown metric 'stpes'; did you mean 'steps'?",
        ),
        (
            ["leaderboard", "--task", "digit"],
            "--task: unknown task 'digit'; did you mean 'digits'?",
        ),
        (
            ["leaderboard", "--architecture", "mpl"],
            "unknown architecture 'mpl'; did you mean 'mlp'?",
        ),
        (["leaderboard", "--order", "up"], "--order: unknown order 'up' (known: asc, desc)"),
        (["plot", "1", "--format", "svgg"], "--format: unknown format 'svgg'; did you mean 'svg'?"),
    ],
)
def test_a_misspelled_option_value_is_named_with_the_nearest_valid_one(tmp_path, args, message):
    result = plateau(*args, env={"DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "x.db").exists()  # refused before the database is opened


def test_bad_option_values_are_named_as_options(tmp_path):
    result = plateau(
        "leaderboard", "--since", "yesterday", "--limit", "0",
        env={"DATABASE_URL": f"sqlite:///{tmp_path}/x.db"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "error: invalid option:",
        "  --since: Input should be a valid datetime or date, input is too short",
        "  --limit: Input should be greater than or equal to 1",
    ]


@pytest.mark.parametrize(
    "change,lines",
    [
        (
            {"optimizers": [{"name": "adma", "lr": 0.1}]},
            ["  optimizers.0 … unknown … 'adma'; did you mean 'adam'"],
        ),
        ({"initz": ["default"]}, ["initz: unknown field 'initz'; did you mean 'inits'?"]),
        (
            {"budget": {"steps": -5}, "seeds": "zero"},
            [
                "seeds: Input should be a valid list",
                "budget.steps: Input should be greater than or",
            ],
        ),
    ],
)
def test_spec_errors_are_one_line_per_field_without_pydantic_noise(tmp_path, change, lines):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(QUICK_SPEC | change))
    result = plateau("run", str(spec), env={"DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    assert result.returncode == 2, result.stderr
    problems = result.stderr.splitlines()
    assert problems[0] == "error: invalid spec:"
    assert len(problems) == 1 + len(lines), result.stderr
    for line, expected in zip(problems[1:], lines, strict=True):  # "…": anything between
        assert line.startswith("  "), result.stderr
        assert all(part in line for part in expected.split(" … ")), result.stderr
    assert "pydantic" not in result.stderr and "further information" not in result.stderr
    assert "Value error" not in result.stderr and "Input tag" not in result.stderr


def test_help_texts_wrap_at_80_columns_not_mid_sentence():
    import typer.main
    from typer.testing import CliRunner

    from service.cli import app

    def paths(command, path=()):
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            yield from paths(sub, (*path, name))

    runner = CliRunner()
    broken = {}
    for path in paths(typer.main.get_command(app)):
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        assert max(len(line) for line in result.output.splitlines()) <= 80, result.output
        if early_breaks(result.output):
            broken[" ".join(path) or "plateau"] = early_breaks(result.output)
    assert not broken


TINY_STUDY = {
    "name": "tiny-study",
    "task": {"name": "deep_linear", "n_train": 64, "singular_values": [4.0, 2.0]},
    "architecture": {"name": "deep_linear", "depth": 2, "width": 8},
    "fixed": {
        "optimizer": {"name": "sgd", "lr": 0.05},
        "budget": {"steps": 60, "batch_size": 64, "log_every": 10, "eval_every": 30},
        "target": {"loss": 0.5},
        "init": {"name": "orthogonal", "scale": 0.5},
    },
    "search_space": {"init": ["orthogonal", "normal"], "init_scale": [0.3, 1.0]},
    "objective": "steps_to_target",
    "n_trials": 3,
    "parallelism": 2,
    "sampler": {"name": "tpe", "seed": 0},
    "pruner": {"name": "none"},
    "confirm_seeds": [1],
}


@pytest.mark.ray
@pytest.mark.slow
def test_a_first_session_reads_well(tmp_path):
    """Issue 12, done-when 3: the quickstart, `run` of a study spec, `status` without a
    server, `--version` and three misspelled names, as a new user meets them."""
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path}/plateau.db",
        "PLATEAU_RAY_NUM_CPUS": "2",
        "RAY_ADDRESS": "",
        "PLATEAU": " ".join(plateau_cmd()),
    }
    sweep = tmp_path / "quick.yaml"
    spec = QUICK_SPEC | {"optimizers": [{"name": "sgd", "lr": 0.1, "momentum": 0.9}]}
    sweep.write_text(yaml.safe_dump(spec | {"grad_clip": [None]}))  # 2 runs

    quickstart = subprocess.run(
        ["bash", "scripts/quickstart.sh", str(sweep)],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, **env}, timeout=300,
    )  # fmt: skip
    assert quickstart.returncode == 0, quickstart.stderr[-3000:]
    assert "sweep 1 'tiny': finished, {'succeeded': 2}" in quickstart.stdout
    assert "std=0.01)" in quickstart.stdout and "…" not in quickstart.stdout
    assert "next: run `plateau serve` and open http://127.0.0.1:8000/sweeps/1" in quickstart.stderr
    assert "`plateau leaderboard` ranks the configurations" in quickstart.stderr
    # Ray starts quietly: neither its token-authentication warning nor its start-up note
    assert "Token authentication" not in quickstart.stderr
    assert "Started a local Ray instance" not in quickstart.stderr

    status = plateau("status", "1", env=env)  # no server: the database
    assert status.returncode == 0, status.stderr
    assert "sweep 1 'tiny': finished, {'succeeded': 2}" in status.stdout

    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(TINY_STUDY))
    search = plateau("run", str(study), env=env)
    assert search.returncode == 0, search.stderr[-3000:]
    assert "Extra inputs" not in search.stderr
    assert "is a study spec: running its search (`plateau search`)" in search.stderr
    progress = next(line for line in search.stdout.splitlines() if "complete," in line)
    assert "3/3" in progress and "pruned" in progress and "failed" in progress, progress
    assert "; best " in progress and "init_scale=" in progress, progress
    assert "best trial " in search.stdout and "speed-up of the best setting" in search.stdout
    assert "next: run `plateau serve` and open http://127.0.0.1:8000/studies/1" in search.stderr
    assert "Token authentication" not in search.stderr

    version = plateau("--version")
    assert version.returncode == 0 and version.stdout.startswith("plateau-bench ")

    adma = tmp_path / "adma.yaml"
    adma.write_text(yaml.safe_dump(QUICK_SPEC | {"optimizers": [{"name": "adma", "lr": 0.1}]}))
    for args, message in [
        (["run", str(adma)], "'adma'; did you mean 'adam'"),
        (["leaderboard", "--metric", "stpes"], "--metric: unknown metric 'stpes'; did you mean"),
        (["leaderboard", "--task", "digit"], "unknown task 'digit'; did you mean 'digits'?"),
    ]:
        result = plateau(*args, env=env)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
