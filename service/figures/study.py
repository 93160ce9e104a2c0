"""An Optuna study's figures, from its page document (service/pages.py: `study_document`):
what optuna-dashboard shows (history with the best so far, parallel coordinates, slices,
importances), with the trials the objective cannot rank told apart.

- censored: a steps_to_target trial that never reached the target completes with a penalty,
  budget × (1 + log(1 + final loss / target)) (service/study_spec.py: objective_values), so
  it ranks behind every trial that reached it. It is drawn hollow, above a dashed rule at
  the budget, and named so in the legend.
- pruned: the pruner stopped it, so it has no objective value at all. Its last reported
  intermediate value is a smoothed training loss, another quantity: the history marks the
  trial with a grey rule and its tooltip, never a point on the objective's axis.

The first objective is drawn (a multi-objective study's others are in the trials table).
"""

from __future__ import annotations

from typing import Any

from service.figures import Spec, empty, figure, finite, scale, zoom_param
from service.figures.parallel import Dim, parallel

KINDS = {  # legend label, colour, filled
    "complete": ("complete", "#1f77b4", True),
    "censored": ("censored: never reached the target (penalty value)", "#d62728", False),
    "pruned": ("pruned (no value: stopped by the pruner)", "#9ca3af", True),
    "best": ("best so far", "#111827", True),
}
FLOAT_PARAMS = ("init_scale", "grad_clip_threshold", "lr")  # log ranges (study_spec.py)


def _label(kind: str) -> str:
    return KINDS[kind][0]


VALUED_COLOR = {  # the trials with a value only: complete and censored
    "field": "kind",
    "type": "nominal",
    "title": None,
    "scale": {"domain": [KINDS[k][0] for k in ("complete", "censored")],
              "range": [KINDS[k][1] for k in ("complete", "censored")]},
    "legend": {"labelLimit": 400, "columns": 2},
}  # fmt: skip
HOLLOW_CENSORED = {  # censored trials drawn hollow, the others filled
    "condition": {"test": f"datum.kind === '{KINDS['censored'][0]}'", "value": "white"},
    "field": "kind",
    "type": "nominal",
    "legend": None,
}
KIND_COLOR = {
    "field": "kind",
    "type": "nominal",
    "title": None,
    "scale": {"domain": [v[0] for v in KINDS.values()], "range": [v[1] for v in KINDS.values()]},
    "legend": {"labelLimit": 400, "columns": 2},
}


def objective_name(doc: dict[str, Any]) -> str:
    return str((doc.get("objective") or ["value"])[0])


