"""Matrix-free curvature probes of a training loss: eigenvalues, trace, density, slices.

Every probe is a small function over a Hessian-vector-product closure (``make_hvp``), so
none ever forms the Hessian H = ∇²L(θ) of the mean training loss
L(θ) = (1/N) Σ_i ℓ(f_θ(x_i), y_i). One module per method:

- ``hvp``: the operator v ↦ Hv (Pearlmutter 1994), over the full data, chunked.
- ``lanczos``: extreme eigenvalues λmax, λmin with residuals (Lanczos 1950).
- ``power``: power iteration with PyHessian's stopping rule, kept as a baseline.
- ``hutchinson``: tr(H) with its standard error (Hutchinson 1990).
- ``density``: spectral density and the fraction of negative eigenvalues by stochastic
  Lanczos quadrature (Ubaru et al. 2017; Ghorbani et al. 2019).
- ``slices``: 1-D / 2-D loss slices and linear interpolation (Goodfellow et al. 2015;
  Li et al. 2018).

``run_probes`` runs them all once and returns a JSON-serializable dict. With its defaults
(212 HVPs and 205 loss evaluations) a probe of the reference MLP 64-64-64-10 (13,130
parameters) on 1,500 digits samples took 1.5 s in float32 and 2.9-4.3 s in float64 on a
2-core x86-64 CPU box shared with other jobs, 0.7 s either way on an NVIDIA H200
(``python benchmarks/probes.py``).

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
    >>> [round(out[key], 9) for key in ("lambda_max", "lambda_min", "negative_mass")]
    [2.0, -2.0, 0.5]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn


class ProbeError(Exception):
    """A probe cannot give a trustworthy answer (bad input, non-deterministic loss, ...)."""


# The submodules import ProbeError from this package, so they load after it exists.
from workers.probes.density import default_eps, density_on_grid, negative_mass, slq  # noqa: E402
from workers.probes.hutchinson import hutchinson_trace  # noqa: E402
from workers.probes.hvp import DEFAULT_METHOD, Method, check_deterministic, make_hvp  # noqa: E402
from workers.probes.lanczos import lanczos  # noqa: E402
from workers.probes.slices import (  # noqa: E402
    filter_normalized_direction,
    interpolation,
    make_loss_evaluator,
    slice_1d,
    slice_2d,
    unit_direction,
)

__all__ = ["ProbeError", "run_probes"]


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


def run_probes(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    k: int = 3,
    lanczos_steps: int = 60,
    lanczos_tol: float | None = None,
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
    """All probes at the model's current parameters, as a JSON-serializable dict.

    - λmax, λmin and the k extreme eigenvalues with Ritz residuals: Lanczos, at most
      ``lanczos_steps`` HVPs, ``lanczos_tol`` default 1e-6 in float64 and 1e-4 otherwise;
    - tr(H) ± stderr: Hutchinson with ``hutchinson_vectors`` Rademacher vectors;
    - density and the fraction of eigenvalues below -negative_mass_eps ± stderr: SLQ with
      ``slq_vectors`` × ``slq_steps`` (eps = 1e-3 · max|θ|, see density.default_eps);
    - loss slices: filter-normalized random 1-D on α ∈ [-1, 1] and 2-D on [-1, 1]², unit
      top/bottom eigenvector 1-D on α ∈ [-eigvec_radius, eigvec_radius], and the
      interpolation from ``init_params`` (flat tensor or name → tensor) on t ∈ [0, 1].

    The model is put in ``mode`` for the probe (recorded in the result) and every submodule's
    mode is restored afterwards; the HVP is first checked to be deterministic (``ProbeError``
    otherwise).
    """
    if mode not in ("eval", "train"):
        raise ProbeError(f"unknown mode {mode!r}; expected one of: eval, train")
    if slq_vectors < 2 or hutchinson_vectors < 2:
        raise ProbeError(
            "slq_vectors and hutchinson_vectors must be >= 2 to give standard errors; "
            f"got {slq_vectors} and {hutchinson_vectors}"
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
            k=k,
            lanczos_steps=lanczos_steps,
            lanczos_tol=lanczos_tol,
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
    k: int,
    lanczos_steps: int,
    lanczos_tol: float | None,
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
    check_deterministic(hvp, seed=seed)
    if lanczos_tol is None:
        lanczos_tol = 1e-6 if hvp.dtype == torch.float64 else 1e-4

    eig = lanczos(
        hvp,
        hvp.dim,
        k=k,
        max_steps=lanczos_steps,
        tol=lanczos_tol,
        seed=seed,
        return_vectors=True,
        **like,
    )
    trace = hutchinson_trace(hvp, hvp.dim, num_vectors=hutchinson_vectors, seed=seed + 1, **like)
    quadrature = slq(hvp, hvp.dim, num_vectors=slq_vectors, steps=slq_steps, seed=seed + 2, **like)
    eps = default_eps(quadrature)
    mass, mass_err = negative_mass(quadrature, eps=eps)
    grid, values = density_on_grid(quadrature)

    evaluate = make_loss_evaluator(
        model, loss_fn, inputs, targets, params=params, batch_size=batch_size
    )
    unit = _linspace(-1.0, 1.0, slice_points)
    unit_2d = _linspace(-1.0, 1.0, slice_points_2d)
    radial = _linspace(-eigvec_radius, eigvec_radius, slice_points)
    assert eig.top_vectors is not None and eig.bottom_vectors is not None
    slices: dict[str, Any] = {
        "random_1d": {
            "alphas": unit,
            "values": slice_1d(
                evaluate, filter_normalized_direction(model, seed=seed + 3, params=params), unit
            ),
        },
        "top_eigvec_1d": {
            "alphas": radial,
            "values": slice_1d(evaluate, unit_direction(eig.top_vectors[0]), radial),
        },
        "bottom_eigvec_1d": {
            "alphas": radial,
            "values": slice_1d(evaluate, unit_direction(eig.bottom_vectors[0]), radial),
        },
        "random_2d": {
            "alphas": unit_2d,
            "betas": unit_2d,
            "values": slice_2d(
                evaluate,
                filter_normalized_direction(model, seed=seed + 4, params=params),
                filter_normalized_direction(model, seed=seed + 5, params=params),
                unit_2d,
                unit_2d,
            ),
        },
    }
    if theta0 is not None:
        ts = _linspace(0.0, 1.0, slice_points)
        slices["interpolation"] = {
            "ts": ts,
            "values": interpolation(evaluate, theta0, evaluate.center, ts),
        }

    return {
        "lambda_max": eig.top[0],
        "lambda_min": eig.bottom[0],
        "top_eigenvalues": eig.top,
        "bottom_eigenvalues": eig.bottom,
        "residuals": {"top": eig.top_residuals, "bottom": eig.bottom_residuals},
        "converged": eig.converged,
        "lanczos_steps": eig.iterations,
        "trace": trace.estimate,
        "trace_stderr": trace.stderr,
        "trace_vectors": trace.num_vectors,
        "negative_mass": mass,
        "negative_mass_stderr": _finite(mass_err),
        "negative_mass_eps": eps,
        "density": {"grid": grid, "values": values},
        "grad_norm": float(hvp.gradient().norm()),
        "loss": hvp.loss(),
        "slices": slices,
        "hvp_count": hvp.count,
        "dim": hvp.dim,
        "mode": hvp.mode,
        "method": hvp.method,
        "seconds": time.perf_counter() - start,
    }
