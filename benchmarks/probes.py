"""Benchmark: λmax by Lanczos vs the PyHessian-rule power iteration, and the cost of an HVP.

Reference problem: MLP 64-64-64-10 (tanh, 13,130 parameters) trained by 300 full-batch
gradient-descent steps (lr 0.1, seed 0) on the first 1,500 sklearn digits (pixels / 16), so
that the Hessian is far from trivial (loss ≈ 0.2, λmax ≈ 7.7 with λ₂/λ₁ ≈ 0.95: the regime where
the power method is slow). All timed probes run in float32 like a real probe; the reference
λmax is computed in float64, densely when the model has <= 3,000 parameters, otherwise by a
long Lanczos run whose Ritz residual certifies it.

For each seed (start vector) and each target relative error (1e-3, 1e-4) it reports the
number of HVPs each method needs before its estimate is within the target (Lanczos' largest
Ritz value after m steps, the power method's Rayleigh quotient after m products), and the
wall time of a run stopped right there (best of interleaved repeats). It also reports what
each method's own stopping rule returns (PyHessian's tol=1e-3 test; Lanczos' residual test,
tol=1e-3), the cost of one HVP (both methods) relative to one gradient on the same data, and
the wall time of ``run_probes`` with its defaults (float32 and a float64 copy).

    python benchmarks/probes.py [--samples 1500] [--seeds 5] [--steps 300]

Prints a table, then one JSON line. Targets (the issue): >= 3x fewer HVPs and >= 2x less
wall time than power iteration at equal accuracy; one HVP <= 3x one gradient.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

# Runnable as a plain script from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.probes import run_probes  # noqa: E402
from workers.probes.hvp import HVP, make_hvp, random_vector  # noqa: E402
from workers.probes.lanczos import lanczos  # noqa: E402
from workers.probes.power import power_iteration  # noqa: E402

TARGETS = (1e-3, 1e-4)
DENSE_LIMIT = 3_000


def reference_problem(
    samples: int, steps: int, device: torch.device
) -> tuple[nn.Module, Tensor, Tensor]:
    """The trained reference MLP (float32, eval mode) and its data."""
    from sklearn.datasets import load_digits

    x_np, y_np = load_digits(return_X_y=True)
    x = torch.tensor(x_np[:samples], dtype=torch.float32, device=device) / 16.0
    y = torch.tensor(y_np[:samples], device=device)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 64),
        nn.Tanh(),
        nn.Linear(64, 64),
        nn.Tanh(),
        nn.Linear(64, 64),
        nn.Tanh(),
        nn.Linear(64, 10),
    ).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), x, y


def reference_lambda_max(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, str]:
    """λmax in float64: dense eigvalsh when small, else a long Lanczos run (certified)."""
    model64 = _copy(model).double()
    hvp = make_hvp(model64, nn.CrossEntropyLoss(), x.double(), y)
    if hvp.dim <= DENSE_LIMIT:
        eye = torch.eye(hvp.dim, dtype=torch.float64, device=hvp.device)
        dense = torch.stack([hvp(e) for e in eye])
        return float(torch.linalg.eigvalsh((dense + dense.T) / 2)[-1]), "dense float64"
    res = lanczos(
        hvp, hvp.dim, k=1, max_steps=400, tol=1e-12, seed=12345, dtype=hvp.dtype, device=hvp.device
    )
    how = (
        f"float64 Lanczos, {res.matvecs} steps, residual {res.top_residuals[0]:.1e}"
        f" (converged={res.converged})"
    )
    return res.top[0], how


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def first_within(history: list[float], reference: float, target: float) -> int | None:
    """Products needed: 1 + the first index whose estimate is within target (relative)."""
    for i, value in enumerate(history):
        if abs(value - reference) <= target * abs(reference):
            return i + 1
    return None


def wall_times(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Best wall time of each fn over repeats, the fns interleaved.

    The box is shared: interleaving gives every contender the same background load, and the
    minimum is the least disturbed run.
    """
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def compare(hvp: HVP, reference: float, seed: int, budget: int, repeats: int) -> dict[str, Any]:
    """HVPs and seconds each method needs per target, for one start vector."""
    like = {"dtype": hvp.dtype, "device": hvp.device}
    # Lanczos reaches 1e-4 in tens of steps; capping it keeps the per-step eigh of T cheap.
    lz = lanczos(hvp, hvp.dim, k=1, max_steps=min(budget, 150), tol=0.0, seed=seed, **like)
    pw = power_iteration(hvp, hvp.dim, max_iter=budget, tol=0.0, seed=seed, **like)
    out: dict[str, Any] = {"seed": seed}
    for target in TARGETS:
        n_l = first_within(lz.top_history, reference, target)
        n_p = first_within(pw.history, reference, target)
        row: dict[str, Any] = {"lanczos_hvps": n_l, "power_hvps": n_p}
        if n_l is not None and n_p is not None:
            row["lanczos_s"], row["power_s"] = wall_times(
                [
                    lambda n=n_l: lanczos(hvp, hvp.dim, max_steps=n, tol=0.0, seed=seed, **like),
                    lambda n=n_p: power_iteration(
                        hvp, hvp.dim, max_iter=n, tol=0.0, seed=seed, **like
                    ),
                ],
                repeats,
            )
        out[f"{target:g}"] = row
    # Out of the box: each method's own stopping rule.
    own_p = power_iteration(hvp, hvp.dim, seed=seed, **like)
    own_l = lanczos(hvp, hvp.dim, k=1, max_steps=min(budget, 150), tol=1e-3, seed=seed, **like)
    out["pyhessian_rule"] = {
        "hvps": own_p.matvecs,
        "rel_error": abs(own_p.eigenvalues[0] - reference) / reference,
    }
    out["lanczos_rule"] = {
        "hvps": own_l.matvecs,
        "rel_error": abs(own_l.top[0] - reference) / reference,
    }
    return out


