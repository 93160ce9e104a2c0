"""The sweep and study figures (service/figures/sweep.py, study.py, parallel.py) on small
hand-made documents: what each chart puts where, the empty states, and that every spec
renders (vl-convert bundles the same Vega-Lite the pages vendor). The pages draw them from
real sweeps and studies in tests/web/test_board_pages.py."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from db import queue
from db.migrate import upgrade
from db.session import session_scope
from service.api.main import create_app
from service.figures import render, sig3
from service.figures.parallel import Dim, parallel
from service.figures.study import study_figures, valued
from service.figures.sweep import default_axis, loss_curves, sweep_figures, varying_axes
from service.settings import Settings


@pytest.mark.parametrize(
    "value,text",
    [
        (0.25578753079677286, "0.256"),
        (9548.99, "9550"),
        (1109.0, "1109"),
        (5.8583e-07, "5.86e-7"),
        (123456.0, "1.23e5"),
        (0.0, "0"),
        (None, "—"),
        ("orthogonal", "orthogonal"),
    ],
)
def test_numbers_are_rounded_for_people(value, text):
    assert sig3(value) == text


def run(i: int, optimizer: str, init: str, verdict: str, losses: list[float]) -> dict[str, Any]:
    return {
        "id": i,
        "status": "diverged" if verdict == "diverged" else "succeeded",
        "architecture": "mlp(depth=2)",
        "optimizer": optimizer,
        "init": init,
        "normalization": "none",
        "grad_clip": None,
        "seed": i % 2,
        "verdict": verdict,
        "plateau_fraction": 0.5 if verdict == "plateau" else 0.0,
        "final_loss": losses[-1],
        "steps_to_target": 30 if verdict == "converged" else None,
        "steps": list(range(0, 10 * len(losses), 10)),
        "loss": losses,
    }


RUNS = [
    run(1, "sgd(lr=0.1)", "default", "converged", [2.3, 1.0, 0.2, 0.1]),
    run(2, "sgd(lr=0.1)", "normal(std=0.01)", "plateau", [2.3, 2.3, 2.3, 2.2]),
    run(3, "adam(lr=0.003)", "default", "converged", [2.3, 0.8, 0.1, 0.05]),
    run(4, "sgd(lr=10000.0)", "default", "diverged", [2.3, 1e30, 1e35, 1e38]),
]


def test_the_sweep_charts_group_by_an_axis_that_varies():
    assert varying_axes(RUNS) == ["optimizer", "init", "seed"]
    assert default_axis(RUNS) == "optimizer"
    assert default_axis([r | {"optimizer": "sgd", "init": "default"} for r in RUNS]) == "seed"
    spec = loss_curves(RUNS, "init")
    assert {row["value"] for row in spec["data"]["values"]} == {"default", "normal(std=0.01)"}
    low, top = spec["encoding"]["y"]["scale"]["domain"]
    assert top < 10  # the diverged run's 1e38 leaves the chart instead of flattening it
    figures = sweep_figures(RUNS, "optimizer")
    assert set(figures) == {"loss", "plateau", "verdicts", "parallel"}
    for spec in figures.values():
        assert render(spec, "svg").startswith(b"<svg")


def test_a_sweep_without_finished_runs_draws_its_empty_states():
    queued = [r | {"status": "queued", "steps": [], "loss": []} for r in RUNS]
    figures = sweep_figures(queued, "optimizer")
    assert figures["loss"]["data"]["values"] == [{"message": "no loss recorded yet"}]
    assert "no finished" in figures["verdicts"]["description"]
    for spec in figures.values():
        assert render(spec, "svg").startswith(b"<svg")


def test_parallel_coordinates_leave_out_what_every_item_shares():
    items = [{"id": i, "a": "x" if i else "y", "b": "same", "c": 10.0**i} for i in range(3)]
    spec = parallel(
        items,
        [Dim("a", "a", "nominal"), Dim("b", "b", "nominal"), Dim("c", "c")],
        key="id",
        color={"field": "a", "type": "nominal"},
        title="t",
        description="d",
    )
    lines = spec["layer"][1]["data"]["values"]
    assert {row["dim"] for row in lines} == {"a", "c"}
    # c spans two decades: placed on a log scale, 1, 10, 100 -> 0, 0.5, 1
    assert [row["pos"] for row in lines if row["dim"] == "c"] == [0.0, 0.5, 1.0]
    one = parallel(items, [Dim("b", "b", "nominal")], key="id", color={"field": "a"}, title="t",
                   description="d")  # fmt: skip
    assert "fewer than two" in one["description"]


def trial(number: int, kind: str, value: float | None, scale: float) -> dict[str, Any]:
    state = "complete" if kind in ("complete", "censored") else kind
    return {
        "number": number,
        "state": state,
        "kind": kind,
        "values": None if value is None else [value],
        "params": {"init": "orthogonal" if number % 2 else "normal", "init_scale": scale},
        "last_reported": {"step": 300, "loss": 10.5} if kind == "pruned" else None,
    }


STUDY = {
    "objective": ["steps_to_target"],
    "censorable": True,
    "budget_steps": 1200,
    "importances": {"init_scale": 0.9, "init": 0.1},
    "trials": [
        trial(0, "censored", 9548.99, 0.05),
        trial(1, "complete", 1109.0, 1.0),
        trial(2, "complete", 637.0, 0.5933775325479784),
        trial(3, "pruned", 10.5, 0.3),  # Optuna's value of a pruned trial: a loss
        trial(4, "fail", None, 0.2),
    ],
}


def test_the_study_charts_tell_censored_and_pruned_trials_apart():
    rows = valued(STUDY)
    assert [r["trial"] for r in rows] == [0, 1, 2]  # the pruned trial's loss is no value
    assert rows[2]["init_scale"] == 0.593
    figures = study_figures(STUDY)
    history = {layer["mark"]["type"]: layer for layer in figures["history"]["layer"]}
    assert history["point"]["encoding"]["y"]["scale"]["type"] == "log"
    best = [row["value"] for row in history["line"]["data"]["values"]]
    assert best == [9548.99, 1109.0, 637.0]  # the best so far
    rules = [layer["data"]["values"] for layer in figures["history"]["layer"]
             if layer["mark"]["type"] == "rule"]  # fmt: skip
    assert rules == [[{"trial": 3, "kind": rules[0][0]["kind"], "step": 300}], [{"budget": 1200}]]
    assert rules[0][0]["kind"].startswith("pruned (no value")
    assert "penalty" in " ".join(figures["history"]["title"]["text"])
    assert len(figures["slices"]["concat"]) == 2
    for spec in figures.values():
        assert render(spec, "svg").startswith(b"<svg")


def test_a_study_of_two_objectives_draws_its_pareto_front():
    two = [
        t | {"values": [v, f], "state": "complete"}
        for t, v, f in zip(STUDY["trials"][:3], (900.0, 600.0, 700.0), (0.1, 0.4, 0.5), strict=True)
    ]
    doc = STUDY | {"objective": ["steps_to_target", "plateau_fraction"], "trials": two,
                   "pareto_front": two[:2]}  # fmt: skip
    figures = study_figures(doc)
    kinds = {r["trial"]: r["kind"] for r in figures["pareto"]["data"]["values"]}
    assert kinds == {0: "Pareto front", 1: "Pareto front", 2: "other trials"}
    assert render(figures["pareto"], "svg").startswith(b"<svg")
    assert "pareto" not in study_figures(STUDY)


def test_a_study_with_nothing_complete_says_so():
    nothing = STUDY | {"trials": [trial(0, "pruned", 10.5, 0.3)], "importances": None}
    figures = study_figures(nothing)
    assert figures["history"]["description"] == "no complete trials yet"
    assert "at least 4" in figures["importances"]["description"]


def test_the_figure_endpoints_answer_404_and_422(sqlite_url):
    upgrade(sqlite_url)
    with session_scope(sqlite_url) as s:
        empty = queue.enqueue_sweep(session=s, name="e", owner="ana", spec={}, runs=[]).id
    with TestClient(create_app(Settings(database_url=sqlite_url), dispatch=False)) as client:
        r = client.get(f"/api/v1/sweeps/{empty}/figures")
        assert r.status_code == 200 and r.json()["by"] == "seed"
        r = client.get(f"/api/v1/sweeps/{empty}/figures", params={"by": "optimiser"})
        assert r.status_code == 422 and "optimizer" in r.text
        assert client.get("/api/v1/sweeps/99999/figures").status_code == 404
        assert client.get("/api/v1/studies/99999/figures").status_code == 404


def test_a_study_that_has_not_started_has_a_page_and_empty_charts(sqlite_url):
    from service import studies
    from service.study_spec import StudySpec
    from tests.web.test_board_pages import STUDY_SPEC

    upgrade(sqlite_url)
    settings = Settings(database_url=sqlite_url)
    with session_scope(sqlite_url) as s:
        spec = StudySpec.model_validate(STUDY_SPEC)
        study_id = studies.create_study(session=s, spec=spec, settings=settings).id
    with TestClient(create_app(settings, dispatch=False)) as client:
        page = client.get(f"/studies/{study_id}")
        assert page.status_code == 200, page.text
        assert "No trial has completed yet" in page.text
        figures = client.get(f"/api/v1/studies/{study_id}/figures").json()["figures"]
        assert figures["history"]["description"] == "no complete trials yet"


def test_a_figure_is_written_as_svg_png_and_pdf_from_the_same_spec(tmp_path):
    """`plateau plot --format svg|png|pdf` goes through service.figures.write: each format is
    a real file of its kind (magic bytes, PNG size at 2x the spec's width), drawn offline."""
    import struct

    from service.figures import WIDTH, write
    from service.figures.run import run_figures

    steps = list(range(0, 200, 2))
    detail = {
        "id": 7,
        "summary": {"task": "digits"},
        "config": {"target": {"loss": 0.1}, "task": {"name": "digits"}},
        "result": {"plateaus": {"segments": [{"start": 20, "end": 60, "level": 1.0}]}},
        "curves": {
            "step": steps,
            "loss": [2.0 / (1 + s / 20) for s in steps],
            "eval_loss": [2.0 / (1 + s / 20) if s % 20 == 0 else None for s in steps],
        },
    }
    spec = run_figures(detail, [])["loss"]
    written = {
        fmt: write({"loss": spec}, tmp_path, prefix="run7", fmt=fmt)[0]
        for fmt in ("svg", "png", "pdf")
    }
    assert written["svg"].read_text().lstrip().startswith("<svg")
    png = written["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width = struct.unpack(">I", png[16:20])[0]
    assert width >= 2 * WIDTH  # the plot's width, at scale 2, plus axes and padding
    assert written["pdf"].read_bytes()[:5] == b"%PDF-"
