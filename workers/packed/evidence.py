"""Evaluation and activation statistics of a packed model: for every run the numbers that
`workers.train.evaluate` and `workers.activations.activation_stats` give its own module,
from one batched forward pass (tests/workers/test_packed.py compares them)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from workers.activations import layer_kind, select_stats
from workers.packed.model import PackedModel


@torch.no_grad()
def evaluate_packed(
    model: PackedModel,
    x: Tensor,
    y: Tensor,
    batched_loss: Callable[[Tensor, Tensor], Tensor],
    *,
    classify: bool,
    chunk: int = 4096,
) -> list[tuple[float, float | None]]:
    """Each run's (mean loss, accuracy for classification) over (x, y), in eval mode."""
    runs = model.runs
    total = torch.zeros(runs, dtype=torch.float64, device=x.device)
    correct = torch.zeros(runs, dtype=torch.long, device=x.device)
    for i in range(0, len(x), chunk):
        out = model.forward(x[i : i + chunk], shared=True, training=False)  # (R, n, outputs)
        target = y[i : i + chunk].expand(runs, *y[i : i + chunk].shape)
        total += batched_loss(out, target).double() * out.shape[1]
        if classify:
            correct += (out.argmax(-1) == target).sum(1)
    losses = (total / len(x)).tolist()
    accuracies = (correct.double() / len(x)).tolist() if classify else [None] * runs
    return list(zip(losses, accuracies, strict=True))


@torch.no_grad()
def activation_stats_packed(model: PackedModel, x: Tensor) -> list[dict[str, dict[str, float]]]:
    """Each run's per-layer activation statistics on the batch `x` (shared by the runs), in
    eval mode: the mean and population std of each counted layer's output, in float64."""
    # (key, kind, (R,) means, (R,) stds) in forward order; a Sequential's child i is "i".
    seen: list[tuple[str, str, Tensor, Tensor]] = []

    def observe(i: int, layer: nn.Module, h: Tensor) -> None:
        kind = layer_kind(layer)
        if kind is not None:
            std, mean = torch.std_mean(h.double().flatten(1), dim=1, correction=0)
            seen.append((str(i), kind, mean, std))

    model.forward(x, shared=True, training=False, observe=observe)
    if not seen:
        return [{} for _ in range(model.runs)]
    means = torch.stack([m for _, _, m, _ in seen], 1).tolist()  # (R, layers)
    stds = torch.stack([s for _, _, _, s in seen], 1).tolist()
    return [
        select_stats(
            [
                (key, kind, {"mean": m, "std": s})
                for (key, kind, _, _), m, s in zip(seen, mean_row, std_row, strict=True)
            ]
        )
        for mean_row, std_row in zip(means, stds, strict=True)
    ]
