"""Optimizers and learning-rate schedules, by registry name."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from workers.errors import UnknownName


def _sgd(params: Iterable[nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
    )


def _adam(params: Iterable[nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay
    )


def _adamw(params: Iterable[nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay
    )


def _rmsprop(params: Iterable[nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(
        params,
        lr=cfg.lr,
        alpha=cfg.alpha,
        eps=cfg.eps,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )


def _adagrad(params: Iterable[nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    return torch.optim.Adagrad(params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay)


OPTIMIZERS: dict[str, Callable[[Iterable[nn.Parameter], Any], torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "adam": _adam,
    "adamw": _adamw,
    "rmsprop": _rmsprop,
    "adagrad": _adagrad,
}


def create_optimizer(params: Iterable[nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    try:
        factory = OPTIMIZERS[cfg.name]
    except KeyError:
        raise UnknownName("optimizer", cfg.name, list(OPTIMIZERS)) from None
    return factory(params, cfg)


def _cosine(progress: float, min_factor: float) -> float:
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def lr_factor(schedule: Any, step: int, total_steps: int) -> float:
    """Multiplier of the base lr at `step` (0-based) of `total_steps`."""
    if schedule.name == "constant":
        return 1.0
    if schedule.name == "cosine":
        return _cosine(step / max(1, total_steps), schedule.min_factor)
    if schedule.name == "linear_warmup":
        if step < schedule.warmup_steps:
            return (step + 1) / schedule.warmup_steps
        if schedule.then == "constant":
            return 1.0
        rest = max(1, total_steps - schedule.warmup_steps)
        return _cosine((step - schedule.warmup_steps) / rest, schedule.min_factor)
    raise UnknownName("schedule", schedule.name, ["constant", "cosine", "linear_warmup"])