def valued(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Trials with a first objective value (complete and censored), as flat rows."""
    rows = []
    for t in doc["trials"]:
        v = finite((t.get("values") or [None])[0])
        if t["kind"] in ("complete", "censored") and v is not None:
            params = {k: round_param(p) for k, p in (t.get("params") or {}).items()}
            rows.append({"trial": t["number"], "value": v, "kind": _label(t["kind"])} | params)
    return rows


def round_param(value: Any) -> Any:
    """A sampled float to 3 significant digits (0.25578753 -> 0.256); others as they are."""
    return float(f"{value:.3g}") if isinstance(value, float) else value


def trial_points(x: Spec, y: Spec, color: Spec, tooltip: list[Spec]) -> Spec:
    """A point per trial, coloured by its kind, hollow where its value is a penalty."""
    return {
        "mark": {"type": "point", "size": 45, "strokeWidth": 1.6},
        "encoding": {
            "x": x,
            "y": y,
            "color": color,
            "fill": HOLLOW_CENSORED | {"scale": color["scale"]},
            "tooltip": tooltip,
        },
    }


def history(doc: dict[str, Any]) -> Spec:
    """Objective by trial on a log axis (where positive), the best so far as a step line,
    the budget as a dashed rule (censored values lie above it), pruned trials as rules."""
    name = objective_name(doc)
    title = f"optimization history: {name} by trial"
    rows = valued(doc)
    if not rows:
        return empty("no complete trials yet", title=title)
    best, running = [], float("inf")
    for r in sorted(rows, key=lambda r: r["trial"]):
        if r["value"] < running:
            running = r["value"]
        best.append({"trial": r["trial"], "value": running, "kind": _label("best")})
    x = {"field": "trial", "type": "quantitative", "title": "trial", "axis": {"tickMinStep": 1}}
    y = {"field": "value", "type": "quantitative", "title": name,
         "scale": scale([r["value"] for r in rows])}  # fmt: skip
    layers: list[Spec] = []
    pruned = [
        {"trial": t["number"], "kind": _label("pruned"),
         "step": (t.get("last_reported") or {}).get("step")}
        for t in doc["trials"] if t["kind"] == "pruned"
    ]  # fmt: skip
    if pruned:
        layers.append(
            {
                "data": {"values": pruned},
                "mark": {"type": "rule", "strokeDash": [2, 3], "strokeWidth": 1.5},
                "encoding": {
                    "x": x,
                    "color": KIND_COLOR,
                    "tooltip": [
                        {"field": "trial"},
                        {"field": "step", "title": "pruned at step"},
                        {"field": "kind", "title": "value"},
                    ],
                },
            }
        )
    if doc.get("censorable") and doc.get("budget_steps"):
        layers.append(
            {
                "data": {"values": [{"budget": doc["budget_steps"]}]},
                "mark": {"type": "rule", "strokeDash": [6, 4], "color": "#6b7280"},
                "encoding": {
                    "y": {"field": "budget", "type": "quantitative"},
                    "tooltip": [{"field": "budget", "title": "budget (steps); censored above"}],
                },
            }
        )
    layers += [
        {
            "data": {"values": best},
            "mark": {"type": "line", "interpolate": "step-after", "strokeWidth": 1.5},
            "encoding": {"x": x, "y": y, "color": KIND_COLOR},
        },
        {"data": {"values": rows}, "params": [zoom_param()]}
        | trial_points(
            x,
            y,
            KIND_COLOR,
            [
                {"field": "trial"},
                {"field": "value", "title": name, "format": ".4g"},
                {"field": "kind", "title": "trial"},
            ],
        ),
    ]
    budget = doc.get("budget_steps")
    caption = (
        f"censored trials never reached the target within the budget of {budget} steps: their "
        "value is the penalty budget × (1 + log(1 + final loss / target)), not a step count"
        if doc.get("censorable")
        else ""
    )
    return figure(
        title=[title, caption] if caption else title,
        description=f"{name} of each trial on a log axis with the best so far; {caption}",
        height=280,
        layer=layers,
    )


def parallel_trials(doc: dict[str, Any]) -> Spec:
    """Each trial with a value across its parameters and the objective."""
    rows = valued(doc)
    params = list(dict.fromkeys(k for t in doc["trials"] for k in t.get("params") or {}))
    dims = [Dim(p, p, "number" if p in FLOAT_PARAMS else "nominal") for p in params]
    dims.append(Dim("value", objective_name(doc)))
    return parallel(
        rows,
        dims,
        key="trial",
        color=VALUED_COLOR,
        title="parallel coordinates: parameters and objective",
        description="one line per trial with a value, across its parameters and objective",
    )


def slices(doc: dict[str, Any]) -> Spec:
    """The objective against each parameter, one small chart per parameter."""
    name = objective_name(doc)
    rows = valued(doc)
    params = list(dict.fromkeys(k for t in doc["trials"] for k in t.get("params") or {}))
    params = [p for p in params if len({str(r.get(p)) for r in rows} - {"None"}) > 1]
    if not rows or not params:
        return empty("no complete trials yet", title="slices: objective by parameter")
    y = {"field": "value", "type": "quantitative", "title": name,
         "scale": scale([r["value"] for r in rows])}  # fmt: skip
    charts = []
    for p in params:
        numeric = p in FLOAT_PARAMS
        x = (
            {"field": p, "type": "quantitative", "title": p,
             "scale": scale([r.get(p) for r in rows])}
            if numeric
            else {"field": p, "type": "nominal", "title": p, "axis": {"labelAngle": 0}}
        )  # fmt: skip
        charts.append(
            {
                "width": 230,
                "height": 170,
                "transform": [{"filter": f"isValid(datum[{p!r}])"}],
            }
            | trial_points(
                x,
                y,
                VALUED_COLOR,
                [
                    {"field": "trial"},
                    {"field": p, "format": ".3g"} if numeric else {"field": p},
                    {"field": "value", "title": name, "format": ".4g"},
                ],
            )
        )
    spec = figure(
        title="slices: objective by parameter",
        description=f"{name} against each sampled parameter, one point per trial",
        data={"values": rows},
        concat=charts,
        columns=3,
    )
    del spec["width"], spec["height"]
    return spec


def importances(doc: dict[str, Any]) -> Spec:
    """Optuna's parameter importances (optuna.importance.get_param_importances with its
    default evaluator, as service.studies.describe computes them), largest first."""
    title = "parameter importances"
    imp = doc.get("importances") or {}
    if "unavailable" in imp or not imp:
        reason = imp.get("unavailable") or "importances need at least 4 complete trials"
        return empty(str(reason), title=title)
    rows = [{"parameter": k, "importance": v} for k, v in imp.items()]
    return figure(
        title=title,
        description="how much of the objective each parameter explains (Optuna's importances)",
        height={"step": 24},
        data={"values": rows},
        mark={"type": "bar", "color": "#1f77b4"},
        encoding={
            "y": {"field": "parameter", "type": "nominal", "sort": "-x", "title": None},
            "x": {
                "field": "importance",
                "type": "quantitative",
                "title": "importance",
                "axis": {"format": ".0%"},
            },
            "tooltip": [{"field": "parameter"}, {"field": "importance", "format": ".3f"}],
        },  # fmt: skip
    )


def pareto(doc: dict[str, Any]) -> Spec:
    """A multi-objective study: every complete trial by its first two objectives, the
    Pareto front (Optuna's best_trials) joined by a line."""
    names = [str(n) for n in (doc.get("objective") or [])[:2]]
    title = f"Pareto front: {' vs '.join(names)}"
    front = {t["number"] for t in doc.get("pareto_front") or []}
    rows = [
        {"trial": t["number"], "x": t["values"][0], "y": t["values"][1],
         "kind": "Pareto front" if t["number"] in front else "other trials"}
        for t in doc["trials"]
        if t["state"] == "complete" and len(t.get("values") or []) >= 2
        and finite(t["values"][0]) is not None and finite(t["values"][1]) is not None
    ]  # fmt: skip
    if not rows:
        return empty("no complete trials yet", title=title)
    x = {
        "field": "x",
        "type": "quantitative",
        "title": names[0],
        "scale": scale([r["x"] for r in rows]),
    }
    y = {
        "field": "y",
        "type": "quantitative",
        "title": names[1],
        "scale": scale([r["y"] for r in rows]),
    }
    color = {"field": "kind", "type": "nominal", "title": None,
             "scale": {"domain": ["Pareto front", "other trials"],
                       "range": ["#d62728", "#9ca3af"]}}  # fmt: skip
    return figure(
        title=title,
        description=f"complete trials by {names[0]} and {names[1]}, the Pareto front joined",
        height=280,
        data={"values": rows},
        layer=[
            {
                "transform": [{"filter": "datum.kind === 'Pareto front'"}],
                "mark": {"type": "line", "color": "#d62728", "interpolate": "step-after"},
                "encoding": {"x": x, "y": y, "order": {"field": "x"}},
            },
            {
                "params": [zoom_param()],
                "mark": {"type": "point", "filled": True, "size": 45},
                "encoding": {
                    "x": x,
                    "y": y,
                    "color": color,
                    "tooltip": [
                        {"field": "trial"},
                        {"field": "x", "title": names[0], "format": ".4g"},
                        {"field": "y", "title": names[1], "format": ".4g"},
                    ],
                },
            },
        ],
    )


def study_figures(doc: dict[str, Any]) -> dict[str, Spec]:
    """Every figure of the study page, by name (the element is `plot-<name>`); `pareto`
    only for a study of several objectives."""
    figures = {
        "history": history(doc),
        "parallel": parallel_trials(doc),
        "slices": slices(doc),
        "importances": importances(doc),
    }
    if len(doc.get("objective") or []) > 1:
        figures["pareto"] = pareto(doc)
    return figures
