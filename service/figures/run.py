"""A run's figures, from its JSON document (GET /api/v1/runs/{id}) and its probes.

`run_figures` names them; the run page draws each into the element `plot-<name>` and
`plateau plot` writes each to `run<id>_<name>.<fmt>`. The probe figures (density,
slices_1d, surface_2d, interpolation) show one probe, the last unless another is chosen.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from service.figures import (
    PALETTE,
    SMOOTHING,
    Spec,
    ema,
    empty,
    exact,
    figure,
    finite,
    legend_toggle,
    readable,
    scale,
    smoothing_param,
    toggled_opacity,
    y_scale,
    zoom_param,
)

STEP = {"field": "step", "type": "quantitative", "title": "step (optimizer updates)"}
SERIES = {"field": "series", "type": "nominal", "title": None}
PLATEAU = "#f2b134"
# Six decades below the peak: the Gaussian broadening's far tails say nothing (SLQ).
DENSITY_DECADES = 6
RUN_STAR = (
    "M0,-1L0.24,-0.33L0.95,-0.31L0.38,0.12L0.59,0.81L0,0.4L-0.59,0.81L-0.38,0.12"
    "L-0.95,-0.31L-0.24,-0.33Z"
)


def ema_field(weight: float) -> str:
    """The row field of the EMA at `weight` (0.6 -> ema60): Vega field names take no dots."""
    return f"ema{round(weight * 100)}"


def smoothing_rows(
    steps: Sequence[int], series: dict[str, list[float | None]], value: str
) -> list[Spec]:
    """One row per (series, step) with a finite value: the value and its EMA at each
    SMOOTHING level above 0 (fields ema60, ema90, ema97), those to 6 significant digits (a
    display value: the measurement itself keeps every digit)."""
    rows = []
    for name, values in series.items():
        levels = {
            ema_field(w): [None if e is None else float(f"{e:.6g}") for e in ema(values, w)]
            for w in SMOOTHING
            if w > 0
        }
        for i in extremes(values[: len(steps)]):
            rows.append({"step": steps[i], "series": name, value: values[i]}
                        | {k: e[i] for k, e in levels.items()})  # fmt: skip
    return rows


MAX_POINTS = 2000  # per series: beyond a screen's width in pixels


def extremes(values: Sequence[float | None], limit: int = MAX_POINTS) -> list[int]:
    """Indices of the finite values to draw: all of them up to `limit`, else each of
    limit/2 consecutive buckets' minimum and maximum, in order, so that a long curve keeps
    its spikes and plateaus (the EMAs are computed on every value before this)."""
    present = [i for i, v in enumerate(values) if v is not None]
    if len(present) <= limit:
        return present
    buckets = limit // 2
    kept: list[int] = []
    for b in range(buckets):
        bucket = present[b * len(present) // buckets : (b + 1) * len(present) // buckets]
        lo = min(bucket, key=lambda i: values[i])  # type: ignore[arg-type, return-value]
        hi = max(bucket, key=lambda i: values[i])  # type: ignore[arg-type, return-value]
        kept += sorted({lo, hi})
    return kept


def smoothed(value: str) -> Spec:
    """The transform that picks the `smoothing` param's level of `value` as `smoothed`."""
    pick = f"smoothing === 0 ? datum.{value} : datum['ema' + round(smoothing * 100)]"
    return {"calculate": pick, "as": "smoothed"}


