"""Initializations. Each applies to the weights of Linear, Conv and Embedding layers and
then multiplies them by `scale`; normalization layers keep weight 1 and bias 0.

A small `scale` is how plateaus are produced on purpose: in a deep linear net the time
spent near the saddle at the origin grows like log(1/scale) (Saxe et al. 2014).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from workers.errors import UnknownName

WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)

# torch.nn.init's gain names; gelu is treated like relu (same fan-in scaling to first order).
GAIN_NONLINEARITY = {"relu": "relu", "gelu": "relu", "tanh": "tanh", "linear": "linear"}


def _fan_in(w: Tensor) -> int:
    return w.shape[1] * (w[0][0].numel() if w.dim() > 2 else 1)


def _xavier_uniform(w: Tensor, cfg: Any, act: str) -> None:
    nn.init.xavier_uniform_(w, gain=nn.init.calculate_gain(GAIN_NONLINEARITY[act]))


def _xavier_normal(w: Tensor, cfg: Any, act: str) -> None:
    nn.init.xavier_normal_(w, gain=nn.init.calculate_gain(GAIN_NONLINEARITY[act]))


def _kaiming_uniform(w: Tensor, cfg: Any, act: str) -> None:
    nn.init.kaiming_uniform_(w, mode=cfg.mode, nonlinearity=GAIN_NONLINEARITY[act])


def _kaiming_normal(w: Tensor, cfg: Any, act: str) -> None:
    nn.init.kaiming_normal_(w, mode=cfg.mode, nonlinearity=GAIN_NONLINEARITY[act])


def _lecun_normal(w: Tensor, cfg: Any, act: str) -> None:
    nn.init.normal_(w, std=1 / math.sqrt(_fan_in(w)))


def _orthogonal(w: Tensor, cfg: Any, act: str) -> None:
    nn.init.orthogonal_(w, gain=nn.init.calculate_gain(GAIN_NONLINEARITY[act]))


def _normal(w: Tensor, cfg: Any, act: str) -> None:
    nn.init.normal_(w, std=cfg.std)


def _uniform(w: Tensor, cfg: Any, act: str) -> None:
    nn.init.uniform_(w, -cfg.bound, cfg.bound)


INITS: dict[str, Callable[[Tensor, Any, str], None] | None] = {
    "default": None,  # keep PyTorch's own layer init, then apply scale
    "xavier_uniform": _xavier_uniform,
    "xavier_normal": _xavier_normal,
    "kaiming_uniform": _kaiming_uniform,
    "kaiming_normal": _kaiming_normal,
    "lecun_normal": _lecun_normal,
    "orthogonal": _orthogonal,
    "normal": _normal,
    "uniform": _uniform,
}


@torch.no_grad()
def apply_init(model: nn.Module, cfg: Any, activation: str) -> nn.Module:
    """Initialize `model` in place from an init config (name, scale, zeros_bias, ...)."""
    if cfg.name not in INITS:
        raise UnknownName("init", cfg.name, list(INITS))
    rule = INITS[cfg.name]
    for module in model.modules():
        if not isinstance(module, WEIGHTED):
            continue
        if rule is not None:
            rule(module.weight, cfg, activation)
        module.weight.mul_(cfg.scale)
        bias = getattr(module, "bias", None)
        if bias is not None and cfg.zeros_bias:
            bias.zero_()
    return model
