"""The phenomena plateau-bench exists to measure, checked in direction with margins."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests.workers.helpers import config
from workers.config import RunConfig
from workers.inits import apply_init
from workers.train import build, train


def activation_second_moments(init: dict, depth: int = 20, width: int = 512) -> list[float]:
    """E[h^2] / Var(x) after each ReLU of a depth-20 MLP on unit-variance Gaussian inputs.

    Width 512: at finite width log E[h^2] random-walks with variance ~ depth * 5 / width
    (Hanin & Rolnick 2018), which at width 256 can leave a factor 2 by layer 20.
    """
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    model = nn.Sequential(*layers)
    apply_init(
        model,
        RunConfig.model_validate(
            {
                "task": {"name": "teacher_student"},
                "architecture": {"name": "mlp"},
                "optimizer": {"name": "sgd", "lr": 0.1},
                "init": init | {"zeros_bias": True},
            }
        ).init,
        "relu",
    )
    x = torch.randn(2048, width)
    moments = []
    with torch.no_grad():
        h = x
        for layer in layers:
            h = layer(h)
            if isinstance(layer, nn.ReLU):
                # He et al. 2015: with Var(W) = 2/fan_in, E[relu(z)^2] stays at Var(x)
                moments.append(float(h.pow(2).mean()) / float(x.var()))
    return moments


def test_kaiming_keeps_deep_relu_activations_at_scale_and_small_normal_kills_them():
    kaiming = activation_second_moments({"name": "kaiming_normal"})
    assert all(0.5 <= m <= 2.0 for m in kaiming), kaiming
    tiny = activation_second_moments({"name": "normal", "std": 0.01})
    assert tiny[-1] < 1e-6 * kaiming[-1], tiny[-1]  # orders of magnitude, compounding
    assert all(a > b for a, b in zip(tiny, tiny[1:], strict=False))


def deep_linear(scale: float) -> RunConfig:
    return config(
        task={"name": "deep_linear", "n_train": 256, "singular_values": [4.0, 2.0, 1.0]},
        architecture={"name": "deep_linear", "depth": 4, "width": 16},
        init={"name": "orthogonal", "scale": scale},
        optimizer={"name": "sgd", "lr": 0.02},
        budget={"steps": 3000, "batch_size": 256, "log_every": 10, "eval_every": 500},
        target={"loss": 0.01},
        plateau={"window": 25, "min_length": 50},
    )


@pytest.mark.slow
def test_deep_linear_plateaus_lengthen_as_the_init_scale_shrinks():
    longest = [train(deep_linear(s)).longest_plateau for s in (0.35, 0.25, 0.2)]
    assert 0 < longest[0] < longest[1] < longest[2], longest
    assert longest[2] > 3 * longest[0]


def test_the_detector_finds_the_parity_plateau_and_its_escape():
    result = train(
        config(
            task={"name": "parity", "n_bits": 16, "k": 4, "n_train": 4000},
            architecture={"name": "mlp", "depth": 1, "width": 128},
            optimizer={"name": "sgd", "lr": 0.1},
            budget={"steps": 1500, "batch_size": 128, "log_every": 10, "eval_every": 500},
            target={"loss": 0.05},
        )
    )
    first = result.plateaus["segments"][0]
    assert abs(first["level"] - math.log(2)) < 0.05  # stuck at chance: loss ln 2
    assert first["length"] >= 100 and first["escaped"] is True
    assert result.reached_target and result.steps_to_target > first["end"]


def test_training_is_bitwise_reproducible_on_cpu():
    cfg = config(
        normalization="batchnorm",
        grad_clip={"mode": "norm", "threshold": 1.0},
        optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9},
    )
    a, b = train(cfg), train(cfg)
    assert a.losses == b.losses and a.final_loss == b.final_loss
    _, m1 = build(cfg, torch.device("cpu"))
    _, m2 = build(cfg, torch.device("cpu"))
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters(), strict=True))
    assert a.environment["threads"] == 1 and a.environment["dtype"] == "float32"
    other_seed = train(cfg.model_copy(update={"seed": 1}))
    assert other_seed.losses != a.losses


def test_a_huge_learning_rate_diverges_with_its_step():
    result = train(config(optimizer={"name": "sgd", "lr": 1e4}))
    assert result.outcome == "diverged" and result.diverged_step is not None
    assert result.diverged_step < 40 and result.final_loss is None


def test_nan_loss_diverges_instead_of_crashing():
    result = train(
        config(
            task={"name": "teacher_student", "n_train": 64},
            architecture={"name": "mlp", "depth": 3, "width": 64},
            optimizer={"name": "sgd", "lr": 1e30},
        )
    )
    assert result.outcome == "diverged"
