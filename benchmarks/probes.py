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

Prints a table, then one JSON line.

``--accuracy`` measures instead how right the curvature numbers are, against the dense
float64 Hessians of the trained test networks (tests/workers/probes/trained.py, 682-910
parameters): coverage and width of the negative-mass interval over seeds and SLQ steps;
Lanczos steps to convergence and the error of the k = 5 extreme eigenvalues, against fixed
budgets of 40 and 60 steps; RMS error and 2-stderr coverage of the trace estimators at equal
numbers of products (also at initialization); and ``run_probes`` with the spec defaults on
the trained reference MLP (13,130 parameters, float64). The figures in the docstrings of
workers/probes/__init__.py, radau.py, hutchpp.py and xtrace.py come from it.

    python benchmarks/probes.py --accuracy [--seeds 20]

Targets (the issue): >= 3x fewer HVPs and >= 2x less
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


def index_coverage(nets: list[Any], seeds: int) -> list[dict[str, Any]]:
    """Negative-mass interval vs the exact fraction, per network and SLQ step count."""
    from workers.probes.density import default_eps, negative_mass, slq
    from workers.probes.radau import negative_mass_interval

    rows = []
    for net in nets:
        h, d = net.hessian, net.hessian.shape[0]
        for steps in (20, 30, 40, 60, 100):
            cover, widths, radau, zs = 0, [], [], []
            for seed in range(seeds):
                q = slq(lambda v, h=h: h @ v, d, num_vectors=4, steps=steps, seed=seed)
                eps = default_eps(q)
                exact = float((net.eigenvalues < -eps).double().mean())
                iv = negative_mass_interval(q, eps=eps)
                mass, stderr = negative_mass(q, eps=eps)
                cover += iv.lo <= exact <= iv.hi
                widths.append(iv.hi - iv.lo)
                radau.append(iv.quadrature_hi - iv.quadrature_lo)
                zs.append(abs(mass - exact) / stderr if stderr > 0 else 0.0)
            rows.append(
                {
                    "net": net.name,
                    "steps": steps,
                    "exact": exact,
                    "covered": cover,
                    "seeds": seeds,
                    "width": [min(widths), max(widths)],
                    "radau_width": [min(radau), max(radau)],
                    "gauss_max_stderrs_off": max(zs),
                }
            )
    return rows


def lanczos_convergence(nets: list[Any]) -> list[dict[str, Any]]:
    """Products to converge and the error of the k extreme eigenvalues, vs fixed budgets."""
    rows = []
    for net in nets:
        h, d = net.hessian, net.hessian.shape[0]
        exact = net.eigenvalues
        for k in (3, 5):
            for label, kw in (
                ("fixed 40", {"max_steps": 40, "tol": 0.0}),
                ("fixed 60", {"max_steps": 60, "tol": 0.0}),
                ("40..300", {"min_steps": 40, "max_steps": 300, "tol": 1e-6}),
            ):
                res = lanczos(lambda v, h=h: h @ v, d, k=k, seed=0, **kw)  # type: ignore[arg-type]
                want_top, want_bottom = exact.flip(0)[:k].tolist(), exact[:k].tolist()
                top = [abs(a - b) / abs(b) for a, b in zip(res.top, want_top, strict=True)]
                bottom = [abs(a - b) / abs(b) for a, b in zip(res.bottom, want_bottom, strict=True)]
                rows.append(
                    {
                        "net": net.name,
                        "k": k,
                        "budget": label,
                        "steps": res.matvecs,
                        "converged": res.top_converged + res.bottom_converged,
                        "max_rel_error_top": max(top),
                        "max_rel_error_bottom": max(bottom),
                    }
                )
    return rows


def trace_errors(nets: list[Any], seeds: int) -> list[dict[str, Any]]:
    """RMS relative error and |error| <= 2 stderr coverage per estimator and budget."""
    from workers.probes.hutchinson import hutchinson_trace
    from workers.probes.hutchpp import hutchpp_trace
    from workers.probes.xtrace import xtrace

    rows = []
    for net in nets:
        h, d = net.hessian, net.hessian.shape[0]
        exact = float(h.trace())
        for budget in (8, 16, 20, 30, 60):
            row: dict[str, Any] = {"net": net.name, "products": budget}
            estimators = {
                "hutchinson": lambda mv, d, m, s: hutchinson_trace(mv, d, num_vectors=m, seed=s),
                "hutchpp": lambda mv, d, m, s: hutchpp_trace(mv, d, num_matvecs=m, seed=s),
                "xtrace": lambda mv, d, m, s: xtrace(mv, d, num_matvecs=m, seed=s),
            }
            for name, fn in estimators.items():
                ests = [fn(lambda v, h=h: h @ v, d, budget, s) for s in range(seeds)]
                errors = [(e.estimate - exact) / exact for e in ests]
                covered = sum(abs(e.estimate - exact) <= 2 * e.stderr for e in ests)
                row[name] = {
                    "rms": (sum(x * x for x in errors) / seeds) ** 0.5,
                    "covered_2se": covered / seeds,
                }
            rows.append(row)
    return rows