def smoothed_lines(
    rows: list[Spec], y: Spec, *, value: str, name: str, tooltip_title: str
) -> list[Spec]:
    """TensorBoard's look: each series raw and faint under its smoothed line; the rows carry
    every SMOOTHING level and the `smoothing` param picks one. Drag/wheel zoom, legend
    toggle, and a tooltip at full precision."""
    few = len({r["step"] for r in rows}) < 3
    return [
        {
            "name": f"{name}_raw",
            "transform": [{"filter": "smoothing > 0"}],
            "mark": {"type": "line", "strokeWidth": 1, "opacity": 0.25, "clip": True},
            # the chart's legend is this first layer's, so the legend toggle is defined here
            "params": [zoom_param(), legend_toggle("series")],
            "encoding": {"x": STEP, "y": y, "color": SERIES | {"legend": {"symbolOpacity": 1}}},
        },
        {
            "name": name,
            "transform": [smoothed(value)],
            # a line through fewer than three steps hides them: show the points too
            "mark": {"type": "line", "strokeWidth": 1.5, "clip": True}
            | ({"point": {"filled": True, "size": 30}} if few else {}),
            "encoding": {
                "x": STEP,
                "y": y | {"field": "smoothed"},
                "color": SERIES,
                "opacity": toggled_opacity(),
                "tooltip": [
                    {"field": "series", "title": "series"},
                    exact("step", "step"),
                    exact("smoothed", f"{tooltip_title} (smoothed)"),
                    exact(value, tooltip_title),
                ],
            },
        },
    ]


def points(
    data: list[Spec], y: Spec, *, name: str, tooltip: list[Spec], alone: bool = True, **mark: Any
) -> Spec:
    """Values measured only at some steps (evaluations, probes): points, no line. `alone`:
    the layer brings the zoom and legend toggle (else another layer of the chart does)."""
    params = [zoom_param(), legend_toggle("series")] if alone else []
    return {
        "name": name,
        **({"params": params} if params else {}),
        "data": {"values": data},
        "mark": {"type": "point", "filled": True, "size": 30, "clip": True} | mark,
        "encoding": {"x": STEP, "y": y, "color": SERIES, "opacity": toggled_opacity(),
                     "tooltip": tooltip},
    }  # fmt: skip


def loss(detail: dict[str, Any]) -> Spec:
    """Training loss (raw, faint, and smoothed), test loss at its evaluations (points: they
    were measured only there), plateau segments shaded, the target dashed."""
    c = detail["curves"]
    result = detail.get("result") or {}
    segments = (result.get("plateaus") or {}).get("segments") or []
    target = finite(((detail.get("config") or {}).get("target") or {}).get("loss"))
    train = [finite(v) for v in c.get("loss", [])]
    if not any(v is not None for v in train):
        return empty("no steps recorded yet", title="loss")
    tests = [
        {"step": s, "series": "test", "loss": v}
        for s, v in zip(c["step"], (finite(x) for x in c.get("eval_loss", [])), strict=False)
        if v is not None
    ]
    y = {
        "field": "loss",
        "type": "quantitative",
        "title": "loss (mean per sample)",
        **y_scale(train + [t["loss"] for t in tests]),
    }
    layers: list[Spec] = []
    if segments:
        layers.append(
            {
                "name": "plateau",
                "data": {"values": segments},
                "mark": {"type": "rect", "color": PLATEAU, "opacity": 0.22},
                "encoding": {
                    "x": {"field": "start", "type": "quantitative"},
                    "x2": {"field": "end"},
                    "tooltip": [
                        exact("start", "plateau from step"),
                        exact("end", "to step"),
                        exact("level", "loss level"),
                        exact("mean_grad_norm", "mean |g|"),
                        {"field": "escaped", "title": "escaped"},
                    ],
                },
            }
        )
    rows = smoothing_rows(c["step"], {"train (minibatch)": train}, "loss")
    layers += smoothed_lines(rows, y, value="loss", name="train", tooltip_title="train loss")
    if tests:
        tip = [exact("step", "step"), exact("loss", "test loss")]
        layers.append(points(tests, y, name="test", tooltip=tip, alone=False))
    if target is not None:
        layers.append(
            {
                "name": "target",
                "data": {"values": [{"target": target}]},
                "mark": {"type": "rule", "strokeDash": [5, 4], "color": "#555"},
                "encoding": {
                    "y": {"field": "target", "type": "quantitative"},
                    "tooltip": [exact("target", "target loss")],
                },
            }
        )
    return figure(
        title="loss",
        description="training loss by step (raw faint, smoothed solid), test loss at each "
        "evaluation as points, plateaus shaded, the target dashed",
        data={"values": rows},
        params=[smoothing_param()],
        layer=layers,
    )


