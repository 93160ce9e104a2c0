"""Hutch++: tr(H) as an exact low-rank part plus Hutchinson on the rest, with its stderr.

With a budget of m matrix-vector products, split m = 2s + g: draw a Rademacher sketch
S ∈ R^{d×s}, take an orthonormal basis Q of range(HS) (s products), and

    tr(H) ≈ tr(Qᵀ H Q) + (1/g) Σ_{j=1..g} g_jᵀ (I - QQᵀ) H (I - QQᵀ) g_j,

with HQ (s products) and g fresh Rademacher vectors g_j on the complement (g products;
Meyer, Musco, Musco & Woodruff 2021, "Hutch++: optimal stochastic trace estimation", SOSA).
The first term is exact on the dominant s-dimensional subspace found by one step of subspace
iteration; only the complement is estimated, so the error shrinks like ||H - H_s||_F / √g
instead of ||H||_F / √m: a large win when a few eigenvalues carry most of ||H||_F, which is
what the Hessian of a trained network looks like (a handful of outliers above a bulk near
zero; Sagun et al. 2017, Papyan 2019). Here s = ⌊m/3⌋ and g = m - 2s (the paper's even
split), with g >= 2 so that the standard error, the sample standard deviation of the g
complement terms / √g, exists. It accounts for the whole error: for any Q the two parts add up to
tr(H) exactly, and only the complement is estimated. With g ≈ m/3 terms the standard error
is itself noisy: on the trained test MLPs (100 seeds, 8-60 products) |error| <= 2·stderr
held in 82-95 % of seeds, against 90-97 % for Hutchinson's. See ``workers/probes/__init__.py``
for errors at equal budgets against Hutchinson and XTrace.

Seeded example (eigenvalues 100, 50 and 98 × 0.01 in a random basis; Hutchinson with the
same 12 products gives 144.73 ± 32.79)::

    >>> import torch
    >>> gen = torch.Generator().manual_seed(0)
    >>> u, _ = torch.linalg.qr(torch.randn(100, 100, generator=gen, dtype=torch.float64))
    >>> lam = torch.cat([torch.tensor([100.0, 50.0]), torch.full((98,), 0.01)]).double()
    >>> h = u @ torch.diag(lam) @ u.T
    >>> est = hutchpp_trace(lambda v: h @ v, 100, num_matvecs=12, seed=0)
    >>> round(float(h.trace()), 2), round(est.estimate, 2), round(est.stderr, 2), est.matvecs
    (150.98, 150.98, 0.01, 12)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from workers.probes import ProbeError
from workers.probes.hutchinson import TraceEstimate, rademacher

MatVec = Callable[[Tensor], Tensor]


def split_budget(num_matvecs: int) -> tuple[int, int]:
    """(sketch size s, complement vectors g) with 2s + g = num_matvecs and g >= 2."""
    sketch = min(num_matvecs // 3, (num_matvecs - 2) // 2)
    return sketch, num_matvecs - 2 * sketch


def hutchpp_trace(
    matvec: MatVec,
    dim: int,
    *,
    num_matvecs: int = 30,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    vectors: Tensor | None = None,
) -> TraceEstimate:
    """Estimate tr(H) with ``num_matvecs`` (>= 2) products; ``samples`` are the complement terms.

    Needs ``num_matvecs < dim`` (otherwise d unit vectors give the trace exactly).
    ``vectors`` ([dim, s + g], sketch then complement, see ``split_budget``) replaces the
    seeded Rademacher draws, e.g. to compare with another implementation on the same vectors.
    """
    if num_matvecs < 2:
        raise ProbeError(f"num_matvecs must be >= 2 to give a standard error, got {num_matvecs}")
    if num_matvecs >= dim:
        raise ProbeError(
            f"num_matvecs={num_matvecs} >= dim={dim}: the trace is cheaper exactly (d unit vectors)"
        )
    sketch, rest = split_budget(num_matvecs)
    gen = torch.Generator().manual_seed(seed)
    like = {"dtype": dtype, "device": device}
    if vectors is None:
        # Columns are vectors of length d: [d, s + g].
        vectors = torch.stack(
            [rademacher(dim, gen, **like) for _ in range(sketch + rest)],  # type: ignore[arg-type]
            dim=1,
        )
    elif vectors.shape != (dim, sketch + rest):
        raise ProbeError(
            f"vectors must have shape ({dim}, {sketch + rest}), got {tuple(vectors.shape)}"
        )
    vectors = vectors.to(dtype=dtype, device=device)
    low_rank = 0.0
    q = torch.zeros(dim, 0, **like)  # type: ignore[arg-type]
    if sketch:
        y = torch.stack([matvec(vectors[:, i]) for i in range(sketch)], dim=1)
        q, _ = torch.linalg.qr(y)
        low_rank = sum(float(q[:, i] @ matvec(q[:, i])) for i in range(sketch))
    samples = []
    for j in range(sketch, sketch + rest):
        g = vectors[:, j] - q @ (q.T @ vectors[:, j])  # H sees only the complement of Q
        samples.append(float(g @ matvec(g)))
    values = torch.tensor(samples, dtype=torch.float64)
    return TraceEstimate(
        estimate=low_rank + float(values.mean()),
        stderr=float(values.std(correction=1)) / math.sqrt(rest),
        num_vectors=sketch + rest,
        samples=samples,
        matvecs=2 * sketch + rest,
        method="hutchpp",
    )
