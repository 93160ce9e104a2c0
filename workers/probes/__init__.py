"""Matrix-free curvature probes of a training loss: eigenvalues, trace, density, slices.

Every probe is a small function over a Hessian-vector-product closure (``make_hvp``), so
none ever forms the Hessian H = ∇²L(θ) of the mean training loss
L(θ) = (1/N) Σ_i ℓ(f_θ(x_i), y_i). One module per method:

- ``hvp``: the operator v ↦ Hv (Pearlmutter 1994), over the full data, chunked.
- ``lanczos``: extreme eigenvalues λmax, λmin with residuals (Lanczos 1950), run until the
  k wanted at each end converge, thick-restarted when memory is short (Wu & Simon 2000).
- ``power``: power iteration with PyHessian's stopping rule, kept as a baseline.
- ``hutchinson``: tr(H) with its standard error (Hutchinson 1990).
- ``hutchpp``: tr(H) by Hutch++ (Meyer, Musco, Musco & Woodruff 2021).
- ``xtrace``: tr(H) by XTrace (Epperly, Tropp & Webber 2024).
- ``density``: spectral density and the fraction of negative eigenvalues by stochastic
  Lanczos quadrature (Ubaru et al. 2017; Ghorbani et al. 2019).
- ``radau``: an interval for that fraction that bounds the quadrature's bias
  (Gauss-Radau / Chebyshev-Markov-Stieltjes bounds) and its sampling error.
- ``slices``: 1-D / 2-D loss slices and linear interpolation (Goodfellow et al. 2015;
  Li et al. 2018).

``run_probes`` runs the ones asked for (``measure``) once and returns a JSON-serializable
dict. With the spec's defaults (k = 3, 40-300 Lanczos steps, 20 trace products, 4 × 30 SLQ)
a float64 probe of the trained reference MLP 64-64-64-10 (13,130 parameters, 1,500 digits
samples) took 123 Lanczos steps to converge, 265 HVPs in all, 2.2 s on a 2-core x86-64 CPU
box shared with other jobs; k = 5 took 161 steps and 2.6 s
(``python benchmarks/probes.py --accuracy``). At initialization the same probe took
1.5 s in float32 and 2.9-4.3 s in float64, 0.7 s on an NVIDIA H200, when Lanczos ran a fixed
60 steps (``python benchmarks/probes.py``).

Trace estimator (``trace_method``), each with ``hutchinson_vectors`` products in all:
"hutchinson", "hutchpp", "xtrace", or "auto", which takes

- the exact trace from d unit vectors when ``hutchinson_vectors >= d`` (any method does);
- XTrace when ``hutchinson_vectors >= 16``;
- Hutchinson below 16 (XTrace needs a few vectors in its sketch before it pays).

Measured on the dense Hessians of three trained float64 MLPs (682-910 parameters; the top 5
eigenvalues hold 76-94 % of ||H||_F²) and one at initialization (28 %), 100 seeds each,
root-mean-square relative error at equal numbers of products
(``python benchmarks/probes.py --accuracy``):

    products                 8          16          20          30          60
    trained, Hutchinson   10-14 %     8-10 %      7-9 %       5-7 %       4-5 %
    trained, Hutch++      12-14 %     6-9 %       5-6 %       3-5 %       0.9-1.5 %
    trained, XTrace       12-15 %     5-7 %       4-6 %       2-3 %       0.6-0.9 %
    at init, Hutchinson     26 %       19 %        17 %        13 %        10 %
    at init, Hutch++        32 %       28 %        24 %        22 %        13 %
    at init, XTrace         35 %       25 %        23 %        18 %        11 %

so auto trades a 1.3-1.4x larger error where the spectrum is flat (initialization) for a
1.1-1.8x smaller one on trained networks at 16 products, 1.3-2.5x at 20, 1.7-4x at 30 and
4-8x at 60; probes are mostly taken on trained networks (plateaus, the end of a run). The
standard errors: |error| <= 2·stderr in 90-97 % of seeds for Hutchinson, 82-98 % for
Hutch++, 88-100 % for XTrace (97-100 % from 16 products on: its jackknife is conservative).

Seeded example (a 2-parameter saddle, f(x, y) = x² - y²)::

    >>> import torch
    >>> from torch import nn
    >>> class Saddle(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.w = nn.Parameter(torch.tensor([0.5, -0.25], dtype=torch.float64))
    ...     def forward(self, x):
    ...         return (self.w[0] ** 2 - self.w[1] ** 2).expand(x.shape[0])
    >>> x = torch.zeros(4, 1, dtype=torch.float64)
    >>> out = run_probes(Saddle(), lambda out, y: out.mean(), x, x[:, 0], k=1)
    >>> [round(out[key], 9) for key in ("lambda_max", "lambda_min", "negative_mass", "trace")]
    [2.0, -2.0, 0.5, 0.0]
    >>> out["trace_method"], out["negative_mass_interval"]
    ('exact', [0.5, 0.5])
    >>> only = run_probes(Saddle(), lambda out, y: out.mean(), x, x[:, 0], measure=["trace"])
    >>> only["lambda_max"] is None, only["hvp_counts"]
    (True, {'check': 2, 'eigenvalues': 0, 'trace': 2, 'density': 0})
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn


class ProbeError(Exception):
    """A probe cannot give a trustworthy answer (bad input, non-deterministic loss, ...)."""


# The submodules import ProbeError from this package, so they load after it exists.
from workers.probes.density import default_eps, density_on_grid, negative_mass, slq  # noqa: E402
from workers.probes.hutchinson import TraceEstimate, hutchinson_trace  # noqa: E402
from workers.probes.hutchpp import hutchpp_trace  # noqa: E402
from workers.probes.hvp import DEFAULT_METHOD, HVP, Method, check_deterministic, make_hvp  # noqa: E402
from workers.probes.lanczos import lanczos  # noqa: E402
from workers.probes.radau import negative_mass_interval  # noqa: E402
from workers.probes.slices import (  # noqa: E402
    filter_normalized_direction,
    interpolation,
    make_loss_evaluator,
    slice_1d,
    slice_2d,
    unit_direction,
)
from workers.probes.xtrace import xtrace  # noqa: E402

__all__ = ["MEASURES", "TRACE_METHODS", "ProbeError", "run_probes", "trace_estimate"]

Measure = Literal["eigenvalues", "trace", "density", "slices"]
TraceMethod = Literal["auto", "hutchinson", "hutchpp", "xtrace"]
MEASURES: tuple[Measure, ...] = ("eigenvalues", "trace", "density", "slices")
TRACE_METHODS: tuple[TraceMethod, ...] = ("auto", "hutchinson", "hutchpp", "xtrace")
# auto picks XTrace from this many products on (see the table above).
XTRACE_MIN_MATVECS = 16
# The Lanczos basis and its stored products may hold this much; beyond, it thick-restarts.
LANCZOS_BASIS_BYTES = 2**30

# Every key a result has, by the probe that fills it; a probe not run leaves its keys None.
KEYS: dict[str, tuple[str, ...]] = {
    "eigenvalues": (
        "lambda_max",
        "lambda_min",
        "top_eigenvalues",
        "bottom_eigenvalues",
        "residuals",
        "converged",
        "eigenvalue_converged",
        "residual_bound",
        "lanczos_steps",
        "lanczos_restarts",
    ),
    "trace": ("trace", "trace_stderr", "trace_vectors", "trace_matvecs", "trace_method"),
    "density": (
        "negative_mass",
        "negative_mass_stderr",
        "negative_mass_interval",
        "negative_mass_eps",
        "density",
    ),
    "slices": ("slices",),
}


def _linspace(lo: float, hi: float, n: int) -> list[float]:
    return [float(t) for t in torch.linspace(lo, hi, n, dtype=torch.float64)]


def _flat_init(init_params: Tensor | Mapping[str, Tensor], names: Sequence[str]) -> Tensor:
    if isinstance(init_params, Tensor):
        return init_params.detach().reshape(-1)
    missing = [n for n in names if n not in init_params]
    if missing:
        raise ProbeError(f"init_params lacks parameter(s) {missing}")
    return torch.cat([init_params[n].detach().reshape(-1) for n in names])


def _finite(x: float) -> float | None:
    # JSON has no NaN/Infinity; None says "not available".
    return x if math.isfinite(x) else None


def trace_estimate(
    matvec: Callable[[Tensor], Tensor],
    dim: int,
    *,
    method: TraceMethod = "auto",
    matvecs: int = 30,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> TraceEstimate:
    """tr(H) by ``method`` with ``matvecs`` products (the rule for "auto" is above).

    With ``matvecs >= dim`` every method returns the exact trace Σ e_iᵀHe_i (d products,
    stderr 0, method "exact").
    """
    if method not in TRACE_METHODS:
        raise ProbeError(
            f"unknown trace method {method!r}; expected one of: {', '.join(TRACE_METHODS)}"
        )
    like = {"seed": seed, "dtype": dtype, "device": device}
    if matvecs >= dim:
        samples = []
        for i in range(dim):
            e = torch.zeros(dim, dtype=dtype, device=device)
            e[i] = 1.0
            samples.append(float(matvec(e)[i]))
        return TraceEstimate(
            estimate=math.fsum(samples),
            stderr=0.0,
            num_vectors=dim,
            samples=samples,
            matvecs=dim,
            method="exact",
        )
    if method == "auto":
        method = "xtrace" if matvecs >= XTRACE_MIN_MATVECS else "hutchinson"
    if method == "hutchinson":
        return hutchinson_trace(matvec, dim, num_vectors=matvecs, **like)  # type: ignore[arg-type]
    if method == "hutchpp":
        return hutchpp_trace(matvec, dim, num_matvecs=matvecs, **like)  # type: ignore[arg-type]
    return xtrace(matvec, dim, num_matvecs=matvecs, **like)  # type: ignore[arg-type]


def run_probes(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    measure: Collection[str] = MEASURES,
    k: int = 3,
    lanczos_steps: int = 40,
    lanczos_max_steps: int = 300,
    lanczos_tol: float | None = None,
    trace_method: TraceMethod = "auto",
    hutchinson_vectors: int = 30,
    slq_vectors: int = 4,
    slq_steps: int = 30,
    slice_points: int = 21,
    slice_points_2d: int = 11,
    eigvec_radius: float = 1.0,
    mode: Literal["eval", "train"] = "eval",
    seed: int = 0,
    init_params: Tensor | Mapping[str, Tensor] | None = None,
    params: Sequence[str] | None = None,
    batch_size: int | None = None,
    method: Method = DEFAULT_METHOD,
) -> dict[str, Any]:
    """The probes in ``measure`` at the model's current parameters, as a JSON-serializable dict.

    - "eigenvalues": the k largest and k smallest eigenvalues by Lanczos: at least
      ``lanczos_steps`` HVPs, then more, up to ``lanczos_max_steps``, until each of the 2k
      Ritz residuals is <= ``residual_bound`` = tol · max|θ| (``lanczos_tol`` default 1e-6
      in float64, 1e-4 otherwise). H then has an eigenvalue within the residual of each
      value; ``eigenvalue_converged`` {"top", "bottom"} flags each, ``converged`` all.
    - "trace": tr(H) ± ``trace_stderr`` by ``trace_method`` with ``hutchinson_vectors``
      HVPs (``trace_method`` in the result is the estimator used: "auto" resolves to one).
    - "density": the SLQ density, ``slq_vectors`` × ``slq_steps`` HVPs, and the fraction of
      eigenvalues below -negative_mass_eps (eps = 1e-3 · max|θ|, see density.default_eps):
      the SLQ point estimate ± its sampling stderr, and ``negative_mass_interval`` [lo, hi],
      which bounds the quadrature's bias too (``radau``).
    - "slices": loss slices (loss evaluations, no HVPs): filter-normalized random 1-D on
      α ∈ [-1, 1] and 2-D on [-1, 1]², the interpolation from ``init_params`` (flat tensor or
      name → tensor) on t ∈ [0, 1] and, when "eigenvalues" is measured too, the unit top and
      bottom eigenvector 1-D slices on α ∈ [-eigvec_radius, eigvec_radius]. Without
      "eigenvalues" those two are left out rather than paid for with a Lanczos run.

    ``loss`` and ``grad_norm`` (full batch) are always there. A probe not measured costs no
    HVP and leaves its keys None; ``hvp_counts`` splits ``hvp_count`` by probe, "check" being
    the two HVPs of the determinism check that precedes any HVP-based probe. The model is put
    in ``mode`` for the probe (recorded in the result) and every submodule's mode is restored
    afterwards; a non-deterministic HVP raises ``ProbeError``.
    """
    unknown = sorted(set(measure) - set(MEASURES))
    if unknown:
        raise ProbeError(f"unknown measure(s) {unknown}; expected one of: {', '.join(MEASURES)}")
    if mode not in ("eval", "train"):
        raise ProbeError(f"unknown mode {mode!r}; expected one of: eval, train")
    if trace_method not in TRACE_METHODS:
        raise ProbeError(
            f"unknown trace method {trace_method!r}; expected one of: {', '.join(TRACE_METHODS)}"
        )
    if slq_vectors < 2 or hutchinson_vectors < 2:
        raise ProbeError(
            "slq_vectors and hutchinson_vectors must be >= 2 to give standard errors; "
            f"got {slq_vectors} and {hutchinson_vectors}"
        )
    if lanczos_max_steps < lanczos_steps:
        raise ProbeError(
            f"lanczos_max_steps={lanczos_max_steps} is below lanczos_steps={lanczos_steps}"
        )
    if slice_points < 2 or slice_points_2d < 2:
        raise ProbeError(f"slice grids need >= 2 points; got {slice_points}, {slice_points_2d}")
    saved = [(m, m.training) for m in model.modules()]
    model.train(mode == "train")
    try:
        return _probe(
            model,
            loss_fn,
            inputs,
            targets,
            measure=[m for m in MEASURES if m in set(measure)],
            k=k,
            lanczos_steps=lanczos_steps,
            lanczos_max_steps=lanczos_max_steps,
            lanczos_tol=lanczos_tol,
            trace_method=trace_method,
            hutchinson_vectors=hutchinson_vectors,
            slq_vectors=slq_vectors,
            slq_steps=slq_steps,
            slice_points=slice_points,
            slice_points_2d=slice_points_2d,
            eigvec_radius=eigvec_radius,
            seed=seed,
            init_params=init_params,
            params=params,
            batch_size=batch_size,
            method=method,
        )
    finally:
        for module, training in saved:
            module.training = training


def _probe(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    measure: list[Measure],
    k: int,
    lanczos_steps: int,
    lanczos_max_steps: int,
    lanczos_tol: float | None,
    trace_method: TraceMethod,
    hutchinson_vectors: int,
    slq_vectors: int,
    slq_steps: int,
    slice_points: int,
    slice_points_2d: int,
    eigvec_radius: float,
    seed: int,
    init_params: Tensor | Mapping[str, Tensor] | None,
    params: Sequence[str] | None,
    batch_size: int | None,
    method: Method,
) -> dict[str, Any]:
    start = time.perf_counter()
    hvp = make_hvp(
        model, loss_fn, inputs, targets, params=params, batch_size=batch_size, method=method
    )
    like = {"dtype": hvp.dtype, "device": hvp.device}
    theta0 = None if init_params is None else _flat_init(init_params, hvp.names)
    if theta0 is not None and theta0.shape != (hvp.dim,):
        raise ProbeError(f"init_params has {theta0.numel()} entries, expected {hvp.dim}")
    out: dict[str, Any] = {key: None for keys in KEYS.values() for key in keys}
    counts = {"check": 0, "eigenvalues": 0, "trace": 0, "density": 0}
    if set(measure) - {"slices"}:
        check_deterministic(hvp, seed=seed)
        counts["check"] = hvp.count
    eig = None
    if "eigenvalues" in measure:
        tol = lanczos_tol
        if tol is None:
            tol = 1e-6 if hvp.dtype == torch.float64 else 1e-4
        itemsize = torch.finfo(hvp.dtype).bits // 8
        memory_cap = LANCZOS_BASIS_BYTES // (2 * hvp.dim * itemsize)
        before = hvp.count
        eig = lanczos(
            hvp,
            hvp.dim,
            k=k,
            min_steps=lanczos_steps,
            max_steps=lanczos_max_steps,
            tol=tol,
            seed=seed,
            return_vectors="slices" in measure,
            max_basis=max(lanczos_steps, min(lanczos_max_steps, memory_cap), 2 * k + 4),
            **like,
        )
        counts["eigenvalues"] = hvp.count - before
        out.update(
            lambda_max=eig.top[0],
            lambda_min=eig.bottom[0],
            top_eigenvalues=eig.top,
            bottom_eigenvalues=eig.bottom,
            residuals={"top": eig.top_residuals, "bottom": eig.bottom_residuals},
            converged=eig.converged,
            eigenvalue_converged={"top": eig.top_converged, "bottom": eig.bottom_converged},
            residual_bound=eig.bound,
            lanczos_steps=eig.matvecs,
            lanczos_restarts=eig.restarts,
        )
    if "trace" in measure:
        before = hvp.count
        trace = trace_estimate(
            hvp, hvp.dim, method=trace_method, matvecs=hutchinson_vectors, seed=seed + 1, **like
        )
        counts["trace"] = hvp.count - before
        out.update(
            trace=trace.estimate,
            trace_stderr=trace.stderr,
            trace_vectors=trace.num_vectors,
            trace_matvecs=trace.matvecs,
            trace_method=trace.method,
        )
    if "density" in measure:
        before = hvp.count
        out.update(_density(hvp, slq_vectors=slq_vectors, slq_steps=slq_steps, seed=seed + 2))
        counts["density"] = hvp.count - before
    if "slices" in measure:
        out["slices"] = _slices(
            model,
            loss_fn,
            inputs,
            targets,
            eig_vectors=None if eig is None else (eig.top_vectors, eig.bottom_vectors),
            theta0=theta0,
            slice_points=slice_points,
            slice_points_2d=slice_points_2d,
            eigvec_radius=eigvec_radius,
            seed=seed,
            params=params,
            batch_size=batch_size,
        )
    out.update(
        grad_norm=float(hvp.gradient().norm()),
        loss=hvp.loss(),
        measured=list(measure),
        hvp_count=hvp.count,
        hvp_counts=counts,
        dim=hvp.dim,
        mode=hvp.mode,
        method=hvp.method,
        seconds=time.perf_counter() - start,
    )
    return out


def _density(hvp: HVP, *, slq_vectors: int, slq_steps: int, seed: int) -> dict[str, Any]:
    like = {"dtype": hvp.dtype, "device": hvp.device}
    quadrature = slq(hvp, hvp.dim, num_vectors=slq_vectors, steps=slq_steps, seed=seed, **like)
    eps = default_eps(quadrature)
    mass, mass_err = negative_mass(quadrature, eps=eps)
    interval = negative_mass_interval(quadrature, eps=eps)
    grid, values = density_on_grid(quadrature)
    return {
        "negative_mass": mass,
        "negative_mass_stderr": _finite(mass_err),
        "negative_mass_interval": [interval.lo, interval.hi],
        "negative_mass_eps": eps,
        "density": {"grid": grid, "values": values},
    }


def _slices(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    eig_vectors: tuple[Tensor | None, Tensor | None] | None,
    theta0: Tensor | None,
    slice_points: int,
    slice_points_2d: int,
    eigvec_radius: float,
    seed: int,
    params: Sequence[str] | None,
    batch_size: int | None,
) -> dict[str, Any]:
    evaluate = make_loss_evaluator(
        model, loss_fn, inputs, targets, params=params, batch_size=batch_size
    )
    unit = _linspace(-1.0, 1.0, slice_points)
    unit_2d = _linspace(-1.0, 1.0, slice_points_2d)

    def random_direction(offset: int) -> Tensor:
        return filter_normalized_direction(model, seed=seed + offset, params=params)

    slices: dict[str, Any] = {
        "random_1d": {"alphas": unit, "values": slice_1d(evaluate, random_direction(3), unit)},
        "random_2d": {
            "alphas": unit_2d,
            "betas": unit_2d,
            "values": slice_2d(
                evaluate, random_direction(4), random_direction(5), unit_2d, unit_2d
            ),
        },
    }
    if eig_vectors is not None:
        radial = _linspace(-eigvec_radius, eigvec_radius, slice_points)
        for name, vectors in zip(("top_eigvec_1d", "bottom_eigvec_1d"), eig_vectors, strict=True):
            assert vectors is not None  # lanczos(..., return_vectors=True)
            slices[name] = {
                "alphas": radial,
                "values": slice_1d(evaluate, unit_direction(vectors[0]), radial),
            }
    if theta0 is not None:
        ts = _linspace(0.0, 1.0, slice_points)
        slices["interpolation"] = {
            "ts": ts,
            "values": interpolation(evaluate, theta0, evaluate.center, ts),
        }
    return slices
