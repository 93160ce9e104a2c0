"""Parallel coordinates: one vertical axis per dimension, one polyline per item (a run of a
sweep, a trial of a study), as optuna-dashboard and W&B draw them.

Vega-Lite has no parallel-coordinate mark, and its folded form (one row per item and
dimension) needs every axis on one scale, so each dimension is placed on [0, 1] here:
categories evenly spaced in their given order, numbers min-max scaled (on a log scale where
every value is positive and they span more than a decade). The axis labels are text marks at
those positions, and the tooltip carries each value as it was measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from service.figures import Spec, empty, figure, finite, sig3

Kind = Literal["nominal", "number"]


@dataclass(frozen=True)
class Dim:
    field: str
    title: str
    kind: Kind = "number"


def _positions(values: list[Any], kind: Kind) -> tuple[list[float | None], list[Spec]]:
    """Each value's place on [0, 1], and the axis labels [{pos, label}] of the dimension."""
    if kind == "nominal":
        cats = list(dict.fromkeys(str(v) for v in values if v is not None))
        step = 1 / max(len(cats) - 1, 1)
        where = {c: (i * step if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
        pos = [None if v is None else where[str(v)] for v in values]
        return pos, [{"pos": where[c], "label": c} for c in cats]
    nums = [finite(v) for v in values]
    present = [v for v in nums if v is not None]
    if not present:
        return [None] * len(values), []
    lo, hi = min(present), max(present)
    log = lo > 0 and hi / lo > 10

    def t(v: float) -> float:
        return math.log10(v) if log else v

    span = t(hi) - t(lo)
    pos = [None if v is None else ((t(v) - t(lo)) / span if span else 0.5) for v in nums]
    labels = [{"pos": 0.0 if span else 0.5, "label": sig3(lo)}]
    if span:
        labels.append({"pos": 1.0, "label": sig3(hi)})
    return pos, labels


def parallel(
    items: Sequence[dict[str, Any]],
    dims: Sequence[Dim],
    *,
    key: str,
    color: Spec,
    title: str,
    description: str,
    tooltip: Sequence[Spec] = (),
) -> Spec:
    """Items (dicts with `key`, every dim's field and the colour's field) as polylines across
    `dims`. A missing value leaves its point out (the line joins its neighbours)."""
    # A dimension on which every item agrees separates nothing: left out.
    dims = [d for d in dims if len({str(i.get(d.field)) for i in items} - {"None"}) > 1]
    if not items or len(dims) < 2:
        return empty("fewer than two dimensions on which the items differ", title=title)
    rows: list[Spec] = []
    ticks: list[Spec] = []
    for d in dims:
        pos, labels = _positions([i.get(d.field) for i in items], d.kind)
        ticks += [label | {"dim": d.title} for label in labels]
        for item, p in zip(items, pos, strict=True):
            if p is not None:
                rows.append(
                    {k: item.get(k) for k in (key, color["field"])}
                    | {"dim": d.title, "pos": p, "reading": sig3(item.get(d.field))}
                    | {t["field"]: item.get(t["field"]) for t in tooltip}
                )
    order = [d.title for d in dims]
    x = {
        "field": "dim",
        "type": "nominal",
        "sort": order,
        "scale": {"type": "point", "padding": 0.3},
        "axis": {"orient": "top", "title": None, "labelAngle": 0, "domain": False,
                 "ticks": False, "labelFontWeight": "bold", "labelLimit": 140},
    }  # fmt: skip
    y = {"field": "pos", "type": "quantitative", "scale": {"domain": [-0.04, 1.04]}, "axis": None}
    return figure(
        title=title,
        description=description,
        height=280,
        layer=[
            {
                "data": {"values": [{"dim": t} for t in order]},
                "mark": {"type": "rule", "color": "#b9c0cb"},
                "encoding": {"x": x},
            },
            {
                "data": {"values": rows},
                "params": [
                    {
                        "name": "shown",
                        "select": {"type": "point", "fields": [color["field"]]},
                        "bind": "legend",
                    },
                ],  # fmt: skip
                "mark": {"type": "line", "strokeWidth": 1.3, "opacity": 0.75},
                "encoding": {
                    "x": x,
                    "y": y,
                    "detail": {"field": key, "type": "nominal"},
                    "color": color,
                    "opacity": {"condition": {"param": "shown", "value": 0.8}, "value": 0.06},
                    "tooltip": [
                        {"field": key},
                        {"field": "dim", "title": "axis"},
                        {"field": "reading", "title": "value"},
                        *tooltip,
                    ],
                },
            },
            {
                "data": {"values": ticks},
                "mark": {
                    "type": "text",
                    "align": "left",
                    "dx": 4,
                    "fontSize": 10,
                    "color": "#374151",
                    "limit": 120,
                },
                "encoding": {"x": x, "y": y, "text": {"field": "label"}},
            },  # fmt: skip
        ],
    )
