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
    # The layers the statistics are reported for (a Sequential's child i is "i"), decided
    # by the same rule as a single run's, from the layers' kinds alone.
    kinds = [(str(i), layer_kind(layer)) for i, layer in enumerate(model.layers)]
    counted = [(key, kind) for key, kind in kinds if kind is not None]
    reported = set(select_stats([(key, kind, {}) for key, kind in counted]))
    moments: list[tuple[str, Tensor, Tensor]] = []  # (key, (R,) means, (R,) stds)

    def observe(i: int, layer: nn.Module, h: Tensor) -> None:
        if str(i) in reported:
            # Two passes in float64 over every entry of a run's output (population std).
            flat = h.double().flatten(1)
            mean = flat.mean(1, keepdim=True)
            std = (flat - mean).square().mean(1).sqrt()
            moments.append((str(i), mean.squeeze(1), std))

    model.forward(x, shared=True, training=False, observe=observe)
    if not moments:
        return [{} for _ in range(model.runs)]
    means = torch.stack([m for _, m, _ in moments], 1).tolist()  # (R, layers)
    stds = torch.stack([s for _, _, s in moments], 1).tolist()
    keys = [key for key, _, _ in moments]
    return [
        {key: {"mean": m, "std": s} for key, m, s in zip(keys, mean_row, std_row, strict=True)}
        for mean_row, std_row in zip(means, stds, strict=True)
    ]
