from __future__ import annotations

from typing import Any

import torch

from workers.config import RunConfig
from workers.tasks import loss_fn
from workers.train import TrainResult, build, evaluate, train

SMALL_TASKS: dict[str, dict[str, Any]] = {
    "digits": {"name": "digits"},
    "teacher_student": {"name": "teacher_student", "n_train": 256, "n_test": 64},
    "deep_linear": {"name": "deep_linear", "n_train": 128, "n_test": 64},
    "parity": {"name": "parity", "n_bits": 6, "n_train": 256, "n_test": 64},
    "spirals": {"name": "spirals", "n_train": 256, "n_test": 64},
    "modular_addition": {"name": "modular_addition", "p": 11},
}


def config(**overrides: Any) -> RunConfig:
    base: dict[str, Any] = {
        "task": SMALL_TASKS["digits"],
        "architecture": {"name": "mlp", "depth": 2, "width": 32},
        "optimizer": {"name": "adam", "lr": 0.01},
        "budget": {"steps": 40, "batch_size": 64, "log_every": 1, "eval_every": 20},
        "device": "cpu",
    }
    return RunConfig.model_validate(base | overrides)


def initial_loss(cfg: RunConfig) -> float:
    data, model = build(cfg, torch.device("cpu"))
    loss, _ = evaluate(
        model, data.x_train, data.y_train, loss_fn(data.loss), classify=data.loss == "cross_entropy"
    )
    return loss


def trains(cfg: RunConfig) -> tuple[float, TrainResult]:
    """Initial full-training-set loss and the result of training."""
    return initial_loss(cfg), train(cfg)
