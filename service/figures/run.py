"""A run's figures, from its JSON document (GET /api/v1/runs/{id}) and its probes.

`run_figures` names them; the run page draws each into the element `plot-<name>` and
`plateau plot` writes each to `run<id>_<name>.<fmt>`.
"""

from __future__ import annotations

from typing import Any

from service.figures import (
    SMOOTHING,
    Spec,
    ema,
    empty,
    figure,
    finite,
    legend_toggle,
    scale,
    smoothing_param,
    toggled_opacity,
    zoom_param,
)

STEP = {"field": "step", "type": "quantitative", "title": "step"}


def loss(detail: dict[str, Any]) -> Spec:
    """Training loss (raw, faint, and smoothed), test loss at its evaluations (points: they
    were measured only there), plateau segments shaded, the target dashed."""
    c = detail["curves"]
    result = detail.get("result") or {}
    segments = (result.get("plateaus") or {}).get("segments") or []
    target = ((detail.get("config") or {}).get("target") or {}).get("loss")
    train = [finite(v) for v in c.get("loss", [])]
    if not any(v is not None for v in train):
        return empty("no steps recorded yet", title="loss")
    rows = [
        {"step": s, "series": "train (minibatch)", "smoothing": w, "loss": v}
        for w in SMOOTHING
        for s, v in zip(c["step"], ema(train, w), strict=False)
        if v is not None
    ]
    tests = [
        {"step": s, "series": "test", "loss": v}
        for s, v in zip(c["step"], (finite(x) for x in c.get("eval_loss", [])), strict=False)
        if v is not None
    ]
    y = {
        "field": "loss",
        "type": "quantitative",
        "title": "loss",
        "scale": scale(train + [t["loss"] for t in tests]),
    }
    color = {"field": "series", "type": "nominal", "title": None}
    layers: list[Spec] = []
    if segments:
        layers.append(
            {
                "data": {"values": segments},
                "mark": {"type": "rect", "color": "#f2b134", "opacity": 0.18},
                "encoding": {
                    "x": {"field": "start", "type": "quantitative"},
                    "x2": {"field": "end"},
                    "tooltip": [
                        {"field": "start", "title": "plateau from step"},
                        {"field": "end", "title": "to step"},
                        {"field": "level", "title": "loss level", "format": ".4g"},
                        {"field": "mean_grad_norm", "title": "mean |g|", "format": ".3g"},
                        {"field": "escaped", "title": "escaped"},
                    ],
                },
            }
        )
    layers += [
        {  # raw training loss under the smoothed line, as TensorBoard draws it
            "transform": [{"filter": "datum.smoothing === 0 && smoothing > 0"}],
            "mark": {"type": "line", "strokeWidth": 1, "opacity": 0.25, "clip": True},
            "encoding": {"x": STEP, "y": y, "color": color},
        },
        {
            "params": [zoom_param(), legend_toggle("series")],
            "transform": [{"filter": "datum.smoothing === smoothing"}],
            "mark": {"type": "line", "strokeWidth": 1.4, "clip": True},
            "encoding": {
                "x": STEP,
                "y": y,
                "color": color,
                "opacity": toggled_opacity(),
                "tooltip": [
                    {"field": "step", "title": "step"},
                    {"field": "loss", "title": "train loss (smoothed)", "format": ".6g"},
                ],
            },
        },
    ]
    if tests:
        layers.append(
            {
                "data": {"values": tests},
                "mark": {"type": "point", "filled": True, "size": 28, "clip": True},
                "encoding": {
                    "x": STEP,
                    "y": y,
                    "color": color,
                    "opacity": toggled_opacity(),
                    "tooltip": [
                        {"field": "step", "title": "step"},
                        {"field": "loss", "title": "test loss", "format": ".6g"},
                    ],
                },
            }
        )
    if finite(target) is not None:
        layers.append(
            {
                "data": {"values": [{"target": target}]},
                "mark": {"type": "rule", "strokeDash": [5, 4], "color": "#555"},
                "encoding": {
                    "y": {"field": "target", "type": "quantitative"},
                    "tooltip": [{"field": "target", "title": "target loss"}],
                },
            }
        )
    return figure(
        title="loss",
        description="training loss by step with plateaus shaded and the target dashed",
        data={"values": rows},
        params=[smoothing_param()],
        layer=layers,
    )


def run_figures(detail: dict[str, Any], probes: list[dict[str, Any]]) -> dict[str, Spec]:
    """Every figure of the run, by name (the page's element is `plot-<name>`)."""
    return {"loss": loss(detail)}
