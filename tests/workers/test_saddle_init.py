"""The saddle init (workers.config.SaddleInit): a two-layer deep linear net placed exactly
on a strict saddle of the deep_linear task, checked against a dense float64 Hessian and
the analytic spectrum; full-batch descent stays there while minibatch SGD leaves (the
report's "noise escapes saddles" experiment, in miniature)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from workers.config import RunConfig
from workers.train import build, train

S = [3.0, 2.0, 1.0]


def config(**changes: Any) -> RunConfig:
    base: dict[str, Any] = {
        "task": {"name": "deep_linear", "input_dim": 6, "output_dim": 6, "singular_values": S,
                 "n_train": 256, "n_test": 64},
        "architecture": {"name": "deep_linear", "depth": 1, "width": 4},
        "init": {"name": "saddle", "modes": [0, 2]},  # mode 1 (s = 2) left out
        "optimizer": {"name": "sgd", "lr": 0.05},
        "budget": {"steps": 300, "batch_size": 8, "log_every": 1, "eval_every": 100},
        "target": {"loss": 0.05},
        "device": "cpu",
        "dtype": "float64",
    }  # fmt: skip
    return RunConfig.model_validate(base | changes)


def test_the_net_sits_on_a_strict_saddle_with_the_analytic_spectrum():
    data, model = build(config(), torch.device("cpu"))
    params = [p for p in model.parameters()]
    shapes = [p.shape for p in params]
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    x, y = data.x_train, data.y_train

    def loss(vector: torch.Tensor, xs: torch.Tensor = x, ys: torch.Tensor = y) -> torch.Tensor:
        w1 = vector[: shapes[0].numel()].reshape(shapes[0])
        w2 = vector[shapes[0].numel() :].reshape(shapes[1])
        return 0.5 * ((xs @ w1.T @ w2.T - ys) ** 2).sum(1).mean()

    point = flat.clone().requires_grad_()
    assert torch.autograd.grad(loss(point), point)[0].norm() < 1e-12  # a critical point
    assert loss(flat).item() == pytest.approx(0.5 * S[1] ** 2, rel=1e-12)  # mode 1 unlearned
    per_sample = [
        torch.autograd.grad(loss(point, x[i : i + 1], y[i : i + 1]), point)[0].norm().item()
        for i in range(10)
    ]
    assert min(per_sample) > 1e-2  # each sample's gradient is not zero: noise to escape on
    eigenvalues = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, flat))
    negative = sorted(e.item() for e in eigenvalues if e < -1e-9)
    # -s1 for each of the 2 spare hidden units (learn mode 1 from zero), -(s1 - s2) for
    # the unit of mode 2 turning towards mode 1
    assert negative == pytest.approx([-S[1], -S[1], -(S[1] - S[2])], abs=1e-9)


def test_full_batch_descent_stays_and_minibatch_noise_leaves():
    saddle = 0.5 * S[1] ** 2
    full = train(config(budget={"steps": 200, "full_batch": True, "log_every": 1}))
    assert max(abs(loss - saddle) for loss in full.losses) < 1e-6
    noisy = train(config())
    assert min(noisy.losses) < 0.5 * saddle  # left the saddle, towards the minimum (0)


def test_the_saddle_is_refused_where_it_does_not_exist():
    for changes, message in [
        ({"architecture": {"name": "deep_linear", "depth": 2, "width": 4}}, "depth 1"),
        ({"init": {"name": "saddle", "modes": [0, 3]}}, "mode 3 does not exist"),
        ({"init": {"name": "saddle", "modes": [0, 2], "scale": 0.5}}, "scale must be 1"),
        ({"init": {"name": "saddle", "modes": [0, 0]}}, "repeat"),
    ]:
        with pytest.raises(ValueError, match=message):
            config(**changes)


def test_a_pack_of_saddle_runs_trains_as_one_by_one():
    from workers.packed.train import train_many

    configs = [config(seed=s) for s in range(2)]
    alone = [train(c) for c in configs]
    packed = train_many(configs)
    for a, b in zip(alone, packed, strict=True):
        assert not isinstance(b, Exception)
        torch.testing.assert_close(
            torch.tensor(a.losses), torch.tensor(b.losses), rtol=1e-6, atol=1e-9
        )
