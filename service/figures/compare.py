"""The compare page's figure: several runs overlaid, from their JSON documents
(GET /api/v1/runs/{id} each).

One spec of three panels stacked on a shared step axis (training loss, test loss, gradient
norm), so that zooming or panning one zooms them all and the cursor's step is marked in
every panel; one colour per run, the same in the three panels and in the page's table.
"""

from __future__ import annotations

from typing import Any

from service.figures import (
    CONFIG,
    Spec,
    exact,
    figure,
    finite,
    legend_toggle,
    smoothing_param,
    toggled_opacity,
    y_scale,
)
from service.figures.run import STEP, smoothed, smoothing_rows

PANELS = ("loss", "test", "grad")
HEIGHT = 200


def label(run: dict[str, Any]) -> str:
    return f"run {run['id']}"


def _color(runs: list[dict[str, Any]]) -> Spec:
    return {"field": "series", "type": "nominal", "title": "run",
            "scale": {"domain": [label(r) for r in runs]}}  # fmt: skip


def _panel(name: str, title: str, marks: list[Spec], runs: list[dict[str, Any]]) -> Spec:
    """A panel of the stack: its marks (the last one, the runs' data, named `name`), the
    invisible points the synced params attach to (`<name>_hover`: Vega's nearest-point
    search has no lines), and the cursor (`<name>_cursor`): a rule at the hovered step, over
    every logged step so that it shows in a panel with no value at that step."""
    data = marks[-1]
    data["name"] = name
    source = {k: data[k] for k in ("data", "transform") if k in data}
    hover = source | {
        "name": f"{name}_hover",
        "mark": {"type": "point", "opacity": 0, "filled": True},
        # the colour makes this layer's legend the panel's, so the legend toggle (held by
        # this layer) binds to it; its symbols are shown although the points are not
        "encoding": {k: data["encoding"][k] for k in ("x", "y")}
        | {"color": data["encoding"]["color"] | {"legend": {"symbolOpacity": 1}}},
    }
    cursor = {
        "name": f"{name}_cursor",
        "data": {
            "values": [{"step": s} for s in sorted({s for r in runs for s in r["curves"]["step"]})]
        },
        "transform": [{"filter": {"param": "cursor", "empty": False}}],
        "mark": {"type": "rule", "color": "#888", "strokeDash": [3, 3]},
        "encoding": {"x": STEP},
    }
    return {"name": f"{name}_panel", "title": title, "width": "container", "height": HEIGHT,
            "layer": [hover, *marks, cursor]}  # fmt: skip


def _curve(runs: list[dict[str, Any]], key: str, title: str, name: str) -> Spec:
    """Each run's smoothed curve of `key` (the smoothing control applies)."""
    rows = [
        row
        for r in runs
        for row in smoothing_rows(
            r["curves"]["step"], {label(r): [finite(v) for v in r["curves"].get(key, [])]}, key
        )
    ]
    y = {"field": key, "type": "quantitative", "title": title,
         **y_scale(row[key] for row in rows)}  # fmt: skip
    line = {
        "data": {"values": rows},
        "transform": [smoothed(key)],
        "mark": {"type": "line", "strokeWidth": 1.4, "clip": True},
        "encoding": {
            "x": STEP,
            "y": y | {"field": "smoothed"},
            "color": _color(runs),
            "opacity": toggled_opacity(),
            "tooltip": [
                {"field": "series", "title": "run"},
                exact("step", "step"),
                exact("smoothed", title),
                exact(key, f"{key} (raw)"),
            ],  # fmt: skip
        },
    }
    return _panel(name, title, [line], runs)


def _test_loss(runs: list[dict[str, Any]]) -> Spec:
    rows = [
        {"step": s, "series": label(r), "loss": v}
        for r in runs
        for s, v in zip(r["curves"]["step"], r["curves"].get("eval_loss", []), strict=False)
        if finite(v) is not None
    ]
    title = "test loss (at each evaluation)"
    if not rows:
        rows = [{"step": 0, "series": "none", "loss": None}]
        title = "test loss: no test evaluations recorded"
    y = {"field": "loss", "type": "quantitative", "title": "test loss",
         **y_scale(row["loss"] for row in rows)}  # fmt: skip
    dots = {
        "data": {"values": rows},
        "mark": {"type": "point", "filled": True, "size": 26, "clip": True},
        "encoding": {
            "x": STEP,
            "y": y,
            "color": _color(runs),
            "opacity": toggled_opacity(),
            "tooltip": [
                {"field": "series", "title": "run"},
                exact("step", "step"),
                exact("loss", "test loss"),
            ],  # fmt: skip
        },
    }
    return _panel("test", title, [dots], runs)


def compare_figures(runs: list[dict[str, Any]]) -> dict[str, Spec]:
    """The compare page's figure `curves`: the runs' training loss, test loss and gradient
    norm, stacked on one step axis with zoom, cursor and legend toggle synced across them."""
    views = [f"{p}_hover" for p in PANELS]
    target = finite(((runs[0].get("config") or {}).get("target") or {}).get("loss"))
    loss = _curve(runs, "loss", "training loss (smoothed)", "loss")
    if target is not None:
        loss["layer"].insert(1, {
            "data": {"values": [{"target": target}]},
            "mark": {"type": "rule", "strokeDash": [5, 4], "color": "#555"},
            "encoding": {"y": {"field": "target", "type": "quantitative"},
                         "tooltip": [exact("target", "target loss")]},
        })  # fmt: skip
    spec = figure(
        title="runs compared",
        description="training loss, test loss and gradient norm of each run by step; zoom, "
        "pan and the cursor act on all three panels",
        params=[
            smoothing_param(),
            {
                "name": "zoom",
                "select": {"type": "interval", "encodings": ["x"]},
                "bind": "scales",
                "views": views,
            },
            legend_toggle("series") | {"views": views},
            {
                "name": "cursor",
                "views": views,
                "select": {
                    "type": "point",
                    "encodings": ["x"],
                    "nearest": True,
                    "on": "pointermove",
                    "clear": "pointerout",
                },
            },
        ],  # fmt: skip
        vconcat=[
            loss,
            _test_loss(runs),
            _curve(runs, "grad_norm", "gradient norm (L2)", "grad"),
        ],
        resolve={"scale": {"x": "shared", "y": "independent", "color": "shared"}},
        config=CONFIG | {"legend": CONFIG["legend"] | {"orient": "top"}},
    )
    for key in ("width", "height"):
        spec.pop(key)
    return {"curves": spec}
