"""A run's figures as files (`plateau plot`)."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any, Literal


def _present(xs: list[Any], ys: list[Any]) -> tuple[list[float], list[float]]:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=False) if y is not None and math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def write_figures(
    detail: dict[str, Any],
    probes: list[dict[str, Any]],
    out_dir: Path,
    *,
    fmt: Literal["svg", "png", "pdf"] = "svg",
) -> list[Path]:
    """Write the run's figures into out_dir; returns the files written.

    loss (train and eval, plateau segments shaded, target dashed), grad_norm (global and
    per layer), lr_clip (learning rate and clip events), and, when the run was probed:
    hessian (λmax, λmin over the probed steps), and from the last probe density, slices_1d,
    surface_2d (contour, the run's parameters at the origin), interpolation (init → end).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    title = f"run {detail['id']} · " + " · ".join(
        str(v) for k, v in detail["summary"].items() if k != "task" and v is not None
    )

    def save(fig: Any, name: str) -> None:
        fig.suptitle(textwrap.fill(title, 100), fontsize=7)
        fig.tight_layout()
        path = out_dir / f"run{detail['id']}_{name}.{fmt}"
        fig.savefig(path, dpi=150)
        plt.close(fig)
        written.append(path)

    c = detail["curves"]
    steps = c["step"]
    result = detail.get("result") or {}

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(*_present(steps, c["loss"]), lw=1, label="train (minibatch)")
    ax.plot(*_present(steps, c["eval_loss"]), "o-", ms=3, lw=1, label="test")
    for i, seg in enumerate((result.get("plateaus") or {}).get("segments", [])):
        label = "plateau" if i == 0 else None
        ax.axvspan(seg["start"], seg["end"], color="orange", alpha=0.2, lw=0, label=label)
    target = detail["config"]["target"]["loss"]
    ax.axhline(target, ls="--", color="gray", lw=0.8, label=f"target {target}")
    ax.set(xlabel="step", ylabel="loss", yscale="log")
    ax.legend(fontsize=7)
    save(fig, "loss")

    fig, ax = plt.subplots(figsize=(7, 3.5))
    layers: dict[str, list[Any]] = {}
    for i, row in enumerate(c["layer_grad_norms"]):
        for name, value in (row or {}).items():
            layers.setdefault(name, [None] * len(steps))[i] = value
    for name, values in layers.items():
        ax.plot(*_present(steps, values), lw=0.7, alpha=0.7, label=name)
    ax.plot(*_present(steps, c["grad_norm"]), color="black", lw=1.2, label="global")
    ax.set(xlabel="step", ylabel="gradient norm", yscale="log")
    ax.legend(fontsize=6, ncol=2)
    save(fig, "grad_norm")

    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(*_present(steps, c["lr"]), lw=1.2, label="learning rate")
    clipped = [s for s, flag in zip(steps, c["clipped"], strict=False) if flag]
    if clipped:
        ax.vlines(clipped, 0, 0.08, transform=ax.get_xaxis_transform(), color="red", lw=0.6)
        ax.plot([], [], color="red", label=f"clip events ({len(clipped)})")
    ax.set(xlabel="step", ylabel="learning rate")
    ax.legend(fontsize=7)
    save(fig, "lr_clip")

    if not probes:
        return written
    fig, ax = plt.subplots(figsize=(7, 3))
    ps = [p["step"] for p in probes]
    ax.plot(*_present(ps, [p["lambda_max"] for p in probes]), "o-", label="λmax")
    ax.plot(*_present(ps, [p["lambda_min"] for p in probes]), "s-", label="λmin")
    ax.axhline(0, color="gray", lw=0.6)
    ax.set(xlabel="step", ylabel="Hessian eigenvalue", yscale="symlog")
    ax.legend(fontsize=7)
    save(fig, "hessian")

    last = probes[-1]
    data = last["data"]
    density = data.get("density") or {}
    if density.get("grid"):
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.plot(density["grid"], density["values"], lw=1)
        ax.axvline(0, color="gray", lw=0.6)
        ax.set(xlabel="eigenvalue", ylabel="density", yscale="log", title=f"step {last['step']}")
        save(fig, "density")
    slices = data.get("slices") or {}
    labels = {
        "random_1d": "random direction",
        "top_eigvec_1d": "top eigenvector",
        "bottom_eigvec_1d": "bottom eigenvector",
    }
    if any(k in slices for k in labels):
        fig, ax = plt.subplots(figsize=(7, 3))
        for key, label in labels.items():
            if key in slices:
                ax.plot(*_present(slices[key]["alphas"], slices[key]["values"]), label=label)
        ax.axvline(0, color="gray", lw=0.6)
        ax.set(xlabel="α (distance along the direction)", ylabel="loss")
        ax.legend(fontsize=7)
        save(fig, "slices_1d")
    surface = slices.get("random_2d")
    if surface:
        fig, ax = plt.subplots(figsize=(5, 4.2))
        # values[i][j] = L(θ + α_i d1 + β_j d2): rows are α, so transpose for (x=α, y=β).
        z = [list(col) for col in zip(*surface["values"], strict=True)]
        cs = ax.contourf(surface["alphas"], surface.get("betas", surface["alphas"]), z, 20)
        fig.colorbar(cs, ax=ax, label="loss")
        ax.plot([0], [0], "r*", ms=12, label="the run")
        ax.set(xlabel="α (direction 1)", ylabel="β (direction 2)")
        ax.legend(fontsize=7)
        save(fig, "surface_2d")
    interp = slices.get("interpolation")
    if interp:
        fig, ax = plt.subplots(figsize=(7, 3))
        ts = interp.get("ts") or interp.get("alphas")
        ax.plot(*_present(ts, interp["values"]), "o-", ms=3)
        ax.set(xlabel="t (0 = initialization, 1 = end)", ylabel="loss", yscale="log")
        save(fig, "interpolation")
    return written
