"""R models of one architecture as one: every parameter and buffer stacked along a leading
run dimension, the forward pass batched over runs.

It computes what each run's own nn.Module computes, layer by layer, for nn.Sequential stacks
of the layers below (workers/models.py builds `mlp` and `deep_linear` from them); the runs
stay independent, so a run's non-finite numbers never reach another run:

- Flatten, OneHot: the inputs' per-example shape to a vector.
- Linear: h (R, B, in) @ W(R, out, in)^T + b(R, out) as one batched matmul; inputs shared by
  every run (evaluation, full batch) are (B, in) and broadcast.
- BatchNorm1d: each (run, channel) is a channel of its own over the batch, so the runs'
  features side by side, (B, R·C), go through torch's batch_norm with the stacked running
  statistics (R·C,): batch statistics, running-statistics updates and eval mode exactly as
  each run's module has them.
- LayerNorm: over each example's features, then the run's own scale and shift.
- ReLU, Tanh, GELU, Identity: elementwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from workers.errors import Unpackable
from workers.models import OneHot

ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.GELU, nn.Identity)
LAYERS = (nn.Flatten, OneHot, nn.Linear, nn.BatchNorm1d, nn.LayerNorm, *ELEMENTWISE)

# Receives (layer index, its module, its output (R, B, ...)) during a forward pass.
Observer = Callable[[int, nn.Module, Tensor], None]


class PackedModel:
    """The stacked parameters (leaves that require grad) and buffers of R runs' models."""

    def __init__(
        self,
        layers: list[nn.Module],
        names: list[str],
        params: list[Tensor],
        buffers: dict[str, Tensor],
    ) -> None:
        self.layers, self.names, self.params, self.buffers = layers, names, params, buffers
        self._index = {name: k for k, name in enumerate(names)}

    @classmethod
    def stack(cls, models: Sequence[nn.Module]) -> PackedModel:
        """The runs' own modules (one architecture, built as a single run builds it) as one."""
        template = models[0]
        if not isinstance(template, nn.Sequential):
            raise Unpackable(f"a packed model is an nn.Sequential; got {type(template).__name__}")
        unknown = [type(m).__name__ for m in template if not isinstance(m, LAYERS)]
        unknown += [
            "BatchNorm1d without running statistics or momentum"
            for m in template
            if isinstance(m, nn.BatchNorm1d) and (m.momentum is None or not m.track_running_stats)
        ]
        if unknown:
            raise Unpackable(f"layers the packed model does not compute: {', '.join(unknown)}")
        names = [n for n, _ in template.named_parameters()]
        params = [
            torch.stack([dict(m.named_parameters())[n].detach() for m in models]).requires_grad_()
            for n in names
        ]
        buffers = {
            n: torch.stack([dict(m.named_buffers())[n] for m in models]).contiguous()
            for n, _ in template.named_buffers()
            if not n.endswith("dtype_probe")  # OneHot's, not state
        }
        return cls(list(template), names, params, buffers)

    def subset(self, runs: Tensor) -> PackedModel:
        """A copy of these runs (indices into the stack), for evaluating some of them."""
        return PackedModel(
            self.layers,
            self.names,
            [p.detach()[runs] for p in self.params],
            {n: b[runs].contiguous() for n, b in self.buffers.items()},
        )

    @property
    def runs(self) -> int:
        return self.params[0].shape[0]

    def _param(self, index: int, name: str) -> Tensor | None:
        k = self._index.get(f"{index}.{name}")
        return None if k is None else self.params[k]

    def forward(
        self, x: Tensor, *, shared: bool, training: bool, observe: Observer | None = None
    ) -> Tensor:
        """Outputs (R, B, n_outputs) for inputs x of (R, B, *example), each run its own
        batch, or with `shared` of (B, *example), one batch for every run."""
        h = x
        for i, layer in enumerate(self.layers):
            if isinstance(layer, nn.Flatten):
                h = h.flatten(1 if shared else 2)
            elif isinstance(layer, OneHot):
                h = nn.functional.one_hot(h, layer.vocab_size).flatten(-2)
                h = h.to(self.params[0].dtype)
            elif isinstance(layer, nn.Linear):
                weight, bias = self._param(i, "weight"), self._param(i, "bias")
                assert weight is not None
                if shared or bias is None:
                    h = torch.matmul(h, weight.mT)  # (R, B, out); broadcast when shared
                    h = h if bias is None else h + bias.unsqueeze(1)
                else:
                    h = torch.baddbmm(bias.unsqueeze(1), h, weight.mT)
                shared = False
            elif isinstance(layer, nn.BatchNorm1d):
                h = self._batch_norm(i, layer, h, training)
            elif isinstance(layer, nn.LayerNorm):
                weight, bias = self._param(i, "weight"), self._param(i, "bias")
                h = nn.functional.layer_norm(h, layer.normalized_shape, eps=layer.eps)
                if weight is not None:
                    h = h * weight.unsqueeze(1)
                if bias is not None:
                    h = h + bias.unsqueeze(1)
            else:
                h = layer(h)
            if observe is not None:
                observe(i, layer, h)
        return h

    def _batch_norm(self, i: int, layer: nn.BatchNorm1d, h: Tensor, training: bool) -> Tensor:
        runs, batch, channels = h.shape
        weight, bias = self._param(i, "weight"), self._param(i, "bias")
        mean, var = self.buffers[f"{i}.running_mean"], self.buffers[f"{i}.running_var"]
        if training:
            self.buffers[f"{i}.num_batches_tracked"].add_(1)
        out = nn.functional.batch_norm(
            h.transpose(0, 1).reshape(batch, runs * channels),
            mean.view(-1),  # views of the stacked buffers: updated in place when training
            var.view(-1),
            None if weight is None else weight.reshape(-1),
            None if bias is None else bias.reshape(-1),
            training=training,
            momentum=float(layer.momentum),  # not None: checked in __init__
            eps=layer.eps,
        )
        return out.view(batch, runs, channels).transpose(0, 1)

    @torch.no_grad()
    def load(self, run: int, model: nn.Module) -> nn.Module:
        """Copy run `run`'s parameters and buffers into its own module (built as today)."""
        for name, p in model.named_parameters():
            p.copy_(self.params[self._index[name]][run])
        for name, b in model.named_buffers():
            if name in self.buffers:
                b.copy_(self.buffers[name][run])
        return model

    def keep(self, runs: Tensor) -> None:
        """Keep only these runs (indices into the current stack), in this order."""
        self.params = [p.detach()[runs].requires_grad_() for p in self.params]
        self.buffers = {n: b[runs].contiguous() for n, b in self.buffers.items()}
