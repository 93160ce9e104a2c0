"""The diagnosis on analytic cases, from real probes (no hand-made eigenvalues)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workers.diagnose import DEFAULT_THRESHOLDS, classify
from workers.probes import run_probes


def verdict_at(model: nn.Module, loss, x, y, *, reached_target=False) -> tuple[str, dict]:
    out = run_probes(
        model,
        loss,
        x,
        y,
        k=1,
        lanczos_steps=20,
        hutchinson_vectors=4,
        slq_vectors=2,
        slq_steps=10,
        slice_points=3,
        slice_points_2d=3,
    )
    verdict = classify(
        loss_finite=True,
        reached_target=reached_target,
        recent_improvement=0.0,
        rel_improvement=0.01,
        grad_norm=out["grad_norm"],
        lambda_max=out["lambda_max"],
        lambda_min=out["lambda_min"],
        lambda_min_residual=out["residuals"]["bottom"][0],
        thresholds=DEFAULT_THRESHOLDS,
    )
    return verdict, out


class Saddle(nn.Module):
    """f(x, y) = x^2 - y^2 as a 'model' whose output is the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.w[0] ** 2 - self.w[1] ** 2).expand(x.shape[0])


def test_x2_minus_y2_at_the_origin_is_a_saddle():
    x = torch.zeros(4, 1, dtype=torch.float64)
    verdict, out = verdict_at(Saddle(), lambda o, y: o.mean(), x, x[:, 0])
    assert verdict == "saddle"
    assert out["lambda_max"] == pytest.approx(2.0) and out["lambda_min"] == pytest.approx(-2.0)


def test_a_deep_linear_network_at_zero_init_sits_on_a_saddle():
    """L = 1/2 E||W2 W1 x - A x||^2 at W = 0: zero gradient, Hessian eigenvalues +-s_i(A)."""
    torch.manual_seed(0)
    x = torch.randn(256, 4, dtype=torch.float64)
    a = torch.diag(torch.tensor([3.0, 1.0, 0.5, 0.2], dtype=torch.float64))
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)).double()
    for p in model.parameters():
        nn.init.zeros_(p)
    loss = lambda out, y: 0.5 * ((out - y) ** 2).sum(-1).mean()  # noqa: E731
    verdict, out = verdict_at(model, loss, x, x @ a.T)
    assert out["grad_norm"] < 1e-12
    assert verdict == "saddle" and out["lambda_min"] < -0.1


def test_least_squares_at_its_optimum_is_a_local_minimum():
    """A convex problem solved exactly: gradient ~0, all curvature >= 0, loss above target."""
    torch.manual_seed(0)
    x = torch.randn(200, 3, dtype=torch.float64)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64)
    y = y + 0.3 * torch.randn(200, 1, dtype=torch.float64)  # noise floor above any small target
    model = nn.Linear(3, 1).double()
    design = torch.cat([x, torch.ones(200, 1, dtype=torch.float64)], 1)
    solution = torch.linalg.lstsq(design, y).solution
    with torch.no_grad():
        model.weight.copy_(solution[:3].T)
        model.bias.copy_(solution[3])
    verdict, out = verdict_at(model, nn.functional.mse_loss, x, y)
    assert out["grad_norm"] < 1e-10 and out["lambda_min"] > 0
    assert verdict == "local_minimum"
    assert verdict_at(model, nn.functional.mse_loss, x, y, reached_target=True)[0] == "converged"


@pytest.mark.parametrize(
    "numbers,expected",
    [
        ({"loss_finite": False}, "diverged"),
        ({"reached_target": True}, "converged"),
        ({"recent_improvement": 0.2}, "still_improving"),
        ({}, "plateau"),  # no probe: curvature unknown
        ({"grad_norm": 1e-3, "lambda_max": 1e-4, "lambda_min": -1e-9}, "plateau"),  # flat
        ({"grad_norm": 1e-3, "lambda_max": 5.0, "lambda_min": 0.1}, "local_minimum"),
        ({"grad_norm": 1e-3, "lambda_max": 5.0, "lambda_min": -1.0}, "saddle"),
        # lambda_min negative but within its Ritz residual: not clearly negative
        (
            {"grad_norm": 1e-3, "lambda_max": 5.0, "lambda_min": -0.01, "lambda_min_residual": 0.1},
            "local_minimum",
        ),
    ],
)
def test_each_rule(numbers, expected):
    base = {
        "loss_finite": True,
        "reached_target": False,
        "recent_improvement": 0.0,
        "rel_improvement": 0.01,
        "grad_norm": None,
        "lambda_max": None,
        "lambda_min": None,
        "lambda_min_residual": None,
        "thresholds": DEFAULT_THRESHOLDS,
    }
    assert classify(**(base | numbers)) == expected
