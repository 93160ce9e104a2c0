"""Hutchinson's trace estimator with Rademacher vectors, with its standard error.

For v with i.i.d. entries ±1 (Rademacher), E[vᵀ H v] = tr(H), and

    tr(H) ≈ (1/m) Σ_{j=1..m} v_jᵀ H v_j,   stderr = s / √m,

with s the sample standard deviation (ddof=1) of the m terms (Hutchinson 1990, "A stochastic
estimator of the trace of the influence matrix for Laplacian smoothing splines"; Rademacher
vectors minimize the variance 2 Σ_{i≠j} H_ij² among i.i.d. choices; Avron & Toledo 2011).
The variance depends on the off-diagonal mass of H, and near initialization it can take
very many vectors to pin the trace down, so the standard error is always reported.

Seeded example::

    >>> import torch
    >>> d = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    >>> est = hutchinson_trace(lambda v: d * v, 3, num_vectors=10, seed=0)
    >>> est.estimate, est.stderr   # diagonal H: every sample is exactly tr(H)
    (6.0, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from workers.probes import ProbeError

MatVec = Callable[[Tensor], Tensor]


@dataclass
class TraceEstimate:
    """tr(H) ≈ ``estimate`` ± ``stderr`` from ``matvecs`` products with H.

    ``num_vectors`` random vectors were drawn; ``samples`` are the per-vector terms whose
    spread gives ``stderr`` (vᵀHv for Hutchinson, see each method for the others).
    """

    estimate: float
    stderr: float
    num_vectors: int
    samples: list[float]
    matvecs: int
    method: str


def rademacher(
    dim: int,
    generator: torch.Generator,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """A vector of i.i.d. ±1 drawn on the CPU from ``generator`` (same draw on every device)."""
    v = torch.randint(0, 2, (dim,), generator=generator).to(torch.float64) * 2 - 1
    return v.to(dtype=dtype, device=device)


def hutchinson_trace(
    matvec: MatVec,
    dim: int,
    *,
    num_vectors: int = 100,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> TraceEstimate:
    """Estimate tr(H) from ``num_vectors`` (>= 2, for a standard error) Rademacher probes."""
    if num_vectors < 2:
        raise ProbeError(f"num_vectors must be >= 2 to give a standard error, got {num_vectors}")
    if dim < 1:
        raise ProbeError(f"dim must be >= 1, got {dim}")
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(num_vectors):
        v = rademacher(dim, gen, dtype=dtype, device=device)
        samples.append(float(v @ matvec(v)))
    values = torch.tensor(samples, dtype=torch.float64)
    return TraceEstimate(
        estimate=float(values.mean()),
        stderr=float(values.std(correction=1)) / math.sqrt(num_vectors),
        num_vectors=num_vectors,
        samples=samples,
        matvecs=num_vectors,
        method="hutchinson",
    )
