"""Extreme eigenvalues of a symmetric operator by Lanczos with full reorthogonalization.

Lanczos (1950) builds an orthonormal basis Q_m = [q_1 … q_m] of the Krylov space
span{q_1, Hq_1, …, H^{m-1} q_1} in which H is tridiagonal:

    H Q_m = Q_m T_m + β_m q_{m+1} e_mᵀ,   T_m = tridiag(β_{j-1}, α_j, β_j),
    α_j = q_jᵀ H q_j,   β_j = ||H q_j - α_j q_j - β_{j-1} q_{j-1}||.

The eigenpairs (θ_i, s_i) of T_m give Ritz pairs (θ_i, y_i = Q_m s_i) whose extreme values
converge to λmax and λmin of H long before the power method's (Kuczyński & Woźniakowski
1992; Golub & Van Loan, "Matrix Computations", 4th ed., §10.1). In floating point the q_j lose
orthogonality and ghost copies of converged eigenvalues appear (Paige 1976), so every new
vector is orthogonalized against all previous ones, twice ("twice is enough", Giraud et al.
2005). That costs O(m·d) flops per step, cheap next to an HVP for m <= a few hundred, and
2·m·d numbers of memory (the basis and the stored products H q_j): 100 steps on a model of
1M float32 parameters hold 800 MB. The projected matrix T = QᵀHQ is kept entry by entry
from those products (T_ij = q_iᵀ(H q_j)), which is T_m above without a restart.

Stopping: the residual of a Ritz pair is ||H y_i - θ_i y_i|| = |β_m · s_i[m]| (Golub & Van
Loan, Thm 10.1.4 with exact orthogonality). The run takes at least ``min_steps`` products,
then stops as soon as that estimate is <= tol · max|θ| for the k largest and the k smallest
Ritz values, or after ``max_steps``. The reported residuals r_i are recomputed from the
stored products (no extra HVPs), so they are the true ||H y_i - θ_i y_i|| up to rounding, and
each eigenvalue is flagged converged when r_i <= tol · max|θ|. What that buys: H has an
eigenvalue within r_i of θ_i (Krylov-Bogoliubov / Weyl), and within r_i²/δ_i when the rest of
the spectrum is at least δ_i away from θ_i (Kato-Temple; Parlett, "The Symmetric Eigenvalue
Problem", Thms 4.5.1 and 11.7.1). The bound is relative to ||H|| ≈ max|θ| so that it does not
depend on the units of the loss.

Thick restart (Wu & Simon 2000, "Thick-restart Lanczos method for large symmetric eigenvalue
problems", SIMAX 22(2)): when the basis holds ``max_basis`` vectors before convergence, it is
replaced by the Ritz vectors of the max(2k + 2, max_basis / 2) extreme Ritz values (half at
each end; their products H y = Σ s_ij H q_j cost no HVP) and the process continues from
q_{m+1}, so memory stays at ``max_basis`` vectors whatever ``max_steps`` is. T is then
"arrowhead plus tridiagonal" rather than tridiagonal, and the same residual estimate holds.
Restarting discards information: on the trained test MLPs the bottom 5 eigenvalues needed
71-98 products without a restart, 71-118 with ``max_basis`` = 60 and 119-204 with 30, so
the basis is only capped where memory demands it (``run_probes`` caps it at 1 GiB).

When the Krylov space is exhausted (β_j ≈ 0, e.g. once m = d), the process restarts from a
new random vector orthogonal to Q (T becomes block diagonal), so dim <= max_steps is exact.
Like every single-vector Krylov method it sees one copy of a repeated eigenvalue until such a
restart: with k = 3 and λ₁ = λ₂, ``top`` may list λ₁, λ₃, λ₄ with small residuals.

Seeded example (a diagonal operator with eigenvalues -2, 1, 3, 5)::

    >>> import torch
    >>> d = torch.tensor([-2.0, 1.0, 3.0, 5.0], dtype=torch.float64)
    >>> res = lanczos(lambda v: d * v, 4, k=1, seed=0)
    >>> [round(x, 8) for x in res.top + res.bottom], res.converged, res.top_converged
    ([5.0, -2.0], True, [True])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from workers.probes import ProbeError

MatVec = Callable[[Tensor], Tensor]


@dataclass
class LanczosResult:
    """Extreme Ritz values of H with their residuals.

    ``top`` is descending (top[0] ≈ λmax), ``bottom`` ascending (bottom[0] ≈ λmin); the
    residual lists are ||H y - θ y|| for the same Ritz pairs, ``*_converged`` say which of
    them are <= ``bound`` = tol · max|θ|, and ``converged`` that all are. ``top_history`` is
    the largest Ritz value after each step; ``restarts`` counts thick restarts. ``*_vectors``
    are [k, dim] unit Ritz vectors when asked for.
    """

    top: list[float]
    bottom: list[float]
    top_residuals: list[float]
    bottom_residuals: list[float]
    converged: bool
    matvecs: int
    iterations: int
    tol: float
    top_converged: list[bool] = field(default_factory=list)
    bottom_converged: list[bool] = field(default_factory=list)
    bound: float = 0.0
    restarts: int = 0
    top_history: list[float] = field(default_factory=list)
    top_vectors: Tensor | None = None
    bottom_vectors: Tensor | None = None


class Krylov:
    """The Lanczos process with full reorthogonalization, one step at a time.

    Holds the basis Q (rows), the products H q_j (rows of HQ, kept so that Ritz residuals
    and thick restarts cost no HVP), the projected matrix T = QᵀHQ and, for quadrature, the
    Lanczos coefficients α_j, β_j. ``restart`` chooses what happens when the Krylov space is
    invariant: continue from a fresh orthogonal random vector (eigenvalue search) or stop
    (quadrature, whose start vector is the point). ``capacity`` (default: ``max_steps``) is
    the most basis vectors held; storage grows from ``reserve`` rows as needed.
    """

    def __init__(
        self,
        matvec: MatVec,
        start: Tensor,
        max_steps: int,
        *,
        restart: bool,
        keep_products: bool = True,
        generator: torch.Generator | None = None,
        capacity: int | None = None,
        reserve: int = 0,
    ) -> None:
        dim = start.shape[0]
        self.matvec = matvec
        self.dim = dim
        self.max_steps = max_steps
        self.capacity = min(max_steps if capacity is None else capacity, max_steps, dim)
        self.restart = restart
        self.keep_products = keep_products
        self.generator = generator
        rows = min(max(reserve, 1), self.capacity)
        self.basis = torch.zeros(rows, dim, dtype=start.dtype, device=start.device)
        self.products = torch.zeros_like(self.basis) if keep_products else None
        self.projected = torch.zeros(self.capacity, self.capacity, dtype=torch.float64)
        norm = start.norm()
        if not torch.isfinite(norm) or norm == 0:
            raise ProbeError("Lanczos start vector must be finite and non-zero")
        self.next = start / norm  # the vector the next step applies H to
        self.size = 0  # basis vectors in use
        self.steps = 0  # products taken
        self.restarts = 0
        self.alphas: list[float] = []
        self.betas: list[float] = []  # betas[j] couples q_j and q_{j+1}
        self.scale = 0.0  # largest ||H q_j|| seen: the yardstick for "β is zero"
        self.done = False

    @property
    def full(self) -> bool:
        """The basis holds ``capacity`` vectors: the next step needs a thick restart."""
        return self.size >= self.capacity

    def step(self) -> None:
        """One matvec: append q_{j} to the basis, its column of T, α_j, β_j and q_{j+1}."""
        if self.done or self.full:
            raise ProbeError("the Krylov basis is complete or full; restart it first")
        j = self.size
        q = self.next
        w = self.matvec(q)
        if not torch.all(torch.isfinite(w)):
            raise ProbeError(
                f"the operator returned non-finite values at Lanczos step {self.steps}"
            )
        self._grow(j + 1)
        self.basis[j] = q
        if self.products is not None:
            self.products[j] = w
        self.scale = max(self.scale, float(w.norm()))
        basis = self.basis[: j + 1]
        # Projecting on all of Q gives T's new column (α_j, β_{j-1} and, after a thick restart,
        # the arrowhead couplings) and removes the rounding drift towards earlier vectors.
        column = basis @ w
        self.projected[: j + 1, j] = self.projected[j, : j + 1] = column.to(
            dtype=torch.float64, device="cpu"
        )
        self.alphas.append(float(column[j]))
        w = w - basis.T @ column
        w = w - basis.T @ (basis @ w)
        beta = float(w.norm())
        self.size, self.steps = j + 1, self.steps + 1
        eps = torch.finfo(w.dtype).eps
        if self.steps >= self.max_steps or self.size >= self.dim:
            self.betas.append(beta)
            self.done = True
            return
        if beta > 1e3 * eps * max(self.scale, 1e-300):
            self.betas.append(beta)
            self.next = w / beta
            return
        # Invariant subspace: H q_j lies in span(Q) up to rounding.
        self.betas.append(0.0)
        if not self.restart:
            self.done = True
            return
        fresh = torch.randn(self.dim, generator=self.generator, dtype=torch.float64)
        fresh = fresh.to(dtype=w.dtype, device=w.device)
        for _ in range(2):
            fresh = fresh - basis.T @ (basis @ fresh)
        norm = float(fresh.norm())
        if norm <= 1e3 * eps:
            self.done = True  # Q spans the whole space
            return
        self.next = fresh / norm

    def _grow(self, rows: int) -> None:
        if rows <= self.basis.shape[0]:
            return
        rows = min(max(rows, 2 * self.basis.shape[0]), self.capacity)
        pad = rows - self.basis.shape[0]
        self.basis = torch.cat([self.basis, self.basis.new_zeros(pad, self.dim)])
        if self.products is not None:
            self.products = torch.cat([self.products, self.products.new_zeros(pad, self.dim)])

    def tridiagonal(self) -> Tensor:
        """T_m in float64 on the CPU (m x m, tiny); only defined before any thick restart."""
        if self.restarts:
            raise ProbeError("a thick-restarted basis has no tridiagonal T; use ritz()")
        m = self.steps
        t = torch.diag(torch.tensor(self.alphas, dtype=torch.float64))
        if m > 1:
            off = torch.tensor(self.betas[: m - 1], dtype=torch.float64)
            t += torch.diag(off, 1) + torch.diag(off, -1)
        return t

    def ritz(self) -> tuple[Tensor, Tensor, Tensor]:
        """(θ ascending, S with eigenvectors in columns, residual estimates |β_m s_i[m]|)."""
        n = self.size
        theta, s = torch.linalg.eigh(self.projected[:n, :n])
        estimates = abs(self.betas[-1]) * s[-1].abs()
        return theta, s, estimates

    def ritz_vectors(self, s: Tensor) -> Tensor:
        """Y = Q_mᵀ S for columns of S, returned as rows [k, dim]."""
        q = self.basis[: self.size]
        return s.T.to(dtype=q.dtype, device=q.device) @ q

    def residuals(self, theta: Tensor, s: Tensor) -> list[float]:
        """||H y_i - θ_i y_i|| from the stored products, for the columns of S."""
        if self.products is None:
            raise ProbeError("residuals need keep_products=True")
        q, hq = self.basis[: self.size], self.products[: self.size]
        st = s.T.to(dtype=q.dtype, device=q.device)
        y, hy = st @ q, st @ hq
        th = theta.to(dtype=q.dtype, device=q.device)[:, None]
        return [float(r) for r in (hy - th * y).norm(dim=1)]

    def thick_restart(self, keep: list[int]) -> None:
        """Replace the basis by the Ritz vectors ``keep`` (indices into ascending θ)."""
        if self.products is None:
            raise ProbeError("a thick restart needs keep_products=True")
        theta, s, _ = self.ritz()
        st = s[:, keep].T.to(dtype=self.basis.dtype, device=self.basis.device)
        n, p = self.size, len(keep)
        y, hy = st @ self.basis[:n], st @ self.products[:n]
        self.basis[:p], self.products[:p] = y, hy
        self.projected.zero_()
        self.projected[:p, :p] = torch.diag(theta[keep])
        self.size = p
        self.restarts += 1


def _extremes(count: int, k: int) -> tuple[list[int], list[int]]:
    """Indices (into ascending Ritz values) of the top k (descending) and bottom k."""
    k = min(k, count)
    return list(range(count - 1, count - 1 - k, -1)), list(range(k))


def lanczos(
    matvec: MatVec,
    dim: int,
    *,
    k: int = 1,
    max_steps: int = 100,
    min_steps: int = 1,
    tol: float = 1e-6,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    return_vectors: bool = False,
    max_basis: int | None = None,
) -> LanczosResult:
    """The k largest and k smallest eigenvalues of the symmetric operator ``matvec``.

    Takes at least ``min(min_steps, dim)`` matvecs from a seeded Gaussian start vector, then
    stops as soon as the 2k extreme Ritz pairs have residual <= ``tol`` · max|θ|, or after
    ``max_steps`` matvecs. ``max_basis`` (>= 2k + 4; default: no cap) bounds the basis held in
    memory by thick restarts. ``dtype`` and ``device`` are those of the vectors ``matvec``
    takes (``hvp.dtype``, ``hvp.device``).
    """
    if dim < 1 or k < 1 or max_steps < 1:
        raise ProbeError(
            f"need dim, k, max_steps >= 1; got dim={dim}, k={k}, max_steps={max_steps}"
        )
    if tol < 0:
        raise ProbeError(f"tol must be >= 0, got {tol}")
    if max_basis is not None and max_basis < min(2 * k + 4, dim):
        raise ProbeError(f"max_basis must be >= 2k + 4 = {2 * k + 4} to restart, got {max_basis}")
    gen = torch.Generator().manual_seed(seed)
    start = torch.randn(dim, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
    krylov = Krylov(
        matvec,
        start,
        max_steps,
        restart=True,
        generator=gen,
        capacity=max_basis,
        reserve=max(min_steps, 2 * k),
    )
    history: list[float] = []
    while True:
        krylov.step()
        theta, s, estimates = krylov.ritz()
        history.append(float(theta[-1]))
        top, bottom = _extremes(len(theta), k)
        wanted = top + bottom
        yardstick = tol * float(theta.abs().max())
        # Fewer Ritz values than asked for (an early invariant subspace): keep going, the
        # restart brings in the rest of the space, repeated eigenvalues included.
        enough = len(theta) >= min(k, dim) and krylov.steps >= min(min_steps, dim)
        if krylov.done or (enough and bool((estimates[wanted] <= yardstick).all())):
            break
        if krylov.full:
            keep = max(2 * k + 2, krylov.capacity // 2)
            krylov.thick_restart(
                list(range(keep // 2)) + list(range(len(theta) - (keep - keep // 2), len(theta)))
            )
    residuals = krylov.residuals(theta[wanted], s[:, wanted])
    flags = [r <= yardstick for r in residuals]
    result = LanczosResult(
        top=[float(theta[i]) for i in top],
        bottom=[float(theta[i]) for i in bottom],
        top_residuals=residuals[: len(top)],
        bottom_residuals=residuals[len(top) :],
        converged=all(flags),
        matvecs=krylov.steps,
        iterations=krylov.steps,
        tol=tol,
        top_converged=flags[: len(top)],
        bottom_converged=flags[len(top) :],
        bound=yardstick,
        restarts=krylov.restarts,
        top_history=history,
    )
    if return_vectors:
        result.top_vectors = krylov.ritz_vectors(s[:, top])
        result.bottom_vectors = krylov.ritz_vectors(s[:, bottom])
    return result
