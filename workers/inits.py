"""Initializations as the papers define them.

Each rule draws the weights of Linear, Conv and Embedding layers; `apply_init` then
multiplies every such weight by the config's `scale` and, with `zeros_bias`, zeroes the
biases. Normalization layers keep weight 1 and bias 0. A weight of shape (out, in, *kernel)
has fan_in = in·prod(kernel) and fan_out = out·prod(kernel) (torch's convention; an
Embedding's weight (vocab, d) has fan_in = d).

- default: PyTorch's own layer init.
- xavier_uniform: U(-a, a), a = gain·√(6 / (fan_in + fan_out)) (Glorot & Bengio 2010).
- xavier_normal: N(0, gain²·2 / (fan_in + fan_out)) (Glorot & Bengio 2010).
- kaiming_uniform: U(-a, a), a = g·√(3 / fan), Var = g² / fan (He et al. 2015).
- kaiming_normal: N(0, g² / fan) (He et al. 2015).
- lecun_normal: N(0, 1 / fan_in) (LeCun et al. 1998).
- orthogonal: g·Q, Q (semi-)orthogonal, E[w²] = g² / max(rows, cols) (Saxe et al. 2014).
- normal: N(0, std²); uniform: U(-bound, bound).

Xavier's `gain` is the config's own (1 in the paper), never the activation's: with the
activation's gain (√2 for ReLU) Glorot's variance on square layers would be He's, and He et
al.'s comparison could not be made (from Xavier a deep ReLU net's signal shrinks by 1/√2
per layer and their 30-layer net stalls; from He's init it keeps its size and trains).
`g` is the activation's gain (torch's `calculate_gain`): relu √2, tanh 5/3, linear 1; gelu
is treated as relu (He's derivation is for rectifiers, and GELU is one away from 0; the
gain that exactly keeps a unit Gaussian's power through GELU is about 1.53, not √2 ≈ 1.41).
`fan` is fan_in or fan_out, by the config's `mode`.

A small `scale` is how plateaus are produced on purpose: in a deep linear net the time
spent near the saddle at the origin grows like log(1/scale) (Saxe et al. 2014).

References: Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward
neural networks"; He, Zhang, Ren & Sun 2015, "Delving deep into rectifiers"; LeCun, Bottou,
Orr & Müller 1998, "Efficient BackProp"; Saxe, McClelland & Ganguli 2014, "Exact solutions
to the nonlinear dynamics of learning in deep linear neural networks".
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
    """Glorot & Bengio (2010): U(-a, a), a = gain·√(6 / (fan_in + fan_out)), so
    Var = gain²·2 / (fan_in + fan_out). The activation plays no part."""
    nn.init.xavier_uniform_(w, gain=cfg.gain)


def _xavier_normal(w: Tensor, cfg: Any, act: str) -> None:
    """Glorot & Bengio (2010): N(0, gain²·2 / (fan_in + fan_out)). The activation plays no
    part."""
    nn.init.xavier_normal_(w, gain=cfg.gain)


def _kaiming_uniform(w: Tensor, cfg: Any, act: str) -> None:
    """He et al. (2015): U(-a, a), a = g·√(3 / fan), so Var = g² / fan (2 / fan_in for ReLU)."""
    nn.init.kaiming_uniform_(w, mode=cfg.mode, nonlinearity=GAIN_NONLINEARITY[act])


def _kaiming_normal(w: Tensor, cfg: Any, act: str) -> None:
    """He et al. (2015): N(0, g² / fan) (2 / fan_in for ReLU)."""
    nn.init.kaiming_normal_(w, mode=cfg.mode, nonlinearity=GAIN_NONLINEARITY[act])


def _lecun_normal(w: Tensor, cfg: Any, act: str) -> None:
    """LeCun et al. (1998): N(0, 1 / fan_in), whatever the activation."""
    nn.init.normal_(w, std=1 / math.sqrt(_fan_in(w)))


def _orthogonal(w: Tensor, cfg: Any, act: str) -> None:
    """Saxe et al. (2014): g·Q with Q (semi-)orthogonal on the weight flattened to
    (rows, cols), so E[w²] = g² / max(rows, cols).

    It keeps the activation's gain g, unlike Xavier: Saxe et al. define it with a gain chosen
    for the nonlinearity (exactly 1 for their deep linear nets, which is what `deep_linear`
    gets, since its activation is "linear"); with ReLU, g = √2 is what keeps an orthogonal
    net's forward signal from halving in power at each layer. Runs made before this
    docstring used the same rule, and config.INIT_VERSION versions only xavier_*, so
    changing it here would pool runs made under two definitions.
    """
    nn.init.orthogonal_(w, gain=nn.init.calculate_gain(GAIN_NONLINEARITY[act]))


def _normal(w: Tensor, cfg: Any, act: str) -> None:
    """N(0, std²)."""
    nn.init.normal_(w, std=cfg.std)


def _uniform(w: Tensor, cfg: Any, act: str) -> None:
    """U(-bound, bound), Var = bound² / 3."""
    nn.init.uniform_(w, -cfg.bound, cfg.bound)


# Inits that place a whole net from the task's data rather than drawing each layer's weights:
# workers.train applies them (place_at_saddle), and apply_init refuses them.
DATA_INITS = ("saddle",)

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
    """Initialize `model` in place from an init config (name, scale, zeros_bias, ...);
    `activation` ("relu", "tanh", "gelu", "linear") sets the gain of kaiming_* and
    orthogonal."""
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