# The Sequential architectures' layouts (workers/models.py): module index -> a label;
# the gradient norms are keyed by module path, which in a Sequential is only an index.
def _sequential_layout(config: dict[str, Any]) -> dict[str, str]:
    arch = config.get("architecture") or {}
    task = config.get("task") or {}
    norm = {"batchnorm": "BatchNorm", "layernorm": "LayerNorm"}.get(
        config.get("normalization", "none"), "norm"
    )
    d_in, d_out = str(task.get("input_dim", "in")), str(task.get("output_dim", "out"))
    out: dict[str, str] = {}
    if arch.get("name") == "mlp":  # [Flatten, (Linear, norm, act) x depth, Linear]
        widths = [d_in] + [str(arch.get("width"))] * arch.get("depth", 0) + [d_out]
        for i in range(arch.get("depth", 0)):
            out[str(1 + 3 * i)] = f"Linear {i + 1} ({widths[i]}→{widths[i + 1]})"
            out[str(2 + 3 * i)] = f"{norm} {i + 1} ({widths[i + 1]})"
        depth = arch.get("depth", 0)
        out[str(1 + 3 * depth)] = f"Linear {depth + 1} ({widths[depth]}→{d_out}, output)"
    elif arch.get("name") == "deep_linear":  # [Flatten, Linear x depth, Linear]
        depth = arch.get("depth", 0)
        widths = [d_in] + [str(arch.get("width"))] * depth + [d_out]
        for i in range(depth + 1):
            role = ", output" if i == depth else ""
            out[str(1 + i)] = f"Linear {i + 1} ({widths[i]}→{widths[i + 1]}{role})"
    elif arch.get("name") == "cnn":  # [(Conv, norm, act) x len(channels), pool, flat, Linear]
        channels = [str(c) for c in arch.get("channels", [])]
        chans = ["in", *channels]
        for i in range(len(channels)):
            out[str(3 * i)] = f"Conv {i + 1} ({chans[i]}→{chans[i + 1]} channels)"
            out[str(1 + 3 * i)] = f"{norm} {i + 1} ({chans[i + 1]})"
        out[str(3 * len(channels) + 2)] = f"Linear ({chans[-1]}→{d_out}, output)"
    return out


def _natural(key: str) -> list[Any]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.#]", key)]


def layer_labels(config: dict[str, Any], keys: Sequence[str]) -> dict[str, str]:
    """A readable name for each recorded layer key, in forward order: the layer's kind,
    number and shape where the architecture is a known Sequential ("Linear 1 (64→32)"),
    else the module path as named_modules() gives it ("blocks.0.mlp.0", "head")."""
    layout = _sequential_layout(config)
    return {k: layout.get(k, f"module {k}") for k in sorted(keys, key=_natural)}


def grad_norm(detail: dict[str, Any]) -> Spec:
    """The global gradient norm and each layer's, smoothed like the loss."""
    c = detail["curves"]
    layer_rows = c.get("layer_grad_norms") or []
    keys = list(dict.fromkeys(k for row in layer_rows for k in (row or {})))
    labels = layer_labels(detail.get("config") or {}, keys)
    series = {"global": [finite(v) for v in c.get("grad_norm", [])]}
    for key, label in labels.items():
        series[label] = [finite((row or {}).get(key)) for row in layer_rows]
    if not any(v is not None for v in series["global"]):
        return empty("no gradient norms recorded", title="gradient norm")
    rows = smoothing_rows(c["step"], series, "grad_norm")
    y = {
        "field": "grad_norm",
        "type": "quantitative",
        "title": "gradient norm (L2, before clipping)",
        **y_scale(r["grad_norm"] for r in rows),
    }
    layers = smoothed_lines(rows, y, value="grad_norm", name="grad", tooltip_title="gradient norm")
    colors = {"scale": {"domain": list(series), "range": ["#111111", *PALETTE]}}
    for layer in layers:
        layer["encoding"]["color"] = layer["encoding"]["color"] | colors  # SERIES is shared
    return figure(
        title="gradient norm, global and per layer",
        description="L2 norm of the minibatch gradient by step, of all parameters (black) "
        "and of each layer's, named by kind and shape",
        data={"values": rows},
        params=[smoothing_param()],
        layer=layers,
    )


