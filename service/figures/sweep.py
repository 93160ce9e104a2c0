"""A sweep's figures, from its runs (service/pages.py: `sweep_runs`), coloured by one axis.

`sweep_figures(runs, by)` names them; the sweep page draws each into `plot-<name>` and its
axis picker asks again with another `by`. A run here is a flat dict: its id, status, the
short names of its axes (AXES), its verdict and outcomes, and its loss curve (`steps`,
`loss`; absent beyond the first curves the document carries).
"""

from __future__ import annotations

from typing import Any

from service.figures import (
    Spec,
    empty,
    figure,
    finite,
    legend_toggle,
    smoothing_param,
    toggled_opacity,
    zoom_param,
)
from service.figures.parallel import Dim, parallel
from service.figures.run import smoothed, smoothing_rows

AXES = ("architecture", "optimizer", "init", "normalization", "grad_clip", "seed")
POINTS_PER_CURVE = 150  # a curve is thinned to about this many points (its ends kept)
# The diagnoses (workers/diagnose.py) in the colours of the pages' verdict badges.
VERDICT_COLORS = {
    "converged": "#3f9f55",
    "still_improving": "#5b8fd6",
    "plateau": "#f2b134",
    "saddle": "#a066c4",
    "local_minimum": "#d9534f",
    "edge_of_stability": "#2aa198",
    "unstable": "#e8833a",
    "diverged": "#3a3f4b",
    "inconclusive": "#b9c0cb",
    "none": "#e5e7eb",
}
LABEL_LIMIT = 220  # px of an axis value's label (optimizer strings are long)


def axis_text(value: Any) -> str:
    return "none" if value is None else str(value)


def varying_axes(runs: list[dict[str, Any]]) -> list[str]:
    """The axes whose value differs between the runs, in AXES order."""
    return [a for a in AXES if len({axis_text(r.get(a)) for r in runs}) > 1]


def default_axis(runs: list[dict[str, Any]]) -> str:
    """The first axis that varies other than the seed (seeds are repeats), else the seed."""
    return next((a for a in varying_axes(runs) if a != "seed"), "seed")


