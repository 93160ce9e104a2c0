"""The plugin's code, imported on the workers only."""

import math

import torch
from torch import nn

from workers.tasks import DATA_SEED, TaskData


def make_rings(cfg) -> TaskData:
    gen = torch.Generator().manual_seed(DATA_SEED)

    def sample(n: int):
        y = torch.randint(0, cfg.n_rings, (n,), generator=gen)
        angle = torch.rand(n, generator=gen, dtype=torch.float64) * 2 * math.pi
        radius = (y + 1).to(torch.float64) / cfg.n_rings
        x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], 1)
        return x + cfg.noise * torch.randn(n, 2, generator=gen, dtype=torch.float64), y

    (xtr, ytr), (xte, yte) = sample(cfg.n_train), sample(cfg.n_test)
    return TaskData(
        xtr,
        ytr,
        xte,
        yte,
        loss="cross_entropy",
        input_kind="vector",
        input_shape=(2,),
        n_outputs=cfg.n_rings,
    )


class RBF(nn.Module):
    def __init__(self, d_in: int, centers: int, d_out: int) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.randn(centers, d_in))
        self.log_width = nn.Parameter(torch.zeros(centers))
        self.out = nn.Linear(centers, d_out)

    def forward(self, x):
        distance = torch.cdist(x, self.centers) ** 2  # (batch, centers)
        return self.out(torch.exp(-distance * torch.exp(-2 * self.log_width)))


def build_rbf(cfg, normalization: str, data: TaskData) -> nn.Module:
    return RBF(data.input_shape[0], cfg.centers, data.n_outputs)