def lr_clip(detail: dict[str, Any]) -> Spec:
    """The learning rate by step, and a red tick at each logged step where the gradient was
    clipped."""
    c = detail["curves"]
    lr = [{"step": s, "lr": v} for s, v in zip(c["step"], c.get("lr", []), strict=False)
          if finite(v) is not None]  # fmt: skip
    if not lr:
        return empty("no learning rate recorded", title="learning rate and clipping")
    clipped = [
        {"step": s, "lr": r, "series": "clipped"}
        for s, r, hit in zip(c["step"], c.get("lr", []), c.get("clipped", []), strict=False)
        if hit and finite(r) is not None
    ]
    clip = (detail.get("config") or {}).get("grad_clip")
    events = (
        f"clipped at {len(clipped)} of {len(c['step'])} logged steps" if clip else "no clipping"
    )
    y = {"field": "lr", "type": "quantitative", "title": "learning rate",
         **y_scale(r["lr"] for r in lr)}  # fmt: skip
    layers: list[Spec] = [
        {
            "name": "lr",
            "params": [zoom_param()],
            "mark": {"type": "line", "strokeWidth": 1.5, "clip": True, "color": "#1f77b4"},
            "encoding": {
                "x": STEP,
                "y": y,
                "tooltip": [exact("step", "step"), exact("lr", "learning rate")],
            },
        }  # fmt: skip
    ]
    if clipped:
        layers.append(
            {
                "name": "clip",
                "data": {"values": clipped},
                "mark": {
                    "type": "tick",
                    "orient": "vertical",
                    "color": "#d62728",
                    "thickness": 1.2,
                    "size": 14,
                    "clip": True,
                },
                "encoding": {"x": STEP, "y": y, "tooltip": [exact("step", "clipped at step")]},
            }  # fmt: skip
        )
    return figure(
        title=["learning rate and gradient clipping", events],
        description=f"learning rate by step; red ticks: {events}",
        data={"values": lr},
        layer=layers,
    )


def evaluations(detail: dict[str, Any]) -> Spec:
    """Test accuracy on a fixed 0–1 axis for classification (so chance-level noise stays
    flat), else the test loss: both as points, measured only at the evaluations."""
    c = detail["curves"]
    acc = [{"step": s, "series": "test accuracy", "accuracy": v}
           for s, v in zip(c["step"], c.get("eval_accuracy", []), strict=False)
           if finite(v) is not None]  # fmt: skip
    if acc:
        y = {"field": "accuracy", "type": "quantitative", "title": "test accuracy (fraction)",
             "scale": {"domain": [0, 1]}}  # fmt: skip
        tip = [exact("step", "step"), exact("accuracy", "test accuracy")]
        return figure(
            title="test accuracy",
            description="accuracy on the test split at each evaluation, on a 0–1 axis",
            layer=[points(acc, y, name="test", tooltip=tip)],
        )
    losses = [{"step": s, "series": "test loss", "loss": v}
              for s, v in zip(c["step"], c.get("eval_loss", []), strict=False)
              if finite(v) is not None]  # fmt: skip
    if not losses:
        return empty("no test evaluations recorded", title="test evaluation")
    y = {"field": "loss", "type": "quantitative", "title": "test loss (mean per sample)",
         **y_scale(r["loss"] for r in losses)}  # fmt: skip
    tip = [exact("step", "step"), exact("loss", "test loss")]
    return figure(
        title="test loss",
        description="loss on the test split at each evaluation (a regression task: no accuracy)",
        layer=[points(losses, y, name="test", tooltip=tip)],
    )


def not_probed(detail: dict[str, Any]) -> str:
    if detail.get("status") == "diverged":
        return "not probed: the run diverged before the end"
    if detail.get("status") in ("queued", "running"):
        return "not probed yet: the run has not finished"
    return "not probed: add probes: {at: [end]} to the spec to see the landscape"


