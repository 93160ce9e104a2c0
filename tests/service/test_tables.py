"""The CLI's tables (service/tables.py): whole settings, wrapped not cut; numbers for people."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from service import tables


def rendered(table, width: int) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width)
    console.print(tables.fit(table, console))
    return out.getvalue()


def cells(text: str) -> list[str]:
    """Each body column's text, its wrapped lines joined, without spaces."""
    body = [line.split("│")[1:-1] for line in text.splitlines() if line.startswith("│")]
    return ["".join(line[i] for line in body).replace(" ", "") for i in range(len(body[0]))]


@pytest.mark.parametrize(
    "value,text",
    [
        (0.25578753079677286, "0.256"),
        (0.1, "0.1"),
        (1.0, "1"),
        (2878.4, "2878"),
        (1.234e-5, "1.23e-05"),
        (None, "—"),
        (float("nan"), "—"),
    ],
)
def test_numbers_for_people_have_3_significant_digits(value, text):
    assert tables.for_people(value) == text


def test_a_setting_keeps_its_names_and_integers_and_rounds_its_decimals():
    assert tables.setting_text("normal(scale=0.25578753079677286,std=0.01)") == (
        "normal(scale=0.256, std=0.01)"
    )
    assert tables.setting_text("mlp(depth=3,width=64,activation=relu)") == (
        "mlp(depth=3, width=64, activation=relu)"
    )
    assert tables.setting_text("adam(lr=1e-05)") == "adam(lr=1e-05)"
    assert tables.setting_text(None) == "none"


RUN = {
    "id": 7,
    "status": "succeeded",
    "steps_to_target": None,
    "final_loss": 0.123456,
    "test_accuracy": 0.9712,
    "plateau_fraction": 0.5,
    "diagnosis": {"verdict": "plateau"},
    "summary": {
        "architecture": "mlp(depth=3,width=64,activation=relu)",
        "normalization": "batchnorm",
        "optimizer": "sgd(lr=0.1,momentum=0.9,nesterov=True)",
        "init": "normal(scale=1.0,std=0.25578753079677286)",
        "grad_clip": "norm:1.0",
        "seed": 0,
    },
}


@pytest.mark.parametrize("width", [80, 120, 180])
def test_the_ranked_table_wraps_settings_instead_of_cutting_them(width):
    text = rendered(tables.ranked_table([RUN], "sweep 1 'x': finished, {'succeeded': 1}"), width)
    assert "…" not in text
    row = cells(text)
    assert row[2:7] == [
        "mlp(depth=3,width=64,activation=relu)",
        "batchnorm",
        "sgd(lr=0.1,momentum=0.9,nesterov=True)",
        "normal(scale=1,std=0.256)",
        "norm:1",
    ], text
    assert row[8:] == ["succeeded", "censored", "0.123", "0.971", "50", "plateau"], text
    if width == 180:  # what a pipe gets (service.cli.console): settings wrapped at commas
        assert "│ normal(scale=1," in text and "│ std=0.256)" in text


def test_the_leaderboard_table_wraps_settings_instead_of_cutting_them():
    row = {
        "rank": 1,
        "task": "digits",
        "summary": RUN["summary"],
        "n_runs": 3,
        "n_seeds": 3,
        "n_reached": 2,
        "steps_censored_mean": 312.4,
        "final_loss_mean": 0.0123456,
        "final_loss_std": 0.00123456,
        "test_accuracy_mean": 0.97123,
        "plateau_fraction_mean": 0.25,
        "divergence_rate": 0.0,
        "verdicts": {"converged": 3},
        "best_run_id": 9,
    }
    text = rendered(tables.leaderboard_table([row], "leaderboard by steps: 1 of 1"), 180)
    assert "…" not in text
    assert cells(text)[1:13] == [
        "mlp(depth=3,width=64,activation=relu)",
        "batchnorm",
        "sgd(lr=0.1,momentum=0.9,nesterov=True)",
        "normal(scale=1,std=0.256)",
        "norm:1",
        "3/3",
        "312(2/3reached)",
        "0.0123±0.00123",
        "0.971",
        "25",
        "0",
        "converged3",
    ], text


def test_study_progress_counts_ended_trials_and_names_the_best_so_far():
    progress = {
        "state": "running",
        "counts": {"complete": 9, "pruned": 3, "fail": 1, "running": 2},
        "best": {
            "number": 7,
            "value": 262.4,
            "params": {"init": "orthogonal", "init_scale": 0.47812345, "grad_clip": "norm"},
        },
    }
    text, ended = tables.study_progress(progress)
    assert ended == 13
    assert text == (
        "9 complete, 3 pruned, 1 failed, 2 running; "
        "best 262 (trial 7: init=orthogonal, init_scale=0.478, grad_clip=norm)"
    )
    none_yet = tables.study_progress({"state": "running", "counts": {}, "best": None})
    assert none_yet == ("0 complete, 0 pruned, 0 failed, 0 running", 0)
