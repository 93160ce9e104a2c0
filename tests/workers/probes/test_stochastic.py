"""Hutchinson's trace and SLQ (density, negative mass) against dense float64 Hessians."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from tests.workers.probes.reference import dense_hessian
from workers.probes import ProbeError
from workers.probes.density import (
    SpectralQuadrature,
    default_eps,
    density_on_grid,
    negative_mass,
    slq,
)
from workers.probes.hutchinson import hutchinson_trace
from workers.probes.hvp import HVP, make_hvp

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def mlp_hessian(device: torch.device, seed: int = 0) -> tuple[Tensor, HVP]:
    """(dense Hessian, HVP) of a 139-parameter tanh MLP at a random init, MSE on 40 points."""
    torch.manual_seed(seed)
    model = (
        nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
        .to(device=device, dtype=torch.float64)
        .eval()
    )
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(40, 4, generator=gen, dtype=torch.float64).to(device)
    y = torch.randn(40, 3, generator=gen, dtype=torch.float64).to(device)
    loss_fn = nn.MSELoss()
    return dense_hessian(model, loss_fn, x, y), make_hvp(model, loss_fn, x, y)


def test_hutchinson_is_within_three_standard_errors(device):
    dense, hvp = mlp_hessian(device)
    exact = float(torch.trace(dense))
    few = hutchinson_trace(hvp, hvp.dim, num_vectors=10, seed=0, device=device)
    many = hutchinson_trace(hvp, hvp.dim, num_vectors=160, seed=1, device=device)
    for est in (few, many):
        assert est.stderr > 0
        assert abs(est.estimate - exact) <= 3 * est.stderr
    assert many.stderr < few.stderr / 2  # ~1/√m: 4x fewer expected, 2x leaves room
    assert many.num_vectors == len(many.samples) == 160 and hvp.count == 170


def test_hutchinson_is_seeded_and_exact_on_a_diagonal():
    diag = torch.tensor([1.0, -2.0, 5.0], dtype=torch.float64)
    est = hutchinson_trace(lambda v: diag * v, 3, num_vectors=4, seed=0)
    assert (est.estimate, est.stderr) == (4.0, 0.0)
    a = torch.randn(6, 6, dtype=torch.float64)
    a = a + a.T
    runs = [hutchinson_trace(lambda v: a @ v, 6, num_vectors=5, seed=s).samples for s in (2, 2, 3)]
    assert runs[0] == runs[1] != runs[2]


def test_hutchinson_errors():
    with pytest.raises(ProbeError, match="num_vectors must be >= 2"):
        hutchinson_trace(lambda v: v, 3, num_vectors=1)
    with pytest.raises(ProbeError, match="dim must be >= 1"):
        hutchinson_trace(lambda v: v, 0)


def test_slq_negative_mass_is_within_its_error_bar(device):
    dense, hvp = mlp_hessian(device)
    exact_eigs = torch.linalg.eigvalsh(dense).cpu()
    quadrature = slq(hvp, hvp.dim, num_vectors=12, steps=60, seed=0, device=device)
    eps = default_eps(quadrature)
    assert eps == pytest.approx(1e-3 * float(exact_eigs.abs().max()), rel=1e-6)
    exact = float((exact_eigs < -eps).double().mean())
    assert 0.05 < exact < 0.95  # a real saddle, not a trivial case
    mass, stderr = negative_mass(quadrature)
    assert stderr > 0
    assert abs(mass - exact) <= 3 * stderr + 0.02
    assert quadrature.matvecs == hvp.count == 12 * 60


def test_slq_weights_are_a_quadrature_of_the_spectrum(device):
    dense, hvp = mlp_hessian(device)
    quadrature = slq(hvp, hvp.dim, num_vectors=3, steps=20, seed=0, device=device)
    exact = torch.linalg.eigvalsh(dense).cpu()
    for nodes, weights in zip(quadrature.nodes, quadrature.weights, strict=True):
        assert len(nodes) == 20 and sum(weights) == pytest.approx(1.0, abs=1e-12)
        assert exact[0] - 1e-9 <= min(nodes) and max(nodes) <= exact[-1] + 1e-9


def test_slq_on_a_diagonal_is_exact_per_vector():
    diag = torch.tensor([-1.0, -1.0, 2.0, 3.0], dtype=torch.float64)
    # The Krylov space of a Rademacher vector has dimension 3 (distinct eigenvalues): the
    # process stops there and the 3-node quadrature is exact for the step function.
    q = slq(lambda v: diag * v, 4, num_vectors=3, steps=10, seed=0)
    assert q.matvecs == 9 and all(len(n) == 3 for n in q.nodes)
    mass, stderr = negative_mass(q)
    assert mass == pytest.approx(0.5, abs=1e-12) and stderr == pytest.approx(0.0, abs=1e-12)
    assert negative_mass(q, eps=1.5) == (0.0, 0.0)
    single = slq(lambda v: diag * v, 4, num_vectors=1, steps=10, seed=0)
    assert math.isnan(negative_mass(single)[1])


def test_density_integrates_to_one_and_peaks_at_the_nodes():
    q = SpectralQuadrature(nodes=[[-1.0, 2.0], [-1.0, 2.0]], weights=[[0.25, 0.75]] * 2, matvecs=0)
    grid, values = density_on_grid(q, num_points=2001)
    step = grid[1] - grid[0]
    assert sum(values) * step == pytest.approx(1.0, rel=1e-3)
    peak = grid[max(range(len(values)), key=values.__getitem__)]
    assert peak == pytest.approx(2.0, abs=2 * step)
    _, at = density_on_grid(q, grid=[-1.0, 2.0], sigma=0.1)
    assert at[1] / at[0] == pytest.approx(3.0, rel=1e-6)


def test_density_errors():
    q = SpectralQuadrature(nodes=[[1.0]], weights=[[1.0]], matvecs=1)
    with pytest.raises(ProbeError, match="sigma must be > 0"):
        density_on_grid(q, sigma=0.0)
    with pytest.raises(ProbeError, match="num_points must be >= 2"):
        density_on_grid(q, num_points=1)
    with pytest.raises(ProbeError, match="no nodes"):
        density_on_grid(SpectralQuadrature(nodes=[[]], weights=[[]], matvecs=0))
    with pytest.raises(ProbeError, match="need num_vectors, steps, dim >= 1"):
        slq(lambda v: v, 3, steps=0)
    grid, values = density_on_grid(q)  # a single node still gets a positive width
    assert len(grid) == 200 and max(values) > 0
