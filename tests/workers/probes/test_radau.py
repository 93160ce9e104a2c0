"""The negative-mass interval (Gauss-Radau bounds + sampling) against dense float64 spectra."""

from __future__ import annotations

import pytest
import torch

from tests.workers.probes.trained import Trained
from workers.probes import ProbeError, run_probes
from workers.probes.density import SpectralQuadrature, slq
from workers.probes.hutchinson import rademacher
from workers.probes.lanczos import Krylov
from workers.probes.radau import negative_mass_interval, radau_bounds


def test_per_vector_bounds_hold_at_every_threshold(trained: Trained):
    # F_v(t) = Σ_{λ_i < t} (u_iᵀv)² / d exactly, from the dense eigendecomposition.
    h, d = trained.hessian, trained.hessian.shape[0]
    eigenvalues, vectors = torch.linalg.eigh(h)
    lo_end, hi_end = float(eigenvalues[0]), float(eigenvalues[-1])
    thresholds = torch.linspace(1.1 * lo_end, 0.5 * hi_end, 41).tolist() + [-1e-4, 0.0, 1e-4]
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        v = rademacher(d, gen)
        weights = (vectors.T @ v) ** 2 / d
        for steps in (3, 10, 30):
            krylov = Krylov(lambda u: h @ u, v, steps, restart=False, keep_products=False)
            while not krylov.done:
                krylov.step()
            for t in thresholds:
                lower, upper = radau_bounds(krylov.alphas, krylov.betas, t)
                exact = float(weights[eigenvalues < t].sum())
                assert lower - 1e-12 <= exact <= upper + 1e-12


@pytest.mark.parametrize("steps", [30, 60])
def test_interval_covers_the_exact_index_of_trained_networks(trained: Trained, device, steps):
    model, x, y = trained.on(device)
    out = run_probes(
        model, trained.loss_fn, x, y, measure=["density"], slq_vectors=4, slq_steps=steps
    )
    exact = float((trained.eigenvalues < -out["negative_mass_eps"]).double().mean())
    lo, hi = out["negative_mass_interval"]
    assert lo <= exact <= hi
    assert lo <= out["negative_mass"] <= hi
    # Measured widths (seeds 0-19): 0.04-0.56 at 30 steps, 0.02-0.20 at 60.
    assert hi - lo < {30: 0.6, 60: 0.25}[steps]
    assert out["hvp_counts"]["density"] == 4 * steps


def test_more_steps_narrow_the_quadrature_bounds(trained: Trained):
    h, d = trained.hessian, trained.hessian.shape[0]
    widths = []
    for steps in (20, 40, 80):
        iv = negative_mass_interval(slq(lambda v: h @ v, d, num_vectors=4, steps=steps, seed=1))
        widths.append(iv.quadrature_hi - iv.quadrature_lo)
        assert iv.lo <= iv.quadrature_lo <= iv.quadrature_hi <= iv.hi
        assert iv.hi - iv.lo == pytest.approx(widths[-1] + 2 * iv.z * iv.sigma, abs=1e-12) or (
            iv.lo == 0.0 or iv.hi == 1.0
        )
    assert widths[0] > widths[1] > widths[2]


def test_exhausted_krylov_spaces_give_exact_bounds():
    diag = torch.tensor([-1.0, -1.0, 2.0, 3.0] * 5, dtype=torch.float64)
    # Three distinct eigenvalues: every Krylov space is exhausted after 3 steps.
    q = slq(lambda v: diag * v, 20, num_vectors=3, steps=10, seed=0)
    iv = negative_mass_interval(q, eps=0.1)
    assert iv.quadrature_lo == pytest.approx(0.5, abs=1e-12) == iv.quadrature_hi
    assert iv.per_vector == [pytest.approx((0.5, 0.5), abs=1e-12)] * 3
    assert iv.lo < 0.5 < iv.hi  # the sampling error across vectors remains


def test_a_full_krylov_space_counts_the_eigenvalues():
    diag = torch.linspace(-1.0, 4.0, 10, dtype=torch.float64)
    iv = negative_mass_interval(slq(lambda v: diag * v, 10, num_vectors=2, steps=10, seed=0))
    assert (iv.lo, iv.hi) == (pytest.approx(0.2), pytest.approx(0.2))  # -1, -4/9 of 10


def test_a_threshold_on_a_gauss_node_still_gets_valid_bounds():
    diag = torch.linspace(-1.0, 1.0, 50, dtype=torch.float64)
    krylov = Krylov(lambda v: diag * v, torch.ones(50, dtype=torch.float64), 5, restart=False)
    while not krylov.done:
        krylov.step()
    t = float(torch.linalg.eigvalsh(krylov.tridiagonal())[2])
    lower, upper = radau_bounds(krylov.alphas, krylov.betas, t)
    assert lower <= float((diag < t).double().mean()) <= upper < lower + 0.3
    # Exactly on the node of a 1-step rule, T_1 - tI = 0: the Gauss bracket [τ below, τ up to].
    assert radau_bounds([0.0], [1.0], 0.0) == (0.0, 1.0)
    # Mean 0, variance 1, a node at 1/2: the Radau rule is -2 (weight 0.2), 1/2 (weight 0.8).
    assert radau_bounds([0.0], [1.0], 0.5) == pytest.approx((0.2, 1.0))


def test_radau_errors():
    with pytest.raises(ProbeError, match="lacks its Lanczos coefficients"):
        negative_mass_interval(SpectralQuadrature(nodes=[[1.0]], weights=[[1.0]], matvecs=1))
    q = slq(lambda v: v, 3, num_vectors=2, steps=2)
    with pytest.raises(ProbeError, match="z must be >= 0, got -1"):
        negative_mass_interval(q, z=-1.0)
    with pytest.raises(ProbeError, match="need m >= 1 alphas and m betas; got 2 and 1"):
        radau_bounds([1.0, 2.0], [0.5], 0.0)