HESSIAN_RULE = (
    "points only: each probe is one measurement, and probes need not be consecutive in time "
    "(a plateau probe at step 300, the end probe at 3000), so no line joins them"
)


def hessian(detail: dict[str, Any], probes: list[dict[str, Any]]) -> Spec:
    """λmax and λmin of the Hessian at each probe, as points (HESSIAN_RULE)."""
    title = "Hessian extreme eigenvalues over the probed steps"
    rows = [
        {"step": p["step"], "series": name, "lambda": value, "trigger": p.get("trigger")}
        for p in probes
        for name, value in (
            ("λmax", finite(p.get("lambda_max"))),
            ("λmin", finite(p.get("lambda_min"))),
        )  # fmt: skip
        if value is not None
    ]
    if not rows:
        return empty(not_probed(detail) if not probes else "no eigenvalues in the probes",
                     title=title)  # fmt: skip
    steps = sorted({r["step"] for r in rows})
    x = STEP | {"scale": {"domain": [steps[0] - 1, steps[-1] + 1]} if len(steps) == 1 else {}}
    y = {"field": "lambda", "type": "quantitative", "title": "Hessian eigenvalue λ",
         "scale": {"zero": False}}  # fmt: skip
    tip = [{"field": "series"}, exact("step", "step"), {"field": "trigger"},
           exact("lambda", "eigenvalue")]  # fmt: skip
    eig = points(rows, y, name="eig", tooltip=tip, size=50)
    eig["encoding"]["x"] = x
    eig["encoding"]["shape"] = {"field": "trigger", "type": "nominal", "title": "probe"}
    return figure(
        title=title,
        description=f"λmax and λmin (Lanczos Ritz values) at each probe; {HESSIAN_RULE}",
        layer=[
            {
                "data": {"values": [{"y": 0}]},
                "mark": {"type": "rule", "color": "#999"},
                "encoding": {"y": {"field": "y", "type": "quantitative"}},
            },  # fmt: skip
            eig,
        ],
    )


def density(probe: dict[str, Any]) -> Spec:
    """The spectral density (stochastic Lanczos quadrature) on a log axis from 10^-6 of its
    peak to twice the peak: the same range in the pages and in files."""
    title = f"spectral density of the Hessian at step {probe['step']}"
    d = (probe.get("data") or {}).get("density") or {}
    pairs = [(finite(g), finite(v)) for g, v in zip(d.get("grid", []), d.get("values", []),
                                                    strict=False)]  # fmt: skip
    top = max((v for _, v in pairs if v is not None), default=0.0)
    if top <= 0:
        return empty("no spectral density in this probe", title=title)
    floor = top * 10.0**-DENSITY_DECADES
    # below the floor: a gap in the line (None), not a dive to 1e-80
    rows = [{"lambda": g, "density": v if v is not None and v >= floor else None}
            for g, v in pairs if g is not None]  # fmt: skip
    return figure(
        title=title,
        description="density of Hessian eigenvalues (SLQ, Gaussian broadening), log scale "
        f"over {DENSITY_DECADES} decades below the peak",
        data={"values": rows},
        layer=[
            {
                "name": "density",
                "params": [zoom_param()],
                "mark": {"type": "line", "strokeWidth": 1.5, "clip": True, "color": "#1f77b4"},
                "encoding": {
                    "x": {
                        "field": "lambda",
                        "type": "quantitative",
                        "title": "Hessian eigenvalue λ",
                    },
                    "y": {
                        "field": "density",
                        "type": "quantitative",
                        "title": "density (per unit λ)",
                        "scale": {"type": "log", "domain": [floor, 2 * top]},
                        "axis": readable(decades=True),
                    },
                    "tooltip": [exact("lambda", "λ"), exact("density", "density")],
                },
            },  # fmt: skip
            {
                "data": {"values": [{"x": 0}]},
                "mark": {"type": "rule", "color": "#999"},
                "encoding": {"x": {"field": "x", "type": "quantitative"}},
            },  # fmt: skip
        ],
    )


