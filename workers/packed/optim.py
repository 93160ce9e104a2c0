"""torch.optim's update rules over stacked parameters (R, ...), each run with its own
hyperparameters: the same arithmetic, in the same order, as torch.optim's single-tensor
implementations (the default on CPU), with each scalar replaced by a per-run tensor.

- SGD (torch.optim.SGD, dampening 0): g <- g + wd·θ; with momentum μ, b_1 = g and
  b_t = μ b_{t-1} + g, then g <- g + μ b_t (Nesterov) or g <- b_t; θ <- θ - lr·g.
- Adam (torch.optim.Adam; Kingma & Ba 2015): g <- g + wd·θ; m <- m + (1-β1)(g - m);
  v <- β2 v + (1-β2) g²; θ <- θ - lr/(1-β1^t) · m / (√v / √(1-β2^t) + ε).
- AdamW (torch.optim.AdamW; Loshchilov & Hutter 2019): Adam without the gradient's weight
  decay, after θ <- θ (1 - lr·wd).

Every run of a pack has taken the same number of steps t (they start together and a run
that stops leaves the pack), so t is one counter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from workers.errors import UnknownName


def _per_run(values: Tensor, like: Tensor) -> Tensor:
    """(R,) values shaped to broadcast over a stacked (R, ...) tensor."""
    return values.view(-1, *([1] * (like.dim() - 1)))


class PackedOptimizer:
    """Base: per-run hyperparameters as (R,) tensors, per-parameter state as (R, ...)."""

    def __init__(self, configs: Sequence[Any], like: Tensor) -> None:
        self.step_count = 0
        self.state: dict[str, list[Tensor | None]] = {}

        def column(name: str, default: float = 0.0) -> Tensor:
            values = [float(getattr(c, name, default)) for c in configs]
            return torch.tensor(values, dtype=like.dtype, device=like.device)

        self.weight_decay = column("weight_decay")
        self.any_weight_decay = bool(self.weight_decay.any())
        self._column = column

    def keep(self, runs: Tensor) -> None:
        """Keep only these runs' hyperparameters and state (indices into the stack)."""
        for name, value in vars(self).items():
            if isinstance(value, Tensor):
                setattr(self, name, value[runs])
        for states in self.state.values():
            states[:] = [None if s is None else s[runs] for s in states]

    def step(self, params: list[Tensor], grads: Sequence[Tensor], lr: Tensor) -> None:
        raise NotImplementedError


class PackedSGD(PackedOptimizer):
    def __init__(self, configs: Sequence[Any], like: Tensor, n_params: int) -> None:
        super().__init__(configs, like)
        self.momentum = self._column("momentum")
        self.any_momentum = bool(self.momentum.any())
        self.nesterov = bool(getattr(configs[0], "nesterov", False))
        self.state["momentum_buffer"] = [None] * n_params

    @torch.no_grad()
    def step(self, params: list[Tensor], grads: Sequence[Tensor], lr: Tensor) -> None:
        buffers = self.state["momentum_buffer"]
        for k, (p, g) in enumerate(zip(params, grads, strict=True)):
            if self.any_weight_decay:
                g = g + _per_run(self.weight_decay, p) * p
            if self.any_momentum:
                mu = _per_run(self.momentum, p)
                buf = buffers[k]
                if buf is None:
                    buf = buffers[k] = g.clone()
                else:
                    buf.mul_(mu).add_(g)
                g = g + mu * buf if self.nesterov else buf
            p.sub_(_per_run(lr, p) * g)
        self.step_count += 1


class PackedAdam(PackedOptimizer):
    def __init__(
        self, configs: Sequence[Any], like: Tensor, n_params: int, *, decoupled: bool
    ) -> None:
        super().__init__(configs, like)
        self.decoupled = decoupled  # AdamW's weight decay
        self.beta1_list = [float(c.beta1) for c in configs]
        self.beta2_list = [float(c.beta2) for c in configs]
        self.beta1, self.beta2 = self._column("beta1"), self._column("beta2")
        self.eps = self._column("eps")
        self.state["exp_avg"] = [None] * n_params
        self.state["exp_avg_sq"] = [None] * n_params

    def keep(self, runs: Tensor) -> None:
        super().keep(runs)
        kept = runs.tolist()
        self.beta1_list = [self.beta1_list[i] for i in kept]
        self.beta2_list = [self.beta2_list[i] for i in kept]

    @torch.no_grad()
    def step(self, params: list[Tensor], grads: Sequence[Tensor], lr: Tensor) -> None:
        self.step_count += 1
        t = self.step_count
        like = params[0]
        # Bias corrections in Python floats, as torch.optim computes them.
        correction1 = [1 - b**t for b in self.beta1_list]
        correction2_sqrt = [(1 - b**t) ** 0.5 for b in self.beta2_list]
        step_size = lr / torch.tensor(correction1, dtype=like.dtype, device=like.device)
        root2 = torch.tensor(correction2_sqrt, dtype=like.dtype, device=like.device)
        for k, (p, g) in enumerate(zip(params, grads, strict=True)):
            if self.any_weight_decay:
                wd = _per_run(self.weight_decay, p)
                if self.decoupled:
                    p.mul_(1 - _per_run(lr, p) * wd)
                else:
                    g = g + wd * p
            m, v = self.state["exp_avg"][k], self.state["exp_avg_sq"][k]
            if m is None or v is None:
                m = self.state["exp_avg"][k] = torch.zeros_like(p)
                v = self.state["exp_avg_sq"][k] = torch.zeros_like(p)
            b1, b2 = _per_run(self.beta1, p), _per_run(self.beta2, p)
            m.lerp_(g, 1 - b1)
            v.mul_(b2).add_((1 - b2) * g * g)
            denom = (v.sqrt() / _per_run(root2, p)).add_(_per_run(self.eps, p))
            p.sub_(_per_run(step_size, p) * m / denom)


def create_packed_optimizer(configs: Sequence[Any], params: list[Tensor]) -> PackedOptimizer:
    """The packed optimizer for runs' optimizer configs (one name and update rule)."""
    name = configs[0].name
    if name == "sgd":
        return PackedSGD(configs, params[0], len(params))
    if name in ("adam", "adamw"):
        return PackedAdam(configs, params[0], len(params), decoupled=name == "adamw")
    raise UnknownName("packed optimizer", name, ["adam", "adamw", "sgd"])
