"""Power iteration with PyHessian's stopping rule: the baseline for λmax.

PyHessian (Yao, Gholami, Keutzer & Mahoney 2020, "PyHessian: Neural networks through the lens
of the Hessian", ``hessian.eigenvalues(maxIter=100, tol=1e-3, top_n=1)``) estimates the
dominant eigenvalue by the power method (von Mises 1929):

    v ← v / (||v|| + 1e-6)
    λ_i = vᵀ H v,   v ← H v / (||H v|| + 1e-6)
    stop when |λ_{i-1} - λ_i| / (|λ_{i-1}| + 1e-6) < tol,   at most max_iter products,

and returns λ_{i-1} (the estimate *before* the one that met the test, as its code does). For
top_n > 1 each new vector is deflated by Gram-Schmidt against the eigenvectors already found.
The power method converges like (λ₂/λ₁)^i and finds the eigenvalue of largest *magnitude*,
which is λmin, not λmax, when the negative end dominates. The 1e-6 guard, applied twice per
iteration, shrinks ||v||² below 1 and biases the estimate low by about
2e-6 · (1 + 1/|λ|) relatively (2e-5 at λ = 0.1): part of the rule, so kept.

PyHessian's only PyPI release calls ``torch.eig``, removed from PyTorch, so this module is a
faithful reimplementation of its published rule (pyhessian/hessian.py, utils.py:
``normalization``, ``orthnormal``), not an import; only the start vector differs (one seeded
flat Gaussian instead of per-tensor ``torch.randn`` on the global RNG).

Seeded example::

    >>> import torch
    >>> d = torch.tensor([1.0, 2.0, 10.0], dtype=torch.float64)
    >>> res = power_iteration(lambda v: d * v, 3, seed=0)
    >>> abs(res.eigenvalues[0] - 10.0) < 1e-2
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from workers.probes import ProbeError

MatVec = Callable[[Tensor], Tensor]

# PyHessian's guard against division by zero, kept because it is part of the rule.
_GUARD = 1e-6


@dataclass
class PowerResult:
    """Eigenvalue estimates (largest magnitude first), products used, and every Rayleigh
    quotient in order (``history``, for convergence plots)."""

    eigenvalues: list[float]
    matvecs: int
    iterations: list[int]
    history: list[float] = field(default_factory=list)
    eigenvectors: Tensor | None = None


def _normalize(v: Tensor) -> Tensor:
    return v / (float(v.norm()) + _GUARD)


def _deflate(v: Tensor, found: list[Tensor]) -> Tensor:
    # One classical Gram-Schmidt pass, in order, as PyHessian's orthnormal does.
    for u in found:
        v = v - (v @ u) * u
    return _normalize(v)


def power_iteration(
    matvec: MatVec,
    dim: int,
    *,
    top_n: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    return_vectors: bool = False,
) -> PowerResult:
    """PyHessian's ``eigenvalues()`` rule on a matvec closure (see the module docstring).

    ``tol <= 0`` never stops early: exactly ``max_iter`` products per eigenvalue.
    """
    if dim < 1 or top_n < 1 or max_iter < 1:
        raise ProbeError(
            f"need dim, top_n, max_iter >= 1; got dim={dim}, top_n={top_n}, max_iter={max_iter}"
        )
    gen = torch.Generator().manual_seed(seed)
    found: list[Tensor] = []
    values: list[float] = []
    iterations: list[int] = []
    history: list[float] = []
    matvecs = 0
    for _ in range(top_n):
        v = torch.randn(dim, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
        v = _normalize(v)
        value: float | None = None
        steps = 0
        for _ in range(max_iter):
            v = _deflate(v, found)
            hv = matvec(v)
            matvecs += 1
            steps += 1
            current = float(hv @ v)
            history.append(current)
            v = _normalize(hv)
            if value is not None and abs(value - current) / (abs(value) + _GUARD) < tol:
                break
            value = current
        assert value is not None  # set by the first iteration; max_iter >= 1
        values.append(value)
        iterations.append(steps)
        found.append(v)
    return PowerResult(
        eigenvalues=values,
        matvecs=matvecs,
        iterations=iterations,
        history=history,
        eigenvectors=torch.stack(found) if return_vectors else None,
    )
