"""Per-layer activation statistics: the mean and standard deviation of each layer's output
on one fixed batch.

This is the measurement behind the Xavier/He comparison (Glorot & Bengio 2010, Fig. 3-6;
He et al. 2015, Sec. 2.2): for a ReLU layer with weights of variance v and n inputs, the
pre-activation variance is Var[y_l] = n·v·E[x_l²] and E[x_{l+1}²] = Var[y_l] / 2, so the
signal's standard deviation is multiplied by √(n·v/2) per layer: 1 for He's v = 2/n,
1/√2 for Glorot's v = 1/n on square layers. A vanishing or exploding profile at
initialization is one cause of a plateau at the start of training.

What counts as "a layer's output":

- the output of each nonlinearity module (ReLU, Tanh, GELU, ...), i.e. the post-activation
  signal of an MLP or a convnet (the normalization, if any, sits before it);
- the output of each residual block (`ResidualBlock`, `TransformerBlock`): the residual
  stream, which is what grows or shrinks with depth in resmlp and transformer (their
  nonlinearities inside the blocks are reported too);
- the output of the model's last Linear (its logits);
- in a model with none of the above (deep_linear, or an mlp whose activation is "linear",
  where the activation is an `nn.Identity`): the output of every Linear and Conv.

Keys are module paths as `named_modules()` gives them (e.g. "2" in a Sequential MLP,
"blocks.0.mlp.1" in the transformer), in forward order; a module called more than once in
one forward gets "#2", "#3", ... on its later calls. Statistics are over every entry of the
output (batch and features), population std, computed in float64.

The batch is run in eval mode (so a BatchNorm uses its running statistics, the identity at
initialization) under `torch.no_grad()`; the model's mode is restored and the hooks removed
afterwards, even if the forward raises.

Seeded example, a 3-layer ReLU MLP from Glorot's init::

    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> hidden = [m for _ in range(3) for m in (nn.Linear(512, 512), nn.ReLU())]
    >>> net = nn.Sequential(*hidden, nn.Linear(512, 10))
    >>> for m in net[::2]:
    ...     _ = nn.init.xavier_normal_(m.weight), nn.init.zeros_(m.bias)
    >>> stats = activation_stats(net, torch.randn(1024, 512))
    >>> list(stats)  # the three ReLUs, then the logits
    ['1', '3', '5', '6']
    >>> [round(stats[k]["std"] / stats["1"]["std"], 1) for k in ("1", "3", "5")]  # 1/√2 a layer
    [1.0, 0.7, 0.5]
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from workers.models import ResidualBlock, TransformerBlock

NONLINEARITIES = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Softplus,
    nn.Tanh,
    nn.Sigmoid,
)
BLOCKS = (ResidualBlock, TransformerBlock)
WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    # Each module's own flag, so a model left partly in train mode comes back as it was.
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _stats(t: Tensor) -> dict[str, float]:
    std, mean = torch.std_mean(t.detach().double(), correction=0)
    return {"mean": mean.item(), "std": std.item()}


def activation_stats(model: nn.Module, x: Tensor) -> dict[str, dict[str, float]]:
    """{module path: {"mean": m, "std": s}} of each layer's output on the batch `x`, in
    forward order (see the module docstring for which modules count)."""
    # (key, kind, stats) in the order the outputs are produced
    seen: list[tuple[str, str, dict[str, float]]] = []
    calls: dict[str, int] = {}

    def hook_for(name: str, kind: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not isinstance(output, Tensor):
                return
            calls[name] = calls.get(name, 0) + 1
            key = name if calls[name] == 1 else f"{name}#{calls[name]}"
            seen.append((key, kind, _stats(output)))

        return hook

    handles = []
    for name, module in model.named_modules():
        kind = layer_kind(module)
        if kind is not None:
            handles.append(module.register_forward_hook(hook_for(name, kind)))
    try:
        with _eval_mode(model), torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return select_stats(seen)


def layer_kind(module: nn.Module) -> str | None:
    """How a module's output counts (see the module docstring), or None when it does not."""
    if isinstance(module, NONLINEARITIES):
        return "nonlinearity"
    if isinstance(module, BLOCKS):
        return "block"
    if isinstance(module, WEIGHTED):
        return "weighted"
    return None


def select_stats(
    seen: list[tuple[str, str, dict[str, float]]],
) -> dict[str, dict[str, float]]:
    """The reported layers of (key, kind, stats) in forward order: the nonlinearities and
    blocks and the last weighted layer, or every weighted layer in a model with neither."""
    has_marks = any(kind != "weighted" for _, kind, _ in seen)
    last_weighted = next((key for key, kind, _ in reversed(seen) if kind == "weighted"), None)
    return {
        key: stats
        for key, kind, stats in seen
        if kind != "weighted" or not has_marks or key == last_weighted
    }