def accuracy(args: argparse.Namespace) -> None:
    """``--accuracy``: the curvature numbers against dense Hessians (see the docstring)."""
    from tests.workers.probes.reference import dense_hessian
    from tests.workers.probes.trained import NAMES, Trained, build

    nets = [build(name) for name in NAMES]
    torch.manual_seed(0)
    x, y = nets[0].x, nets[0].y
    init = nn.Sequential(nn.Linear(64, 12), nn.Tanh(), nn.Linear(12, 10)).double().eval()
    h0 = dense_hessian(init, nn.CrossEntropyLoss(), x, y)
    at_init = Trained(
        "digits_init", init, nn.CrossEntropyLoss(), x, y, h0, torch.linalg.eigvalsh(h0)
    )

    index = index_coverage(nets, args.seeds)
    print("negative-mass interval, 4 probe vectors:")
    for r in index:
        print(
            f"  {r['net']:<15} exact {r['exact']:.4f}  {r['steps']:>3} steps: covered "
            f"{r['covered']}/{r['seeds']}, width {r['width'][0]:.3f}-{r['width'][1]:.3f} "
            f"(Gauss-Radau part {r['radau_width'][0]:.3f}-{r['radau_width'][1]:.3f}); "
            f"SLQ point estimate up to {r['gauss_max_stderrs_off']:.1f} stderr off"
        )
    lz = lanczos_convergence(nets)
    print("\nLanczos, k extreme eigenvalues at each end (tol 1e-6 · max|θ|):")
    for r in lz:
        print(
            f"  {r['net']:<15} k={r['k']} {r['budget']:>8}: {r['steps']:>3} steps, converged "
            f"{sum(r['converged'])}/{len(r['converged'])}, max rel. error top "
            f"{r['max_rel_error_top']:.1e} bottom {r['max_rel_error_bottom']:.1e}"
        )
    trace = trace_errors([*nets, at_init], 5 * args.seeds)
    print(f"\ntrace, RMS relative error (|error| <= 2 stderr) over {5 * args.seeds} seeds:")
    for r in trace:
        cells = "  ".join(
            f"{m} {r[m]['rms']:.1e} ({r[m]['covered_2se']:.2f})"
            for m in ("hutchinson", "hutchpp", "xtrace")
        )
        print(f"  {r['net']:<15} {r['products']:>3} products: {cells}")

    model, xr, yr = reference_problem(args.samples, args.steps, torch.device(args.device))
    model64 = _copy(model).double()
    ref = []
    for k in (3, 5):
        start = time.perf_counter()
        out = run_probes(
            model64, nn.CrossEntropyLoss(), xr.double(), yr, k=k, hutchinson_vectors=20
        )
        seconds = time.perf_counter() - start
        ref.append(
            {
                "k": k,
                "lanczos_steps": out["lanczos_steps"],
                "eigenvalue_converged": out["eigenvalue_converged"],
                "hvp_counts": out["hvp_counts"],
                "trace_method": out["trace_method"],
                "negative_mass": out["negative_mass"],
                "negative_mass_interval": out["negative_mass_interval"],
                "seconds": seconds,
            }
        )
        print(
            f"\nreference MLP ({out['dim']} params, float64), spec defaults, k={k}: "
            f"{out['lanczos_steps']} Lanczos steps, converged {out['eigenvalue_converged']}, "
            f"HVPs {out['hvp_counts']}, trace by {out['trace_method']}, negative mass "
            f"{out['negative_mass']:.4f} in {out['negative_mass_interval']}, {seconds:.1f} s"
        )
    print(json.dumps({"index": index, "lanczos": lz, "trace": trace, "reference": ref}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--seeds", type=int, default=5, help="start vectors")
    parser.add_argument("--budget", type=int, default=1000, help="max HVPs per run")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--accuracy", action="store_true", help="curvature accuracy instead")
    args = parser.parse_args()
    if args.accuracy:
        accuracy(args)
        return
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