def _thin(steps: list[int], values: list[float | None]) -> list[tuple[int, float | None]]:
    stride = max(1, len(steps) // POINTS_PER_CURVE)
    keep = set(range(0, len(steps), stride)) | {len(steps) - 1}
    return [(steps[i], values[i]) for i in sorted(keep) if i >= 0]


def loss_curves(runs: list[dict[str, Any]], by: str) -> Spec:
    """Every run's training loss (smoothed as TensorBoard does) on a log axis, coloured by
    the value of axis `by`. Diverged runs leave the chart at the top: the y range is set by
    the runs that did not diverge, so one blow-up does not flatten the others."""
    title = f"training loss by step, coloured by {by}"
    rows: list[Spec] = []
    calm: list[float] = []
    for r in runs:
        losses = [finite(v) for v in r.get("loss") or []]
        steps = r.get("steps") or []
        kept = {step for step, _ in _thin(steps, losses)}
        rows += [
            row | {"run": r["id"], "value": axis_text(r.get(by))}
            for row in smoothing_rows(steps, {str(r["id"]): losses}, "loss")
            if row["step"] in kept and row["loss"] > 0
        ]
        if r.get("verdict") != "diverged" and r.get("status") != "diverged":
            calm += [v for v in losses if v is not None and v > 0]
    if not rows:
        return empty("no loss recorded yet", title=title)
    top = max(calm) * 1.5 if calm else max(row["loss"] for row in rows)
    low = min(calm) / 1.5 if calm else min(row["loss"] for row in rows)
    color = {"field": "value", "type": "nominal", "title": by,
             "legend": {"labelLimit": LABEL_LIMIT, "columns": 2}}  # fmt: skip
    return figure(
        title=title,
        description=f"loss curves of {len(runs)} runs overlaid on a log axis, coloured by {by}",
        height=300,
        data={"values": rows},
        params=[smoothing_param(), zoom_param(), legend_toggle("value")],
        transform=[smoothed("loss")],
        mark={"type": "line", "strokeWidth": 1.2, "clip": True},
        encoding={
            "x": {
                "field": "step",
                "type": "quantitative",
                "title": "step",
                "axis": {"tickCount": 10, "labelOverlap": True},
            },
            "y": {
                "field": "smoothed",
                "type": "quantitative",
                "title": "training loss",
                "scale": {"type": "log", "domain": [low, top]},
            },
            "detail": {"field": "run", "type": "nominal"},
            "color": color,
            "opacity": toggled_opacity(off=0.05),
            "tooltip": [
                {"field": "run", "title": "run"},
                {"field": "value", "title": by},
                {"field": "step"},
                {"field": "smoothed", "title": "loss (smoothed)", "format": ".3g"},
            ],
        },  # fmt: skip
    )


def _finished(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if r.get("status") in ("succeeded", "diverged")]


def plateau_by(runs: list[dict[str, Any]], by: str) -> Spec:
    """Mean fraction of steps on a plateau per value of `by` (bars), each run a tick."""
    title = f"plateau fraction by {by}"
    rows = [
        {"run": r["id"], "value": axis_text(r.get(by)), "plateau": r["plateau_fraction"]}
        for r in _finished(runs)
        if finite(r.get("plateau_fraction")) is not None
    ]
    if not rows:
        return empty("no finished run measured its plateaus yet", title=title)
    y = {"field": "value", "type": "nominal", "title": None, "axis": {"labelLimit": LABEL_LIMIT}}
    x = {"field": "plateau", "type": "quantitative", "title": "fraction of steps on a plateau",
         "scale": {"domain": [0, 1]}, "axis": {"format": ".0%"}}  # fmt: skip
    return figure(
        title=title,
        description=f"mean plateau fraction of the finished runs per {by}, each run a tick",
        height={"step": 26},
        data={"values": rows},
        layer=[
            {
                "mark": {"type": "bar", "color": "#f2b134", "opacity": 0.55},
                "encoding": {
                    "y": y,
                    "x": {"aggregate": "mean", **x},
                    "tooltip": [
                        {"field": "value", "title": by},
                        {"aggregate": "mean", "field": "plateau", "title": "mean", "format": ".0%"},
                        {"aggregate": "count", "title": "runs"},
                    ],
                },
            },
            {
                "mark": {"type": "tick", "color": "#6b4a00", "thickness": 1.5},
                "encoding": {
                    "y": y,
                    "x": x,
                    "tooltip": [{"field": "run"}, {"field": "plateau", "format": ".0%"}],
                },
            },
        ],
    )


def verdicts_by(runs: list[dict[str, Any]], by: str) -> Spec:
    """The verdict mix of the finished runs per value of `by`: stacked shares."""
    title = f"verdicts by {by}"
    rows = [
        {"run": r["id"], "value": axis_text(r.get(by)), "verdict": r.get("verdict") or "none"}
        for r in _finished(runs)
    ]
    if not rows:
        return empty("no finished runs yet", title=title)
    present = {r["verdict"] for r in rows}
    shown = {v: c for v, c in VERDICT_COLORS.items() if v in present} or VERDICT_COLORS
    return figure(
        title=title,
        description=f"share of each diagnosis among the finished runs per {by}",
        height={"step": 26},
        data={"values": rows},
        mark={"type": "bar"},
        encoding={
            "y": {
                "field": "value",
                "type": "nominal",
                "title": None,
                "axis": {"labelLimit": LABEL_LIMIT},
            },
            "x": {
                "aggregate": "count",
                "type": "quantitative",
                "stack": "normalize",
                "title": "share of runs",
                "axis": {"format": ".0%"},
            },
            "color": {
                "field": "verdict",
                "type": "nominal",
                "title": "verdict",
                "scale": {"domain": list(shown), "range": list(shown.values())},
            },
            "order": {"field": "verdict"},
            "tooltip": [
                {"field": "value", "title": by},
                {"field": "verdict"},
                {"aggregate": "count", "title": "runs"},
            ],
        },  # fmt: skip
    )


def parallel_runs(runs: list[dict[str, Any]], by: str) -> Spec:
    """Each finished run across the axes that vary and its outcomes."""
    finished = [
        r | {"value": axis_text(r.get(by)), "steps": r.get("steps_to_target")}
        for r in _finished(runs)
    ]
    dims = [Dim(a, a, "nominal") for a in varying_axes(runs)] + [
        Dim("plateau_fraction", "plateau fraction"),
        Dim("steps", "steps→target"),
        Dim("final_loss", "final loss"),
    ]
    return parallel(
        finished,
        dims,
        key="id",
        color={
            "field": "value",
            "type": "nominal",
            "title": by,
            "legend": {"labelLimit": LABEL_LIMIT, "columns": 2},
        },  # fmt: skip
        title=f"axes and outcomes of each run, coloured by {by}",
        description="parallel coordinates: one line per finished run across the axes that "
        "vary and its outcomes; a run that never reached the target has no steps→target",
    )


def sweep_figures(runs: list[dict[str, Any]], by: str) -> dict[str, Spec]:
    """Every figure of the sweep page, by name (the element is `plot-<name>`)."""
    return {
        "loss": loss_curves(runs, by),
        "plateau": plateau_by(runs, by),
        "verdicts": verdicts_by(runs, by),
        "parallel": parallel_runs(runs, by),
    }
