"""The independent reference the probes are checked against: the dense Hessian."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call


def dense_hessian(model: nn.Module, loss_fn, x: Tensor, y: Tensor) -> Tensor:
    """∇²L over the flat trainable parameters, by torch.autograd.functional.hessian."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    theta = torch.cat([p.detach().reshape(-1) for _, p in named])

    def loss(flat: Tensor) -> Tensor:
        parts = flat.split([p.numel() for _, p in named])
        params = {n: t.reshape(p.shape) for (n, p), t in zip(named, parts, strict=True)}
        # Fresh buffer copies: BatchNorm in train mode writes to them on every call.
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        return loss_fn(functional_call(model, {**params, **buffers}, (x,)), y)

    return torch.autograd.functional.hessian(loss, theta)