SLICES_1D = {
    "random_1d": "random direction (filter-normalized)",
    "top_eigvec_1d": "top eigenvector",
    "bottom_eigvec_1d": "bottom eigenvector",
}


def slices_1d(probe: dict[str, Any]) -> Spec:
    """The loss along 1-D lines through the parameters: a random direction and the
    Hessian's top and bottom eigenvectors."""
    title = f"1-D loss slices at step {probe['step']}"
    slices = (probe.get("data") or {}).get("slices") or {}
    rows = [
        {"alpha": a, "series": name, "loss": finite(v)}
        for key, name in SLICES_1D.items()
        for a, v in zip(
            (slices.get(key) or {}).get("alphas", []),
            (slices.get(key) or {}).get("values", []),
            strict=False,
        )  # fmt: skip
        if finite(v) is not None
    ]
    if not rows:
        return empty("no 1-D slices in this probe", title=title)
    y = {"field": "loss", "type": "quantitative", "title": "loss (mean per sample)",
         **y_scale(r["loss"] for r in rows)}  # fmt: skip
    x = {"field": "alpha", "type": "quantitative", "title": "α (step along the direction)"}
    tip = [{"field": "series", "title": "direction"}, exact("alpha", "α"), exact("loss", "loss")]
    return figure(
        title=title,
        description="loss at θ + α·d for each direction d; α = 0 is the run's parameters",
        data={"values": rows},
        layer=[
            {
                "data": {"values": [{"x": 0}]},
                "mark": {"type": "rule", "color": "#999"},
                "encoding": {"x": {"field": "x", "type": "quantitative"}},
            },  # fmt: skip
            {
                "name": "slice",
                "params": [zoom_param(), legend_toggle("series")],
                "mark": {"type": "line", "point": {"size": 16}, "strokeWidth": 1.4, "clip": True},
                "encoding": {
                    "x": x,
                    "y": y,
                    "color": SERIES,
                    "opacity": toggled_opacity(),
                    "tooltip": tip,
                },
            },  # fmt: skip
        ],
    )


def _edges(values: Sequence[float]) -> list[float]:
    """Cell edges halfway between neighbouring grid points (the outer ones at the ends)."""
    mids = [(a + b) / 2 for a, b in zip(values, values[1:], strict=False)]
    return [values[0], *mids, values[-1]]


def surface_2d(probe: dict[str, Any]) -> Spec:
    """The loss on a plane through the parameters spanned by two random directions, as a
    heatmap (log colours where every value is positive) with a colour bar; ★ is the run."""
    title = f"2-D loss surface at step {probe['step']}"
    s = ((probe.get("data") or {}).get("slices") or {}).get("random_2d")
    if not s or not s.get("values"):
        return empty("no 2-D surface in this probe", title=title)
    xs, ys = s["alphas"], s.get("betas") or s["alphas"]
    ex, ey = _edges(xs), _edges(ys)
    cells = [
        {
            "a": a,
            "b": b,
            "a0": ex[i],
            "a1": ex[i + 1],
            "b0": ey[j],
            "b1": ey[j + 1],
            "loss": finite(s["values"][i][j]),
        }  # fmt: skip
        for i, a in enumerate(xs)
        for j, b in enumerate(ys)
        if finite(s["values"][i][j]) is not None
    ]
    color = {
        "field": "loss",
        "type": "quantitative",
        "title": "loss",
        "scale": scale((c["loss"] for c in cells), scheme="viridis"),
        "legend": readable(orient="right", gradientLength=200, labelOverlap=True),
    }
    return figure(
        title=title,
        description="loss at θ + α·d1 + β·d2 (filter-normalized random directions); colours "
        "log-scaled where every value is positive; the star is the run's parameters",
        height=320,
        layer=[
            {
                "name": "cell",
                "data": {"values": cells},
                "params": [zoom_param()],
                "mark": {"type": "rect"},
                "encoding": {
                    "x": {
                        "field": "a0",
                        "type": "quantitative",
                        "title": "α (random direction 1)",
                        "scale": {"nice": False},
                    },
                    "x2": {"field": "a1"},
                    "y": {
                        "field": "b0",
                        "type": "quantitative",
                        "title": "β (random direction 2)",
                        "scale": {"nice": False},
                    },
                    "y2": {"field": "b1"},
                    "color": color,
                    "tooltip": [exact("a", "α"), exact("b", "β"), exact("loss", "loss")],
                },
            },  # fmt: skip
            {
                "name": "run",
                "data": {"values": [{"a0": 0, "b0": 0, "label": f"the run, step {probe['step']}"}]},
                "mark": {
                    "type": "point",
                    "shape": RUN_STAR,
                    "size": 220,
                    "filled": True,
                    "color": "#e8112d",
                    "stroke": "white",
                    "strokeWidth": 1,
                    "opacity": 1,
                },
                "encoding": {
                    "x": {"field": "a0", "type": "quantitative"},
                    "y": {"field": "b0", "type": "quantitative"},
                    "tooltip": [{"field": "label", "title": "★"}],
                },
            },  # fmt: skip
        ],
    )


