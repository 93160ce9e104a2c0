"""Loss slices, directions and interpolation, vmap path against the loop path."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from workers.probes import ProbeError
from workers.probes.slices import (
    filter_normalized_direction,
    flat_parameters,
    interpolation,
    make_loss_evaluator,
    slice_1d,
    slice_2d,
    unit_direction,
)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def mlp(device: torch.device, *, batchnorm: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(5, 12)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(12))
    layers += [nn.Tanh(), nn.Linear(12, 3)]
    return nn.Sequential(*layers).to(device=device, dtype=torch.float64).eval()


def data(device: torch.device, n: int = 30) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 5, generator=gen, dtype=torch.float64)
    return x.to(device), torch.randint(0, 3, (n,), generator=gen).to(device)


class Quadratic(nn.Module):
    """f(w) = ½ wᵀ A w with A = U diag(λ) Uᵀ (the output is f, broadcast over the batch)."""

    def __init__(self, eigenvalues: list[float], center: Tensor) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        n = len(eigenvalues)
        u, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
        self.register_buffer("u", u)
        self.register_buffer("a", u @ torch.diag(torch.tensor(eigenvalues).double()) @ u.T)
        self.w = nn.Parameter(center.clone())

    def forward(self, x: Tensor) -> Tensor:
        return (0.5 * self.w @ self.a @ self.w).expand(x.shape[0])


def mean_output(out: Tensor, y: Tensor) -> Tensor:
    return out.mean()


def test_slice_at_zero_is_the_loss(device):
    model, (x, y), loss_fn = mlp(device), data(device), nn.CrossEntropyLoss()
    evaluate = make_loss_evaluator(model, loss_fn, x, y)
    losses = slice_1d(evaluate, filter_normalized_direction(model, seed=0), [-0.5, 0.0, 0.5])
    assert losses[1] == pytest.approx(loss_fn(model(x), y).item(), rel=1e-12)
    assert losses[0] != losses[1] != losses[2]
    assert evaluate.vectorized and evaluate.mode == "eval"


@pytest.mark.parametrize("at_minimum", [True, False])
def test_slice_along_an_eigenvector_of_a_quadratic_is_a_parabola(device, at_minimum):
    eigenvalues = [3.0, -2.0, 0.5, 1.0]
    center = torch.zeros(4) if at_minimum else torch.tensor([0.3, -1.0, 0.2, 0.7])
    model = Quadratic(eigenvalues, center.double()).to(device)
    x = torch.zeros(2, 1, dtype=torch.float64, device=device)
    evaluate = make_loss_evaluator(model, mean_output, x, x[:, 0])
    alphas = [-1.0, -0.25, 0.0, 0.5, 2.0]
    theta = center.double().to(device)
    f0 = float(0.5 * theta @ model.a @ theta)
    for i, lam in enumerate(eigenvalues):
        u = model.u[:, i]
        slope = float(u @ model.a @ theta)  # directional derivative, zero at the minimum
        # A scaled eigenvector: slices use whatever they are given, unit_direction makes it 1.
        got = slice_1d(evaluate, unit_direction(3.0 * u), alphas)
        want = [f0 + slope * a + lam * a**2 / 2 for a in alphas]
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_filter_normalization_matches_filter_norms_and_zeroes_biases(device):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 5)
    ).to(device=device, dtype=torch.float64)
    d = filter_normalized_direction(model, seed=0)
    assert d.shape == flat_parameters(model).shape
    offset = 0
    for name, p in model.named_parameters():
        part = d[offset : offset + p.numel()].reshape(p.shape)
        offset += p.numel()
        if p.dim() == 1:  # conv/linear biases, BatchNorm weight and bias
            assert torch.count_nonzero(part) == 0, name
        else:
            filters = part.reshape(p.shape[0], -1).norm(dim=1)
            weights = p.detach().reshape(p.shape[0], -1).norm(dim=1)
            torch.testing.assert_close(filters, weights, rtol=1e-9, atol=0)
    assert torch.equal(d, filter_normalized_direction(model, seed=0))
    assert not torch.equal(d, filter_normalized_direction(model, seed=1))


def test_interpolation_endpoints_are_the_losses_at_both_ends(device):
    model, (x, y), loss_fn = mlp(device), data(device), nn.CrossEntropyLoss()
    theta1 = flat_parameters(model)
    theta0 = theta1 + 0.3 * filter_normalized_direction(model, seed=5)
    evaluate = make_loss_evaluator(model, loss_fn, x, y)
    losses = interpolation(evaluate, theta0, theta1, [0.0, 0.5, 1.0])
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(theta0, model.parameters())
        at0 = loss_fn(model(x), y).item()
        torch.nn.utils.vector_to_parameters(theta1, model.parameters())
        at1 = loss_fn(model(x), y).item()
    assert losses[0] == pytest.approx(at0, rel=1e-12)
    assert losses[2] == pytest.approx(at1, rel=1e-12)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_vmap_path_equals_loop_path(device, batchnorm):
    model, (x, y), loss_fn = mlp(device, batchnorm=batchnorm), data(device), nn.CrossEntropyLoss()
    d1, d2 = (filter_normalized_direction(model, seed=s) for s in (1, 2))
    alphas, betas = [-1.0, 0.0, 0.5], [-0.5, 0.0, 0.25, 1.0]
    fast = make_loss_evaluator(model, loss_fn, x, y, points_per_batch=5, batch_size=8)
    slow = make_loss_evaluator(model, loss_fn, x, y, vectorize=False)
    got = slice_2d(fast, d1, d2, alphas, betas)
    want = slice_2d(slow, d1, d2, alphas, betas)
    assert fast.vectorized and not slow.vectorized
    assert len(got) == 3 and all(len(row) == 4 for row in got)
    for row_got, row_want in zip(got, want, strict=True):
        assert row_got == pytest.approx(row_want, rel=1e-12)
    assert got[1][1] == pytest.approx(loss_fn(model(x), y).item(), rel=1e-12)


def test_batchnorm_in_train_mode_falls_back_to_the_loop(device):
    model, (x, y), loss_fn = (
        mlp(device, batchnorm=True).train(),
        data(device),
        nn.CrossEntropyLoss(),
    )
    before = model[1].running_mean.clone()
    evaluate = make_loss_evaluator(model, loss_fn, x, y)
    assert not evaluate.vectorized and evaluate.mode == "train"
    d = filter_normalized_direction(model, seed=0)
    losses = slice_1d(evaluate, d, [0.0, 1.0])
    assert torch.equal(model[1].running_mean, before)  # the slice ran on copies of the buffers
    center = flat_parameters(model)
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(center + d, model.parameters())
        at1 = loss_fn(model(x), y).item()  # batch statistics, as in train mode
        torch.nn.utils.vector_to_parameters(center, model.parameters())
    assert losses[1] == pytest.approx(at1, rel=1e-12)


def test_a_vmap_failure_switches_to_the_loop():
    class Stateful(nn.Module):
        # Writes to a buffer in place in eval mode too: vmap refuses, the loop does not.
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(5, 3).double()
            self.register_buffer("calls", torch.zeros((), dtype=torch.float64))

        def forward(self, x: Tensor) -> Tensor:
            self.calls.add_(self.lin.weight.sum())
            return self.lin(x)

    model, (x, y), loss_fn = Stateful().eval(), data(torch.device("cpu")), nn.CrossEntropyLoss()
    evaluate = make_loss_evaluator(model, loss_fn, x, y)
    assert evaluate.vectorized
    losses = slice_1d(evaluate, filter_normalized_direction(model, seed=0), [0.0, 1.0])
    assert not evaluate.vectorized
    assert losses[0] == pytest.approx(loss_fn(model.lin(x), y).item(), rel=1e-12)


def test_slice_errors():
    model, (x, y), loss_fn = mlp(torch.device("cpu")), data(torch.device("cpu")), nn.MSELoss()
    with pytest.raises(ProbeError, match="same, non-zero number of samples"):
        make_loss_evaluator(model, loss_fn, x, y[:2])
    with pytest.raises(ProbeError, match="points_per_batch and batch_size must be >= 1"):
        make_loss_evaluator(model, loss_fn, x, y, points_per_batch=0)
    with pytest.raises(ProbeError, match="finite and non-zero"):
        unit_direction(torch.zeros(3))
    evaluate = make_loss_evaluator(model, nn.CrossEntropyLoss(), x, y)
    d = filter_normalized_direction(model, seed=0)
    with pytest.raises(ProbeError, match="2 coefficients per point for 1 directions"):
        evaluate(evaluate.center, d[None, :], torch.zeros(4, 2))
