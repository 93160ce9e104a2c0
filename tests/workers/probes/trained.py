"""Small float64 networks trained with plain torch, and their dense Hessians.

A trained network's Hessian is what the probes are for and where they are hardest: a few
outliers above a bulk of near-zero eigenvalues of both signs, small negative ones at the
bottom. At initialization the spectrum is flatter, which is the easy case.

    name             data                     model        training         d    index
    digits_adam      400 digits, CE           64-12-10     300 Adam 1e-2    910  0.021
    regression_sgd   300 x ∈ R^8, sin, MSE    8-24-24-2    300 SGD 0.1      866  0.193
    digits_sgd       300 digits, CE           64-8-8-10    500 SGD 0.5      682  0.018

(index: fraction of eigenvalues below -1e-3 · max|λ|). Each builds in under a second.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tests.workers.probes.reference import dense_hessian

NAMES = ("digits_adam", "regression_sgd", "digits_sgd")


@dataclass
class Trained:
    name: str
    model: nn.Module
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    x: Tensor
    y: Tensor
    hessian: Tensor  # dense float64 [d, d] on the CPU
    eigenvalues: Tensor  # ascending

    def on(self, device: torch.device) -> tuple[nn.Module, Tensor, Tensor]:
        """A copy of the model, and the data, on ``device`` (the shared fixture stays put)."""
        return copy.deepcopy(self.model).to(device), self.x.to(device), self.y.to(device)


def _digits(n: int) -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return torch.tensor(x[:n], dtype=torch.float64) / 16.0, torch.tensor(y[:n])


def _fit(model: nn.Module, loss_fn, x: Tensor, y: Tensor, opt: torch.optim.Optimizer, steps: int):
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()


def build(name: str) -> Trained:
    """Train the named network (seeded) and take its dense Hessian."""
    if name == "digits_adam":
        torch.manual_seed(0)
        x, y = _digits(400)
        model = nn.Sequential(nn.Linear(64, 12), nn.Tanh(), nn.Linear(12, 10)).double()
        loss_fn: nn.Module = nn.CrossEntropyLoss()
        _fit(model, loss_fn, x, y, torch.optim.Adam(model.parameters(), lr=1e-2), 300)
    elif name == "regression_sgd":
        torch.manual_seed(1)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(300, 8, generator=gen, dtype=torch.float64)
        y = torch.sin(x @ torch.randn(8, 2, generator=gen, dtype=torch.float64))
        model = nn.Sequential(
            nn.Linear(8, 24), nn.Tanh(), nn.Linear(24, 24), nn.Tanh(), nn.Linear(24, 2)
        ).double()
        loss_fn = nn.MSELoss()
        _fit(model, loss_fn, x, y, torch.optim.SGD(model.parameters(), lr=0.1), 300)
    elif name == "digits_sgd":
        torch.manual_seed(2)
        x, y = _digits(300)
        model = nn.Sequential(
            nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 10)
        ).double()
        loss_fn = nn.CrossEntropyLoss()
        _fit(model, loss_fn, x, y, torch.optim.SGD(model.parameters(), lr=0.5), 500)
    else:
        raise ValueError(f"unknown trained model {name!r}; expected one of: {', '.join(NAMES)}")
    model.eval()
    hessian = dense_hessian(model, loss_fn, x, y)
    return Trained(name, model, loss_fn, x, y, hessian, torch.linalg.eigvalsh(hessian))
