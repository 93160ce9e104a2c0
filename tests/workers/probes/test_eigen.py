"""Lanczos and the PyHessian-rule power iteration against exact spectra."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tests.workers.probes.reference import dense_hessian
from workers.probes import ProbeError
from workers.probes.hvp import make_hvp
from workers.probes.lanczos import lanczos
from workers.probes.power import power_iteration

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def quadratic(eigenvalues: list[float], device: torch.device, seed: int = 0) -> Tensor:
    """A = U diag(λ) Uᵀ with a seeded random orthogonal U."""
    gen = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    u, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return (u @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ u.T).to(device)


def tanh_mlp_hessian(device: torch.device) -> tuple[Tensor, object]:
    """(dense float64 Hessian, HVP) of a 267-parameter tanh MLP at a random init."""
    torch.manual_seed(0)
    model = (
        nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 3))
        .to(device=device, dtype=torch.float64)
        .eval()
    )
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(50, 5, generator=gen, dtype=torch.float64).to(device)
    y = torch.randint(0, 3, (50,), generator=gen).to(device)
    loss_fn = nn.CrossEntropyLoss()
    return dense_hessian(model, loss_fn, x, y), make_hvp(model, loss_fn, x, y)


class Saddle(nn.Module):
    """f(x, y) = x² - y²: Hessian diag(2, -2) everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.3, -0.7], dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return (self.w[0] ** 2 - self.w[1] ** 2).expand(x.shape[0])


def test_lanczos_recovers_a_known_spectrum(device):
    spectrum = [-3.0, -1.0, *torch.linspace(0.0, 1.0, 194).tolist(), 4.0, 7.0]
    a = quadratic(spectrum, device)
    res = lanczos(
        lambda v: a @ v,
        198,
        k=2,
        max_steps=198,
        tol=1e-10,
        seed=0,
        device=device,
        return_vectors=True,
    )
    assert res.converged
    assert res.top == pytest.approx([7.0, 4.0], rel=1e-9)
    assert res.bottom == pytest.approx([-3.0, -1.0], rel=1e-9)
    # Isolated extremes converge long before the Krylov space is exhausted.
    assert res.matvecs < 100 and res.iterations == res.matvecs
    assert res.top_history[-1] == res.top[0]
    for vectors, values in ((res.top_vectors, res.top), (res.bottom_vectors, res.bottom)):
        for y, theta in zip(vectors, values, strict=True):
            assert float((a @ y - theta * y).norm()) <= 1e-9 * 7.0
            assert float(y.norm()) == pytest.approx(1.0, rel=1e-12)


def test_lanczos_matches_eigvalsh_on_an_indefinite_mlp_hessian(device):
    dense, hvp = tanh_mlp_hessian(device)
    exact = torch.linalg.eigvalsh(dense).cpu()
    assert exact[0] < 0 < exact[-1]  # indefinite: a real test of the bottom end
    res = lanczos(hvp, hvp.dim, k=3, max_steps=hvp.dim, tol=1e-9, seed=0, device=device)
    assert res.converged and res.matvecs == hvp.count
    scale = float(exact.abs().max())
    top, bottom = exact.flip(0)[:3].tolist(), exact[:3].tolist()
    for got, want in zip(res.top + res.bottom, top + bottom, strict=True):
        assert abs(got - want) <= 1e-6 * max(abs(want), 1e-3 * scale)
    assert max(res.top_residuals + res.bottom_residuals) <= 1e-9 * scale


def test_lanczos_is_exact_when_dim_is_below_the_step_budget():
    diag = torch.tensor([5.0, -2.0, 1.0, 1.0, 0.5], dtype=torch.float64)
    res = lanczos(lambda v: diag * v, 5, k=5, max_steps=50, tol=1e-12, seed=3)
    # The repeated eigenvalue 1 makes the Krylov space invariant at step 4: Lanczos restarts
    # from a fresh orthogonal vector and still ends with the whole space after 5 products.
    assert res.matvecs == 5
    assert res.top == pytest.approx([5.0, 1.0, 1.0, 0.5, -2.0], abs=1e-12)
    assert res.bottom == pytest.approx([-2.0, 0.5, 1.0, 1.0, 5.0], abs=1e-12)
    assert res.converged and max(res.top_residuals) < 1e-12