def interpolation(probe: dict[str, Any]) -> Spec:
    """The loss on the straight line from the initialization (t = 0) to the parameters at
    the probe (t = 1) (Goodfellow et al. 2015)."""
    title = f"interpolation from initialization to step {probe['step']}"
    s = ((probe.get("data") or {}).get("slices") or {}).get("interpolation")
    ts = (s or {}).get("ts") or (s or {}).get("alphas") or []
    rows = [{"t": t, "loss": finite(v), "series": "loss"}
            for t, v in zip(ts, (s or {}).get("values", []), strict=False)
            if finite(v) is not None]  # fmt: skip
    if not rows:
        return empty("no interpolation in this probe", title=title)
    return figure(
        title=title,
        description="loss at (1 - t)·θ_init + t·θ_step",
        data={"values": rows},
        layer=[
            {
                "name": "interp",
                "params": [zoom_param()],
                "mark": {
                    "type": "line",
                    "point": {"size": 16},
                    "strokeWidth": 1.4,
                    "clip": True,
                    "color": "#1f77b4",
                },
                "encoding": {
                    "x": {
                        "field": "t",
                        "type": "quantitative",
                        "title": f"t (0 = initialization, 1 = step {probe['step']})",
                    },
                    "y": {
                        "field": "loss",
                        "type": "quantitative",
                        "title": "loss (mean per sample)",
                        **y_scale(r["loss"] for r in rows),
                    },
                    "tooltip": [exact("t", "t"), exact("loss", "loss")],
                },
            }  # fmt: skip
        ],
    )


PROBE_FIGURES = ("density", "slices_1d", "surface_2d", "interpolation")


def probe_figures(detail: dict[str, Any], probe: dict[str, Any] | None) -> dict[str, Spec]:
    """The figures of one probe (or, with none, why there is nothing to show)."""
    if probe is None:
        why = not_probed(detail)
        titles = ("spectral density", "1-D loss slices", "2-D loss surface", "interpolation")
        return {n: empty(why, title=t) for n, t in zip(PROBE_FIGURES, titles, strict=True)}
    return {
        "density": density(probe),
        "slices_1d": slices_1d(probe),
        "surface_2d": surface_2d(probe),
        "interpolation": interpolation(probe),
    }


def run_figures(
    detail: dict[str, Any], probes: list[dict[str, Any]], probe: int | None = None
) -> dict[str, Spec]:
    """Every figure of the run, by name (the page's element is `plot-<name>`); the probe
    figures show `probes[probe]`, by default the last probe. IndexError if out of range."""
    chosen = probes[-1 if probe is None else probe] if probes or probe is not None else None
    return {
        "loss": loss(detail),
        "grad_norm": grad_norm(detail),
        "lr_clip": lr_clip(detail),
        "test": evaluations(detail),
        "hessian": hessian(detail, probes),
        **probe_figures(detail, chosen),
    }
