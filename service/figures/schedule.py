"""A schedule's trend plot: each configuration's steps to target night after night (the
median over the night's seeds, a bar from the fastest to the slowest seed), from
service.nightwatch.history. Nights with an alert on a configuration are drawn as red
rings on its line."""

from __future__ import annotations

from typing import Any

from service.figures import Spec, empty, figure, legend_toggle, toggled_opacity


def trend_rows(history: dict[str, Any]) -> list[dict[str, Any]]:
    labels = {c["config_key"]: c["label"] for c in history["configs"]}
    rows = []
    for key, nights in history["cells"].items():
        for night, cell in sorted(nights.items()):
            rows.append(
                {
                    "configuration": labels[key],
                    "night": night,
                    "steps": cell["steps_median"],
                    "fastest": cell["steps_low"],
                    "slowest": cell["steps_high"],
                    "seeds": cell["seeds"],
                    "reached": cell["reached"],
                    "alert": ", ".join(history["alerts"].get(key, {}).get(night, [])) or None,
                }
            )
    return rows


def trend_figure(history: dict[str, Any]) -> Spec:
    rows = trend_rows(history)
    title = "steps to target, night by night (median of the seeds; bar: fastest to slowest)"
    if not rows:
        return empty("no finished night yet", title=title)
    color = {"field": "configuration", "type": "nominal", "title": "configuration"}
    x = {"field": "night", "type": "ordinal", "title": "night"}
    y_title = "steps to target (censored runs at the budget)"
    y = {"field": "steps", "type": "quantitative", "title": y_title, "scale": {"type": "log"}}
    tooltip = [
        {"field": "configuration", "type": "nominal"},
        {"field": "night", "type": "ordinal"},
        {"field": "steps", "type": "quantitative", "title": "median steps"},
        {"field": "fastest", "type": "quantitative"},
        {"field": "slowest", "type": "quantitative"},
        {"field": "reached", "type": "quantitative", "title": "seeds that reached the target"},
        {"field": "alert", "type": "nominal"},
    ]
    return figure(
        title=title,
        description="For each configuration of the schedule, the median steps to target of "
        "each night's seeds, with the range over the seeds; rings mark nights with an alert.",
        data={"values": rows},
        height=300,
        layer=[
            {
                "name": "spread",
                "mark": {"type": "rule", "opacity": 0.5},
                "encoding": {
                    "x": x,
                    "y": {**y, "field": "fastest"},
                    "y2": {"field": "slowest"},
                    "color": color,
                    "opacity": toggled_opacity(),
                },
            },
            {
                "name": "median",
                "params": [legend_toggle("configuration")],
                "mark": {"type": "line", "point": True},
                "encoding": {
                    "x": x,
                    "y": y,
                    "color": color,
                    "opacity": toggled_opacity(),
                    "tooltip": tooltip,
                },
            },
            {
                "name": "alert",
                "transform": [{"filter": "datum.alert != null"}],
                "mark": {"type": "point", "size": 160, "strokeWidth": 2, "color": "#d62728"},
                "encoding": {"x": x, "y": y, "tooltip": tooltip},
            },
        ],
    )


def schedule_figures(history: dict[str, Any]) -> dict[str, Spec]:
    return {"trend": trend_figure(history)}
