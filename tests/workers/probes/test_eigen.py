"""Lanczos and the PyHessian-rule power iteration against exact spectra."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tests.workers.probes.reference import dense_hessian
from workers.probes import ProbeError, run_probes
from workers.probes.hvp import make_hvp
from workers.probes.lanczos import Krylov, lanczos
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
    with pytest.raises(ProbeError, match=r"max_basis must be >= 2k \+ 4 = 10 to restart, got 9"):
        lanczos(lambda v: v, 50, k=3, max_basis=9)


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


def assert_within_residuals(got: list[float], want: list[float], residuals: list[float], scale):
    # |θ - λ| <= ||Hy - θy||: rounding of the dense reference allows 1e-12 · ||H|| more.
    for g, w, r in zip(got, want, residuals, strict=True):
        assert abs(g - w) <= r + 1e-12 * scale


def test_lanczos_runs_until_the_extremes_of_a_trained_network_converge(trained, device):
    model, x, y = trained.on(device)
    out = run_probes(
        model,
        trained.loss_fn,
        x,
        y,
        measure=["eigenvalues"],
        k=5,
        lanczos_steps=40,
        lanczos_max_steps=300,
    )
    exact = trained.eigenvalues
    scale = float(exact.abs().max())
    # Measured: 71-98 products; a fixed 40 / 60 left the bottom 5 up to 110 % / 22 % off.
    assert out["converged"] and 40 < out["lanczos_steps"] <= 300
    assert out["eigenvalue_converged"] == {"top": [True] * 5, "bottom": [True] * 5}
    assert out["hvp_count"] == 2 + out["lanczos_steps"] and out["lanczos_restarts"] == 0
    assert out["residual_bound"] == pytest.approx(1e-6 * scale, rel=1e-9)
    res = out["residuals"]
    assert max(res["top"] + res["bottom"]) <= out["residual_bound"]
    assert_within_residuals(out["top_eigenvalues"], exact.flip(0)[:5].tolist(), res["top"], scale)
    assert_within_residuals(out["bottom_eigenvalues"], exact[:5].tolist(), res["bottom"], scale)
    assert out["lambda_min"] < 0  # trained, yet a saddle at this resolution


def test_unconverged_eigenvalues_are_flagged_one_by_one(trained):
    h, d = trained.hessian, trained.hessian.shape[0]
    res = lanczos(lambda v: h @ v, d, k=5, max_steps=40, tol=1e-6, seed=0)
    exact = trained.eigenvalues
    flags = res.top_converged + res.bottom_converged
    residuals = res.top_residuals + res.bottom_residuals
    assert flags == [r <= res.bound for r in residuals] and not res.converged
    assert not all(res.bottom_converged)  # 40 products do not resolve the bottom
    scale = float(exact.abs().max())
    want = exact.flip(0)[:5].tolist() + exact[:5].tolist()
    for theta, r, ok, w in zip(res.top + res.bottom, residuals, flags, want, strict=True):
        # Any Ritz value has an eigenvalue within its residual; a converged one, its own.
        assert float((exact - theta).abs().min()) <= r + 1e-12 * scale
        if ok:
            assert abs(theta - w) <= r + 1e-12 * scale
    # Cauchy interlacing: the i-th smallest Ritz value is >= λ_i, the i-th largest <= λ_{d-i}.
    slack = 1e-12 * scale
    assert all(t >= w - slack for t, w in zip(res.bottom, exact[:5].tolist(), strict=True))
    assert all(t <= w + slack for t, w in zip(res.top, exact.flip(0)[:5].tolist(), strict=True))


def test_thick_restart_keeps_memory_bounded_and_still_converges(device):
    spectrum = [-3.0, -1.0, *torch.linspace(0.0, 1.0, 294).tolist(), 4.0, 7.0]
    a = quadratic(spectrum, device)
    full = lanczos(lambda v: a @ v, 298, k=2, max_steps=298, tol=1e-10, seed=0, device=device)
    res = lanczos(
        lambda v: a @ v, 298, k=2, max_steps=298, tol=1e-10, seed=0, device=device, max_basis=12
    )
    assert res.converged and res.restarts > 0 and full.restarts == 0
    assert res.top == pytest.approx([7.0, 4.0], rel=1e-9)
    assert res.bottom == pytest.approx([-3.0, -1.0], rel=1e-9)


def test_thick_restart_on_a_trained_network(trained):
    h, d = trained.hessian, trained.hessian.shape[0]
    res = lanczos(lambda v: h @ v, d, k=3, max_steps=600, tol=1e-6, seed=0, max_basis=60)
    exact = trained.eigenvalues
    assert res.converged and res.restarts > 0
    scale = float(exact.abs().max())
    want = exact.flip(0)[:3].tolist() + exact[:3].tolist()
    assert_within_residuals(
        res.top + res.bottom, want, res.top_residuals + res.bottom_residuals, scale
    )


def test_lanczos_takes_at_least_min_steps():
    diag = torch.tensor([1.0, 2.0, 3.0] * 10, dtype=torch.float64)
    # Three distinct eigenvalues: converged after 3 products, unless told to go on.
    assert lanczos(lambda v: diag * v, 30, seed=0).matvecs == 3
    res = lanczos(lambda v: diag * v, 30, min_steps=10, seed=0)
    assert res.matvecs == 10 and res.converged and res.top == pytest.approx([3.0])


def test_krylov_errors():
    diag = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    start = torch.ones(3, dtype=torch.float64)
    krylov = Krylov(lambda v: diag * v, start, 5, restart=True)
    while not krylov.done:
        krylov.step()
    with pytest.raises(ProbeError, match="complete or full; restart it first"):
        krylov.step()
    krylov.thick_restart([0, 2])
    with pytest.raises(ProbeError, match="a thick-restarted basis has no tridiagonal T"):
        krylov.tridiagonal()
    bare = Krylov(lambda v: diag * v, start, 5, restart=False, keep_products=False)
    bare.step()
    with pytest.raises(ProbeError, match="a thick restart needs keep_products=True"):
        bare.thick_restart([0])
    with pytest.raises(ProbeError, match="residuals need keep_products=True"):
        bare.residuals(*bare.ritz()[:2])
    with pytest.raises(ProbeError, match="start vector must be finite and non-zero"):
        Krylov(lambda v: v, torch.zeros(3, dtype=torch.float64), 5, restart=False)