# HVP variants timed against one gradient: (label, make_hvp keyword arguments).
VARIANTS = (
    ("double_backward (cached graph, default)", {"method": "double_backward", "cache_graph": True}),
    ("double_backward (fresh graph)", {"method": "double_backward", "cache_graph": False}),
    ("forward_over_reverse", {"method": "forward_over_reverse"}),
)


def hvp_cost(model: nn.Module, x: Tensor, y: Tensor, repeats: int) -> dict[str, float]:
    """Milliseconds per gradient and per HVP (each variant) on the same data, and the ratios."""
    hvps = [make_hvp(model, nn.CrossEntropyLoss(), x, y, **kw) for _, kw in VARIANTS]
    v = random_vector(hvps[0].dim, seed=0, like=hvps[0])
    calls = 10

    def many(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(calls):
                fn()
            if x.is_cuda:
                torch.cuda.synchronize()

        return run

    fns = [many(hvps[0].gradient)] + [many(lambda h=h: h(v)) for h in hvps]
    wall_times(fns, 2)  # warm-up (and the cached variant records its graph)
    best = wall_times(fns, 3 * repeats)
    out = {"gradient_ms": 1e3 * best[0] / calls}
    for (label, _), seconds in zip(VARIANTS, best[1:], strict=True):
        out[f"{label} ms"] = 1e3 * seconds / calls
        out[f"{label} per gradient"] = seconds / best[0]
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--seeds", type=int, default=5, help="start vectors")
    parser.add_argument("--budget", type=int, default=1000, help="max HVPs per run")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    model, x, y = reference_problem(args.samples, args.steps, device)
    reference, how = reference_lambda_max(model, x, y)
    hvp = make_hvp(model, nn.CrossEntropyLoss(), x, y)
    runs = [compare(hvp, reference, seed, args.budget, args.repeats) for seed in range(args.seeds)]
    cost = hvp_cost(model, x, y, args.repeats)
    model64, x64 = _copy(model).double(), x.double()
    probe_s, probe_s64 = wall_times(
        [
            lambda: run_probes(model, nn.CrossEntropyLoss(), x, y),
            lambda: run_probes(model64, nn.CrossEntropyLoss(), x64, y),
        ],
        args.repeats,
    )

    machine = (
        f"{platform.machine()} {platform.processor() or ''}".strip()
        + f", {os.cpu_count()} CPUs, torch {torch.__version__}, "
        + f"{torch.get_num_threads()} threads, device {device}"
    )
    if device.type == "cuda":
        machine += f" ({torch.cuda.get_device_name(device)})"
    print(f"machine: {machine}")
    print(
        f"model: MLP 64-64-64-10 tanh, {hvp.dim} params, {args.samples} digits samples, "
        f"{args.steps} GD steps; loss {hvp.loss():.4f}"
    )
    print(f"reference lambda_max = {reference:.10g} ({how})\n")

    summary: dict[str, Any] = {}
    header = f"{'target':>8} {'method':>8} {'HVPs (median)':>14} {'seconds (median)':>17}"
    print(header + "   per-seed HVPs  (seconds: best of repeats, median over seeds)")
    print("-" * (len(header) + 20))
    for target in TARGETS:
        key = f"{target:g}"
        rows = [r[key] for r in runs]
        entry: dict[str, Any] = {}
        for method in ("lanczos", "power"):
            hvps = [r[f"{method}_hvps"] for r in rows]
            secs = [r[f"{method}_s"] for r in rows if f"{method}_s" in r]
            reached = [h for h in hvps if h is not None]
            med_h = statistics.median(reached) if len(reached) == len(hvps) else None
            med_s = statistics.median(secs) if len(secs) == len(hvps) else None
            entry[method] = {"hvps": med_h, "seconds": med_s, "per_seed_hvps": hvps}
            print(f"{key:>8} {method:>8} {_fmt(med_h, '>14g')} {_fmt(med_s, '>17.4f')}   {hvps}")
        lz, pw = entry["lanczos"], entry["power"]
        entry["hvp_ratio"] = pw["hvps"] / lz["hvps"] if pw["hvps"] and lz["hvps"] else None
        entry["time_ratio"] = (
            pw["seconds"] / lz["seconds"] if pw["seconds"] and lz["seconds"] else None
        )
        print(
            f"{'':>8} {'ratio':>8} {_fmt(entry['hvp_ratio'], '>14.2f')} "
            f"{_fmt(entry['time_ratio'], '>17.2f')}   (power / lanczos)"
        )
        summary[key] = entry

    own_p = [r["pyhessian_rule"] for r in runs]
    own_l = [r["lanczos_rule"] for r in runs]
    print("\nown stopping rules (median over seeds):")
    print(
        f"  PyHessian rule (tol=1e-3, max 100): "
        f"{statistics.median(o['hvps'] for o in own_p):g} HVPs, rel. error "
        f"{statistics.median(o['rel_error'] for o in own_p):.2e}"
    )
    print(
        f"  Lanczos (residual <= 1e-3 |lambda|): "
        f"{statistics.median(o['hvps'] for o in own_l):g} HVPs, rel. error "
        f"{statistics.median(o['rel_error'] for o in own_l):.2e}"
    )
    print("\nHVP cost on the same data (float32):")
    print(f"  gradient {cost['gradient_ms']:.2f} ms")
    for label, _ in VARIANTS:
        print(
            f"  {label:<40} {cost[f'{label} ms']:.2f} ms = "
            f"{cost[f'{label} per gradient']:.2f} x gradient"
        )
    print(
        f"\nrun_probes with defaults: {probe_s:.2f} s in float32, {probe_s64:.2f} s in float64"
        f" (best of {args.repeats})"
    )

    print(
        json.dumps(
            {
                "machine": machine,
                "dim": hvp.dim,
                "samples": args.samples,
                "reference_lambda_max": reference,
                "reference": how,
                "targets": summary,
                "pyhessian_rule": own_p,
                "lanczos_rule": own_l,
                "hvp_cost": cost,
                "run_probes_seconds": {"float32": probe_s, "float64": probe_s64},
                "per_seed": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
