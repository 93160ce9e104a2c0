"""XTrace: Hutch++ made exchangeable, every test vector used for both jobs, with its stderr.

With m = ⌊budget/2⌋ Rademacher vectors Ω = [ω_1 … ω_m] ∈ R^{d×m}, Y = HΩ = QR (m products)
and Z = HQ (m more), XTrace averages the m leave-one-out Hutch++ estimates

    t_i = tr(Q_iᵀ H Q_i) + ω_iᵀ (I - Q_iQ_iᵀ) H (I - Q_iQ_iᵀ) ω_i,   XTrace = (1/m) Σ_i t_i,

where Q_i is an orthonormal basis of range(Y without its i-th column): each ω_i is a
Hutchinson probe of the complement of a sketch it took no part in, so t_i is unbiased, and
every vector also serves in the m - 1 other sketches (Epperly, Tropp & Webber 2024,
"XTrace: making the most of every sample in stochastic trace estimation", SIMAX 45(1)).
No product is spent on the leave-one-out bases: with s_i the i-th column of R^{-T}
normalized, Q_iQ_iᵀ = Q (I - s_i s_iᵀ) Qᵀ, so every t_i is a few m×m and d×m operations
on Ω, Y, Q and Z.

The standard error is the jackknife over the test vectors, with XTrace_{-j} the estimate
from the m - 1 vectors other than ω_j (Efron & Stein 1981: it overestimates the variance
in expectation):

    stderr² = (m - 1)/m · Σ_j (XTrace_{-j} - mean_j XTrace_{-j})²,

again without products: dropping ω_j removes u_j = R^{-T}e_j from every basis, so each
XTrace_{-j} needs only the 2×2 Gram matrices of pairs (u_i, u_j), O(m³) in all. The paper's
own estimate, std(t_1 … t_m) / √m, treats the correlated t_i as independent: on the three
trained test MLPs (60 seeds, 16-60 products) the true RMS error was 1.1-1.6x that estimate
(|error| <= 2·stderr in 75-93 % of seeds), against 0.4-0.6x the jackknife (97-100 %).
Honest over tight; the paper's value is std(``samples``) / √m if wanted.

Compared with Hutch++ at the same budget, the low-rank part has rank ≈ budget/2 instead of
budget/3 and the complement is probed by budget/2 vectors instead of budget/3. When Y is
numerically rank-deficient (H has rank below m, so range(Y) = range(H) and tr(QᵀHQ) is
already the whole trace), the leave-one-out bases are undefined: the estimate is then
tr(QᵀHQ) plus the mean of ω_iᵀ(I - QQᵀ)H(I - QQᵀ)ω_i (≈ 0), with the spread of those terms
as its error. See ``workers/probes/__init__.py`` for errors at equal budgets.

Seeded example (eigenvalues 100, 50 and 98 × 0.01 in a random basis; Hutchinson with the
same 12 products gives 144.73 ± 32.79)::

    >>> import torch
    >>> gen = torch.Generator().manual_seed(0)
    >>> u, _ = torch.linalg.qr(torch.randn(100, 100, generator=gen, dtype=torch.float64))
    >>> lam = torch.cat([torch.tensor([100.0, 50.0]), torch.full((98,), 0.01)]).double()
    >>> h = u @ torch.diag(lam) @ u.T
    >>> est = xtrace(lambda v: h @ v, 100, num_matvecs=12, seed=0)
    >>> round(float(h.trace()), 2), round(est.estimate, 2), round(est.stderr, 2), est.matvecs
    (150.98, 150.98, 0.02, 12)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from workers.probes import ProbeError
from workers.probes.hutchinson import TraceEstimate, rademacher

MatVec = Callable[[Tensor], Tensor]


def xtrace(
    matvec: MatVec,
    dim: int,
    *,
    num_matvecs: int = 30,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    vectors: Tensor | None = None,
) -> TraceEstimate:
    """Estimate tr(H) with ``num_matvecs`` (>= 4) products (an odd budget leaves one unused).

    ``samples`` are the leave-one-out estimates t_i. Needs ``num_matvecs < dim`` (otherwise
    d unit vectors give the trace exactly). ``vectors`` ([dim, num_matvecs // 2]) replaces the
    seeded Rademacher draws, e.g. to compare with another implementation on the same Ω.
    """
    if num_matvecs < 4:
        raise ProbeError(
            f"num_matvecs must be >= 4 (two test vectors) to give an error estimate, "
            f"got {num_matvecs}"
        )
    if num_matvecs >= dim:
        raise ProbeError(
            f"num_matvecs={num_matvecs} >= dim={dim}: the trace is cheaper exactly (d unit vectors)"
        )
    m = num_matvecs // 2
    gen = torch.Generator().manual_seed(seed)
    like = {"dtype": dtype, "device": device}
    # Columns are vectors of length d: Ω, Y, Q, Z are [d, m]; the rest is [m, m].
    if vectors is None:
        omega = torch.stack([rademacher(dim, gen, **like) for _ in range(m)], dim=1)  # type: ignore[arg-type]
    elif vectors.shape == (dim, m):
        omega = vectors.to(dtype=dtype, device=device)
    else:
        raise ProbeError(f"vectors must have shape ({dim}, {m}), got {tuple(vectors.shape)}")
    y = torch.stack([matvec(omega[:, i]) for i in range(m)], dim=1)
    q, r = torch.linalg.qr(y)
    z = torch.stack([matvec(q[:, i]) for i in range(m)], dim=1)
    # Small matrices in float64 on the CPU: the leave-one-out algebra is m×m.
    f64 = {"dtype": torch.float64, "device": "cpu"}
    a = q.T @ z
    a = (0.5 * (a + a.T)).to(**f64)  # QᵀHQ, symmetric up to rounding
    x, zw = (q.T @ omega).to(**f64), (z.T @ omega).to(**f64)  # Qᵀω_i, Zᵀω_i as columns
    yw = (omega * y).sum(0).to(**f64)  # ω_iᵀHω_i
    r64 = r.to(**f64)
    diag = r64.diagonal().abs()
    if float(diag.min()) <= 1e3 * torch.finfo(dtype).eps * float(diag.max()):
        return _rank_deficient(a, x, zw, yw, m)
    # u_i = R^{-T} e_i spans the direction of range(Q) that Y without column i misses.
    u = torch.linalg.solve_triangular(r64.T, torch.eye(m, **f64), upper=False)
    terms = _Terms(a, x, zw, yw, u)
    loo = terms.leave_out(torch.arange(m), None)  # t_i, [m]
    # Jackknife over the vectors: XTrace of the m - 1 vectors other than j, from the same
    # products (dropping ω_j removes u_j from every basis), for j = 1..m.
    i, j = torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij")
    pairs = terms.leave_out(i, j)  # [m, m]: t_i without ω_j; the diagonal is unused
    pairs = pairs.masked_fill(torch.eye(m, dtype=torch.bool), 0.0)
    drop_one = pairs.sum(0) / (m - 1)
    spread = ((drop_one - drop_one.mean()) ** 2).sum()
    return _estimate(loo, math.sqrt((m - 1) / m * float(spread)))


class _Terms:
    """t_i with the basis of Y minus columns i (and j), all from m×m matrices.

    Removing columns K of Y removes span{u_k : k ∈ K} from range(Q) in Q's coordinates, so
    with P_K the projector on that span, c = (I - P_K) Qᵀω_i and w = ω_i - Q c:

        t_i = tr(QᵀHQ) - tr(P_K QᵀHQ) + ω_iᵀHω_i - 2 cᵀZᵀω_i + cᵀ QᵀHQ c,

    where every product of a u_k with QᵀHQ, Qᵀω_i or Zᵀω_i is an entry of an m×m matrix.
    """

    def __init__(self, a: Tensor, x: Tensor, zw: Tensor, yw: Tensor, u: Tensor) -> None:
        self.trace = a.trace()
        self.gram, self.uau = u.T @ u, u.T @ a @ u  # u_kᵀu_l, u_kᵀ(QᵀHQ)u_l
        self.ux, self.uz, self.uax = u.T @ x, u.T @ zw, u.T @ a @ x  # u_kᵀ(·)_i
        self.xz, self.xax = (x * zw).sum(0), (x * (a @ x)).sum(0)
        self.yw = yw

    def leave_out(self, i: Tensor, j: Tensor | None) -> Tensor:
        """t_i for the basis without columns i (and j): elementwise over index tensors."""
        if j is None:
            # K = {i}: P = u_i u_iᵀ / (u_iᵀu_i), c = x_i - g u_i with g = u_iᵀx_i / (u_iᵀu_i).
            gii = self.gram[i, i]
            g = self.ux[i, i] / gii
            low = self.trace - self.uau[i, i] / gii
            cz = self.xz[i] - g * self.uz[i, i]
            cac = self.xax[i] - 2 * g * self.uax[i, i] + g**2 * self.uau[i, i]
            return low + self.yw[i] - 2 * cz + cac
        # K = {i, j}: P = U_K G⁻¹ U_Kᵀ with the 2×2 Gram matrix G, solved in closed form.
        gii, gij, gjj = self.gram[i, i], self.gram[i, j], self.gram[j, j]
        det = gii * gjj - gij**2
        det = torch.where(det == 0, torch.ones_like(det), det)  # only on the unused diagonal
        bii, bij, bjj = self.uau[i, i], self.uau[i, j], self.uau[j, j]
        low = self.trace - (gjj * bii - 2 * gij * bij + gii * bjj) / det
        pi, pj = self.ux[i, i], self.ux[j, i]
        g1, g2 = (gjj * pi - gij * pj) / det, (gii * pj - gij * pi) / det
        cz = self.xz[i] - g1 * self.uz[i, i] - g2 * self.uz[j, i]
        cac = (
            self.xax[i]
            - 2 * (g1 * self.uax[i, i] + g2 * self.uax[j, i])
            + g1**2 * bii
            + 2 * g1 * g2 * bij
            + g2**2 * bjj
        )
        return low + self.yw[i] - 2 * cz + cac


def _rank_deficient(a: Tensor, x: Tensor, zw: Tensor, yw: Tensor, m: int) -> TraceEstimate:
    # w_i = (I - QQᵀ) ω_i: w_iᵀHw_i = ω_iᵀHω_i - 2 (Qᵀω_i)ᵀ(Zᵀω_i) + (Qᵀω_i)ᵀ QᵀHQ (Qᵀω_i).
    samples = a.trace() + yw - 2 * (x * zw).sum(0) + (x * (a @ x)).sum(0)
    return _estimate(samples, float(samples.std(correction=1)) / math.sqrt(m))


def _estimate(samples: Tensor, stderr: float) -> TraceEstimate:
    return TraceEstimate(
        estimate=float(samples.mean()),
        stderr=stderr,
        num_vectors=samples.numel(),
        samples=[float(t) for t in samples],
        matvecs=2 * samples.numel(),
        method="xtrace",
    )
