"""Loss slices: the training loss along lines and planes through parameter space.

For a center θ (flat, in ``model.parameters()`` order) and directions d, d₁, d₂:

    1-D slice      f(α)    = L(θ + α d)                    (Goodfellow, Vinyals & Saxe 2015)
    2-D slice      f(α, β) = L(θ + α d₁ + β d₂)            (Li, Xu, Taylor, Studer &
                                                            Goldstein 2018)
    interpolation  f(t)    = L((1 - t) θ₀ + t θ₁)          (Goodfellow et al. 2015)

Directions:

- Filter-normalized random directions (Li et al. 2018, "Visualizing the loss landscape of
  neural nets", §4): d ~ N(0, I), then for every weight tensor with >= 2 dims each filter
  (row of a linear layer, output channel of a convolution) is rescaled,
  d_{i,j} ← d_{i,j} · ||θ_{i,j}|| / ||d_{i,j}||, so that the slice is comparable across
  layers and networks whatever their scale. Biases and normalization parameters (1-D
  tensors) get direction 0, as Li et al. do for their plots (their code's ``ignore='biasbn'``):
  their scale is not a filter's, and moving them swamps the picture.
- Eigenvector directions (e.g. the top or bottom Ritz vectors of H), normalized to unit norm,
  so that near a critical point f(α) ≈ L(θ) + λ α² / 2.

Grid points are evaluated in batches: ``torch.func.functional_call`` under ``torch.func.vmap``
over stacked parameter sets (one forward for many points), with ``torch.no_grad``. Modules
that vmap cannot handle (BatchNorm in train mode updates running statistics in place) fall
back to a loop over points with the same result. Buffers are copies: a slice never moves the
model's running statistics. Results are plain lists (JSON-friendly).

Seeded example::

    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double().eval()
    >>> x, y = torch.randn(8, 3, dtype=torch.float64), torch.arange(8) % 2
    >>> evaluate = make_loss_evaluator(model, nn.CrossEntropyLoss(), x, y)
    >>> d = filter_normalized_direction(model, seed=0)
    >>> losses = slice_1d(evaluate, d, [-1.0, 0.0, 1.0])
    >>> abs(losses[1] - nn.CrossEntropyLoss()(model(x), y).item()) < 1e-12
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from workers.probes import ProbeError
from workers.probes.hvp import select_parameters

LossFn = Callable[[Tensor, Tensor], Tensor]


def flat_parameters(model: nn.Module, params: Sequence[str] | None = None) -> Tensor:
    """θ as one flat detached vector, in ``model.parameters()`` order (trainable only)."""
    return torch.cat([p.detach().reshape(-1) for _, p in select_parameters(model, params)])


def filter_normalized_direction(
    model: nn.Module, *, seed: int, params: Sequence[str] | None = None
) -> Tensor:
    """A seeded Gaussian direction, filter-normalized (Li et al. 2018), zero on 1-D tensors.

    For a weight W with >= 2 dims and filter i = W[i] (row / output channel):
    d[i] = g[i] · ||W[i]|| / (||g[i]|| + 1e-10), g ~ N(0, I) (the 1e-10 is Li et al.'s).
    """
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for _, p in select_parameters(model, params):
        w = p.detach()
        # Draw for every tensor, zeroed or not, so one tensor's treatment never shifts the
        # random numbers of the next.
        g = torch.randn(w.shape, generator=gen, dtype=torch.float64).to(w.dtype).to(w.device)
        if w.dim() <= 1:
            d = torch.zeros_like(w)
        else:
            w_norm = w.reshape(w.shape[0], -1).norm(dim=1)
            g_norm = g.reshape(g.shape[0], -1).norm(dim=1)
            scale = (w_norm / (g_norm + 1e-10)).reshape(-1, *([1] * (w.dim() - 1)))
            d = g * scale
        parts.append(d.reshape(-1))
    return torch.cat(parts)


def unit_direction(vector: Tensor) -> Tensor:
    """d / ||d|| for a flat vector (e.g. a Hessian eigenvector)."""
    norm = vector.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise ProbeError("a direction must be finite and non-zero")
    return vector / norm


def _vmap_unsafe(model: nn.Module) -> bool:
    # BatchNorm in train mode with running statistics writes to its buffers in place, which
    # vmap refuses for a batched value; everything else in torch.nn is fine under vmap.
    return model.training and any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        for m in model.modules()
    )


class LossEvaluator:
    """Full-data mean loss at many parameter points θ + c · D, without touching the model.

    Call with a center θ [dim], directions D [r, dim] and coefficients C [P, r]; returns the
    P losses L(θ + C[p] @ D). ``vectorized`` says whether vmap is used (it turns False on
    the first failure, after which the loop is used).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        inputs: Tensor,
        targets: Tensor,
        *,
        params: Sequence[str] | None = None,
        batch_size: int | None = None,
        points_per_batch: int = 64,
        vectorize: bool = True,
    ) -> None:
        if inputs.shape[0] != targets.shape[0] or inputs.shape[0] == 0:
            raise ProbeError(
                f"inputs and targets need the same, non-zero number of samples; "
                f"got {inputs.shape[0]} and {targets.shape[0]}"
            )
        if points_per_batch < 1 or (batch_size is not None and batch_size < 1):
            raise ProbeError(
                f"points_per_batch and batch_size must be >= 1; "
                f"got {points_per_batch} and {batch_size}"
            )
        selected = select_parameters(model, params)
        self.model = model
        self.loss_fn = loss_fn
        self.mode: Literal["train", "eval"] = "train" if model.training else "eval"
        self.names = [n for n, _ in selected]
        self.shapes = [p.shape for _, p in selected]
        self.sizes = [p.numel() for _, p in selected]
        self.dim = sum(self.sizes)
        self.dtype, self.device = selected[0][1].dtype, selected[0][1].device
        self.center = flat_parameters(model, params)
        self.points_per_batch = points_per_batch
        self.vectorized = vectorize and not _vmap_unsafe(model)
        n = inputs.shape[0]
        size = n if batch_size is None else batch_size
        self.chunks = [
            (x.shape[0] / n, x, y)
            for x, y in zip(inputs.split(size), targets.split(size), strict=True)
        ]
        chosen = set(self.names)
        self.constants: dict[str, Tensor] = {
            name: p.detach() for name, p in model.named_parameters() if name not in chosen
        }
        self.constants.update({name: b.clone() for name, b in model.named_buffers()})

    def __call__(self, center: Tensor, directions: Tensor, coefficients: Tensor) -> list[float]:
        directions = directions.to(dtype=self.dtype, device=self.device).reshape(-1, self.dim)
        coefficients = coefficients.to(dtype=self.dtype, device=self.device)
        coefficients = coefficients.reshape(coefficients.shape[0], -1)
        if coefficients.shape[1] != directions.shape[0]:
            raise ProbeError(
                f"{coefficients.shape[1]} coefficients per point for "
                f"{directions.shape[0]} directions"
            )
        center = center.to(dtype=self.dtype, device=self.device)
        losses: list[float] = []
        with torch.no_grad():
            for block in coefficients.split(self.points_per_batch):
                points = center + block @ directions  # [B, dim]
                losses.extend(self._losses(points))
        return losses

    def _losses(self, points: Tensor) -> list[float]:
        if self.vectorized:
            try:
                return self._vmapped(points)
            except RuntimeError:
                # A module vmap cannot batch (custom in-place buffer updates, data-dependent
                # control flow): the loop computes the same losses, only slower.
                self.vectorized = False
        return [self._single(point) for point in points]

    def _as_params(self, flat: Tensor, batch: tuple[int, ...] = ()) -> dict[str, Tensor]:
        pieces = flat.split(self.sizes, dim=-1)
        return {
            name: piece.reshape(*batch, *shape)
            for name, piece, shape in zip(self.names, pieces, self.shapes, strict=True)
        }

    def _loss(self, params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        out = functional_call(self.model, {**params, **self.constants}, (x,))
        return self.loss_fn(out, y)

    def _vmapped(self, points: Tensor) -> list[float]:
        stacked = self._as_params(points, (points.shape[0],))
        # randomness="different" matches the loop: each point draws its own dropout masks.
        batched = vmap(self._loss, in_dims=(0, None, None), randomness="different")
        total = sum(w * batched(stacked, x, y) for w, x, y in self.chunks)
        return [float(v) for v in total]

    def _single(self, point: Tensor) -> float:
        params = self._as_params(point)
        return float(sum(w * self._loss(params, x, y) for w, x, y in self.chunks))


def make_loss_evaluator(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    *,
    params: Sequence[str] | None = None,
    batch_size: int | None = None,
    points_per_batch: int = 64,
    vectorize: bool = True,
) -> LossEvaluator:
    """The map (θ, D, C) ↦ [L(θ + C[p] @ D)]_p over the full data (see ``LossEvaluator``).

    ``batch_size`` chunks the data (size-weighted, so the full-data mean); ``points_per_batch``
    bounds how many parameter sets one vmapped forward holds; ``vectorize=False`` forces the
    loop.
    """
    return LossEvaluator(
        model,
        loss_fn,
        inputs,
        targets,
        params=params,
        batch_size=batch_size,
        points_per_batch=points_per_batch,
        vectorize=vectorize,
    )


def _coefficients(values: Sequence[float]) -> Tensor:
    return torch.tensor([float(a) for a in values], dtype=torch.float64)


def slice_1d(
    evaluate: LossEvaluator,
    direction: Tensor,
    alphas: Sequence[float],
    *,
    center: Tensor | None = None,
) -> list[float]:
    """[L(θ + α d) for α in alphas]; θ defaults to the model's parameters."""
    theta = evaluate.center if center is None else center
    return evaluate(theta, direction[None, :], _coefficients(alphas)[:, None])


def slice_2d(
    evaluate: LossEvaluator,
    direction1: Tensor,
    direction2: Tensor,
    alphas: Sequence[float],
    betas: Sequence[float],
    *,
    center: Tensor | None = None,
) -> list[list[float]]:
    """values[i][j] = L(θ + α_i d₁ + β_j d₂); θ defaults to the model's parameters."""
    theta = evaluate.center if center is None else center
    a, b = _coefficients(alphas), _coefficients(betas)
    grid = torch.stack(torch.meshgrid(a, b, indexing="ij"), dim=-1).reshape(-1, 2)
    flat = evaluate(theta, torch.stack([direction1, direction2]), grid)
    return [flat[i * len(b) : (i + 1) * len(b)] for i in range(len(a))]


def interpolation(
    evaluate: LossEvaluator,
    theta0: Tensor,
    theta1: Tensor,
    ts: Sequence[float],
) -> list[float]:
    """[L((1 - t) θ₀ + t θ₁) for t in ts] (Goodfellow et al. 2015), e.g. θ₀ = initialization."""
    theta0 = theta0.to(dtype=evaluate.dtype, device=evaluate.device)
    theta1 = theta1.to(dtype=evaluate.dtype, device=evaluate.device)
    return evaluate(theta0, (theta1 - theta0)[None, :], _coefficients(ts)[:, None])