def test_lanczos_is_seeded():
    a = quadratic(torch.linspace(-1, 2, 40).tolist(), torch.device("cpu"))
    runs = [lanczos(lambda v: a @ v, 40, max_steps=6, seed=s).top_history for s in (1, 1, 2)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_lanczos_errors():
    with pytest.raises(ProbeError, match="need dim, k, max_steps >= 1"):
        lanczos(lambda v: v, 0)
    with pytest.raises(ProbeError, match="tol must be >= 0"):
        lanczos(lambda v: v, 3, tol=-1.0)
    with pytest.raises(ProbeError, match="non-finite values at Lanczos step 0"):
        lanczos(lambda v: v * float("nan"), 3)


def test_saddle_has_lambda_max_2_and_lambda_min_minus_2(device):
    model = Saddle().to(device)
    x = torch.zeros(3, 1, dtype=torch.float64, device=device)
    hvp = make_hvp(model, lambda out, y: out.mean(), x, x[:, 0])
    res = lanczos(hvp, hvp.dim, k=1, seed=0, device=device)
    assert res.top == pytest.approx([2.0], abs=1e-12)
    assert res.bottom == pytest.approx([-2.0], abs=1e-12)


def test_power_iteration_reaches_lambda_max_to_its_tolerance(device):
    dense, hvp = tanh_mlp_hessian(device)
    exact = torch.linalg.eigvalsh(dense).cpu()
    lam = float(exact[-1])
    assert lam > abs(float(exact[0]))  # the power method finds the largest magnitude
    res = power_iteration(hvp, hvp.dim, seed=0, device=device)
    # Its test is on successive estimates, so the true error can exceed tol when the ratio
    # λ₂/λ₁ is close to 1; a factor of ten covers this well-separated case.
    assert abs(res.eigenvalues[0] - lam) <= 10 * 1e-3 * lam
    tight = power_iteration(hvp, hvp.dim, tol=1e-9, max_iter=2000, seed=0, device=device)
    # Not better than ~2e-6 · (1 + 1/λ): PyHessian's 1e-6 normalization guard biases it low.
    assert tight.eigenvalues[0] == pytest.approx(lam, rel=1e-5)
    assert tight.matvecs > res.matvecs


def test_power_iteration_follows_pyhessians_rule():
    diag = torch.tensor([1.0, 3.0, 4.0], dtype=torch.float64)
    res = power_iteration(lambda v: diag * v, 3, seed=0, max_iter=100, tol=1e-3)
    h = res.history
    # It stops at the first i with |λ_{i-1} - λ_i| / (|λ_{i-1}| + 1e-6) < tol, and returns
    # λ_{i-1}, the estimate before the one that passed the test.
    stop = next(i for i in range(1, len(h)) if abs(h[i - 1] - h[i]) / (abs(h[i - 1]) + 1e-6) < 1e-3)
    assert len(h) == stop + 1 == res.matvecs == res.iterations[0]
    assert res.eigenvalues == [h[-2]]
    fixed = power_iteration(lambda v: diag * v, 3, seed=0, max_iter=7, tol=0.0)
    assert fixed.matvecs == 7 and fixed.eigenvalues == [fixed.history[-1]]


def test_power_iteration_deflates_for_top_n():
    diag = torch.tensor([1.0, 3.0, -6.0, 10.0], dtype=torch.float64)
    res = power_iteration(
        lambda v: diag * v, 4, top_n=2, tol=1e-10, max_iter=1000, return_vectors=True
    )
    assert res.eigenvalues == pytest.approx([10.0, -6.0], rel=1e-5)  # 1e-6 guard bias
    assert res.eigenvectors is not None and res.eigenvectors.shape == (2, 4)
    assert len(res.iterations) == 2 and sum(res.iterations) == res.matvecs


def test_power_iteration_cannot_split_a_symmetric_saddle_but_lanczos_can():
    # |λmax| = |λmin|: the Rayleigh quotient of H^i v is the same for every i, so the
    # baseline stops at once with a value between -2 and 2; Lanczos needs 2 products.
    diag = torch.tensor([2.0, -2.0], dtype=torch.float64)
    power = power_iteration(lambda v: diag * v, 2, seed=0)
    assert power.matvecs == 2 and abs(power.eigenvalues[0]) < 2.0 - 1e-3
    res = lanczos(lambda v: diag * v, 2, seed=0)
    assert (res.top, res.bottom, res.matvecs) == (pytest.approx([2.0]), pytest.approx([-2.0]), 2)


def test_power_iteration_errors():
    with pytest.raises(ProbeError, match="need dim, top_n, max_iter >= 1"):
        power_iteration(lambda v: v, 2, max_iter=0)
