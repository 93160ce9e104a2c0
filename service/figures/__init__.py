"""Figures: one Vega-Lite definition per chart, drawn by two renderers.

- the pages: the API serves the specs (GET /api/v1/runs/{id}/figures and friends) and
  pages.js hands each to vega-embed (vendored under service/web/static/vendor/vega/), which
  adds zoom, pan, hover read-out and legend toggles from the spec's own params;
- files for papers: `plateau plot` renders the same specs to SVG, PNG or PDF with
  vl-convert (`render`), offline: it bundles Vega-Lite.

A figure is a function from JSON documents (a run and its probes, a sweep's runs, a study)
to a spec dict; this module holds what they share (the schema, the look, smoothing, the
helpers for log axes and empty charts). The data are inlined in the spec, so a spec is a
self-contained picture of what was measured: no figure interpolates across steps that
nobody measured.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

VEGA_LITE = "6.4"  # what vl-convert renders and the vendored vega-lite.min.js speaks
SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"

Spec = dict[str, Any]
FileFormat = Literal["svg", "png", "pdf"]

WIDTH = 560  # a file's plot width in px; the pages use their container's width
HEIGHT = 240

# TensorBoard's smoothing: an exponential moving average with weight w on the past. The
# levels are precomputed (Vega-Lite has no recursive transform) and a radio picks one.
SMOOTHING = (0.0, 0.6, 0.9, 0.97)
SMOOTHING_DEFAULT = 0.6

# The series colours of every chart (Vega-Lite's category range); figures that fix a colour
# per series (the gradient norms' black "global" first) take them from here too.
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]  # fmt: skip

CONFIG: Spec = {
    "font": "system-ui, -apple-system, 'Segoe UI', sans-serif",
    "axis": {"labelFontSize": 11, "titleFontSize": 12, "titleFontWeight": "normal"},
    "legend": {"labelFontSize": 11, "titleFontSize": 11, "orient": "bottom", "columns": 4},
    "title": {"fontSize": 13, "anchor": "start", "fontWeight": "normal"},
    "view": {"stroke": "#b9c0cb"},
    "range": {"category": PALETTE},
}


def figure(*, title: str | Sequence[str] = "", description: str = "", **spec: Any) -> Spec:
    """A top-level spec: the schema, the shared look, a title and an accessible
    description (vega-embed puts it in the chart's aria-label), then `spec`'s keys."""
    head: Spec = {"$schema": SCHEMA, "config": CONFIG, "width": "container", "height": HEIGHT}
    if title:
        head["title"] = {"text": title}
    if description:
        head["description"] = description
    return head | spec


def empty(message: str, *, title: str = "") -> Spec:
    """A chart with nothing to plot: the reason, centred, where the chart would be."""
    return figure(
        title=title,
        description=message,
        height=60,
        data={"values": [{"message": message}]},
        mark={"type": "text", "fontStyle": "italic", "color": "#6b7280", "fontSize": 12},
        encoding={"text": {"field": "message"}},
        config=CONFIG | {"view": {"stroke": None}},
    )


def finite(value: Any) -> float | None:
    """value as a float, or None where JSON would carry NaN/inf/null (not plottable)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def sig3(value: Any) -> str:
    """A number for people, as READABLE labels axes and Pages.fmt the pages' tables: 3
    significant digits (0.25578753 -> 0.256, 9548.99 -> 9550), the exponent form outside
    [1e-3, 1e5) (5.8583e-7 -> 5.86e-7); a whole number below 1e5 stays exact (1109 steps)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—" if value is None else str(value)
    if not math.isfinite(value) or value == 0:
        return str(value) if value else "0"
    if not 1e-3 <= abs(value) < 1e5:
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    if float(value).is_integer():
        return str(int(value))
    return f"{float(f'{value:.3g}'):.15g}"


def log_scale(values: Iterable[Any]) -> bool:
    """Whether a log axis can show all of `values`: some present, every present one > 0."""
    present = [v for v in (finite(x) for x in values) if v is not None]
    return bool(present) and all(v > 0 for v in present)


def scale(values: Iterable[Any], **extra: Any) -> Spec:
    """A y scale: log where every value is positive, else linear without forcing zero."""
    return ({"type": "log"} if log_scale(values) else {"zero": False}) | extra


def y_scale(values: Iterable[Any], **extra: Any) -> Spec:
    """`scale(values)` for an encoding, with READABLE axis labels; a log axis over more than
    two decades labels only the powers of ten."""
    present = [v for v in (finite(x) for x in values) if v is not None]
    sc = scale(present, **extra)
    many = sc.get("type") == "log" and max(present) / min(present) > 100
    return {"scale": sc, "axis": readable(decades=many)}


def ema(values: Sequence[float | None], weight: float) -> list[float | None]:
    """TensorBoard's debiased exponential moving average; gaps (None) stay gaps and do not
    reset the average."""
    out: list[float | None] = []
    last, norm = 0.0, 0.0
    for v in values:
        if v is None:
            out.append(None)
            continue
        last = weight * last + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(last / norm if norm else v)
    return out


def exact(field: str, title: str) -> Spec:
    """A tooltip entry that shows the value at full precision: a nominal field is shown as
    JavaScript prints the number (shortest round trip), not through a d3 format."""
    return {"field": field, "type": "nominal", "title": title}


# Axis and colour-bar labels for people: 3 significant digits, the exponent form outside
# [1e-3, 1e5) (so 5.8583e-7 reads 5.86e-7, never a cut 5.8583).
READABLE = (
    "datum.value === 0 ? '0' : abs(datum.value) >= 1e5 || abs(datum.value) < 1e-3"
    " ? replace(format(datum.value, '.3~e'), 'e+', 'e') : format(datum.value, '.3~r')"
)


def readable(*, decades: bool = False, **extra: Any) -> Spec:
    """An axis or legend whose labels are READABLE; with `decades`, only powers of ten are
    labelled (a log axis over many decades)."""
    if decades:
        power = "abs(log(datum.value) / LN10 - round(log(datum.value) / LN10)) < 1e-6"
        return {"labelExpr": f"{power} ? ({READABLE}) : ''"} | extra
    return {"labelExpr": READABLE} | extra


def smoothing_param() -> Spec:
    """The smoothing control: a radio bound to the precomputed levels of SMOOTHING."""
    return {
        "name": "smoothing",
        "value": SMOOTHING_DEFAULT,
        "bind": {"input": "radio", "options": list(SMOOTHING), "name": "smoothing "},
    }


def zoom_param(name: str = "zoom", encodings: Sequence[str] = ("x", "y")) -> Spec:
    """Drag to pan, wheel to zoom, double-click to reset: scales bound to an interval."""
    return {"name": name, "select": {"type": "interval", "encodings": list(encodings)},
            "bind": "scales"}  # fmt: skip


def legend_toggle(field: str, name: str = "shown") -> Spec:
    """Click a legend entry to show only that series (shift-click adds more)."""
    return {"name": name, "select": {"type": "point", "fields": [field]}, "bind": "legend"}


def toggled_opacity(name: str = "shown", on: float = 1.0, off: float = 0.08) -> Spec:
    return {"condition": {"param": name, "value": on}, "value": off}


def static(spec: Spec) -> Spec:
    """The spec for a file: a fixed width instead of the page's container, and no input
    widgets (there is nobody to click them): each bound param keeps its value. Zoom and
    legend selections stay; at rest they change nothing."""
    out = dict(spec)
    if out.get("width") == "container":
        out["width"] = WIDTH
    for key in ("hconcat", "vconcat", "concat"):
        if key in out:
            out[key] = [static(s) for s in out[key]]
    if "layer" in out:
        out["layer"] = [static(s) for s in out["layer"]]
    if "params" in out:
        out["params"] = [
            {k: v for k, v in p.items() if k != "bind"} if isinstance(p.get("bind"), dict) else p
            for p in out["params"]
        ]
    return out


def render(spec: Spec, fmt: FileFormat) -> bytes:
    """The spec as an SVG, PNG (2× scale) or PDF file's bytes, offline, with vl-convert."""
    import vl_convert as vlc

    flat = static(spec)
    if fmt == "svg":
        return vlc.vegalite_to_svg(flat, vl_version=VEGA_LITE).encode()
    if fmt == "png":
        return bytes(vlc.vegalite_to_png(flat, vl_version=VEGA_LITE, scale=2))
    return bytes(vlc.vegalite_to_pdf(flat, vl_version=VEGA_LITE))


def write(figures: dict[str, Spec], out_dir: Path, *, prefix: str, fmt: FileFormat) -> list[Path]:
    """Each figure to `<out_dir>/<prefix>_<name>.<fmt>`; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, spec in figures.items():
        path = out_dir / f"{prefix}_{name}.{fmt}"
        path.write_bytes(render(spec, fmt))
        written.append(path)
    return written
