"""Hessian-vector products of the mean training loss, matrix-free.

For trainable parameters θ ∈ R^d and data {(x_i, y_i)}_{i=1..N} split into chunks C_c,

    L(θ)  = Σ_c (|C_c| / N) · L_c(θ),     L_c = mean over C_c of ℓ(f_θ(x), y)
    H v   = ∇²L(θ) v = Σ_c (|C_c| / N) · ∇(∇L_c(θ) · v)

so chunking never changes the result: the chunk losses are weighted by their size and the sum
is the full-data Hessian, not a minibatch one (``loss_fn`` must return the *mean* over the
chunk, as ``nn.CrossEntropyLoss()`` and ``nn.MSELoss()`` do by default).

Two exact ways to get Hv (Pearlmutter 1994, "Fast exact multiplication by the Hessian"):

- ``"double_backward"``: reverse-over-reverse, g = ∇L with ``create_graph=True``, then
  Hv = ∇(g · v). One forward, one backward that records a graph, one backward of it.
- ``"forward_over_reverse"``: ``torch.func.jvp(torch.func.grad(L), (θ,), (v,))``, the forward
  derivative of the gradient along v. Needs functional modules (no in-place buffer updates
  under the transform, so not BatchNorm in train mode).

Measured by ``python benchmarks/probes.py`` on its reference problem (MLP 64-64-64-10, tanh,
13,130 parameters, 1,500 sklearn digits samples, float32), best of interleaved repeats:

    per call                     2-core x86-64 CPU box      NVIDIA H200
                                 (torch 2.13 CPU, shared)   (torch 2.11 + CUDA 13)
    gradient                     2.81 ms                    1.15 ms
    double_backward, cached      3.53 ms  (1.26x grad)      1.85 ms  (1.61x grad)
    double_backward, fresh       6.62 ms  (2.36x grad)      3.50 ms  (3.03x grad)
    forward_over_reverse         8.58 ms  (3.06x grad)      5.57 ms  (4.83x grad)

so the default is ``"double_backward"``, with ``grad_outputs=v`` rather than an explicit dot
product g · v (~15 % faster on CPU). When the data is one chunk the graph of g is recorded
once and every HVP only back-propagates through it (``cache_graph``, PyHessian's
single-batch trick), which halves the cost again. The cache holds the graph's activations
(chunking exists to avoid exactly that, so chunked HVPs do not cache by default), is rebuilt
when θ changes in place (version counters), and fixes one dropout mask in train mode;
``check_deterministic`` clears it between its two passes, so randomness is still caught.

The model's mode (train or eval) is the caller's choice and is recorded as ``hvp.mode``: in
train mode BatchNorm uses batch statistics and dropout is random (``check_deterministic``
catches the latter), and double backward through BatchNorm costs far more than a training
step (pytorch#3076). Buffers are copied once, so probing never moves BatchNorm's running
statistics.

Seeded example::

    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    >>> x, y = torch.randn(8, 3, dtype=torch.float64), torch.arange(8) % 2
    >>> hvp = make_hvp(model.eval(), nn.CrossEntropyLoss(), x, y)
    >>> hvp.dim, hvp.mode, hvp(random_vector(hvp.dim, seed=0, like=hvp)).shape
    (26, 'eval', torch.Size([26]))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from workers.probes import ProbeError

Method = Literal["double_backward", "forward_over_reverse"]
LossFn = Callable[[Tensor, Tensor], Tensor]
MatVec = Callable[[Tensor], Tensor]

DEFAULT_METHOD: Method = "double_backward"
METHODS: tuple[Method, ...] = ("double_backward", "forward_over_reverse")


def select_parameters(
    model: nn.Module, names: Sequence[str] | None = None
) -> list[tuple[str, nn.Parameter]]:
    """Trainable ``(name, parameter)`` pairs in ``model.parameters()`` order.

    ``names`` restricts the selection (the probe then sees the Hessian block of those
    parameters); a name that is not a trainable parameter raises ``ProbeError``.
    """
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if names is None:
        selected = trainable
    else:
        known = {n for n, _ in trainable}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ProbeError(
                f"unknown parameter(s) {unknown}; expected trainable names from: "
                f"{', '.join(sorted(known))}"
            )
        wanted = set(names)
        selected = [(n, p) for n, p in trainable if n in wanted]
    if not selected:
        raise ProbeError("no trainable parameters to probe")
    return selected


def random_vector(
    dim: int,
    *,
    seed: int,
    like: HVP | Tensor | None = None,
    kind: Literal["gaussian", "rademacher"] = "gaussian",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """A seeded vector of N(0, 1) or Rademacher (±1) entries.

    Drawn on the CPU from its own generator so that a seed gives the same vector on every
    device and the global RNG is left alone; ``like`` (an HVP or tensor) sets dtype/device.
    """
    if like is not None:
        dtype, device = like.dtype, like.device
    gen = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        v = torch.randn(dim, generator=gen, dtype=torch.float64)
    elif kind == "rademacher":
        v = torch.randint(0, 2, (dim,), generator=gen).to(torch.float64) * 2 - 1
    else:
        raise ProbeError(f"unknown vector kind {kind!r}; expected one of: gaussian, rademacher")
    return v.to(dtype=dtype, device=device)


class HVP:
    """v ↦ ∇²L(θ) v for the full-data mean loss; flat vectors in parameter order.

    Attributes: ``dim`` (number of probed parameters), ``count`` (HVPs done so far),
    ``mode`` ("train" or "eval", fixed at construction), ``method``, ``cache_graph``,
    ``names``, ``dtype``, ``device``.
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
        method: Method = DEFAULT_METHOD,
        cache_graph: bool | None = None,
    ) -> None:
        if method not in METHODS:
            raise ProbeError(
                f"unknown HVP method {method!r}; expected one of: {', '.join(METHODS)}"
            )
        if inputs.shape[0] != targets.shape[0] or inputs.shape[0] == 0:
            raise ProbeError(
                f"inputs and targets need the same, non-zero number of samples; "
                f"got {inputs.shape[0]} and {targets.shape[0]}"
            )
        if batch_size is not None and batch_size < 1:
            raise ProbeError(f"batch_size must be a positive integer, got {batch_size}")
        selected = select_parameters(model, params)
        self.model = model
        self.loss_fn = loss_fn
        self.method: Method = method
        self.mode: Literal["train", "eval"] = "train" if model.training else "eval"
        self.names = [n for n, _ in selected]
        self.params = [p for _, p in selected]
        self.dim = sum(p.numel() for p in self.params)
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device
        self.count = 0
        n = inputs.shape[0]
        size = n if batch_size is None else batch_size
        # (weight, inputs, targets) with weight = |C_c| / N, so Σ weights = 1.
        self.chunks = [
            (x.shape[0] / n, x, y)
            for x, y in zip(inputs.split(size), targets.split(size), strict=True)
        ]
        # Unprobed parameters and buffers enter as constants; the buffers are copies so that
        # BatchNorm in train mode updates these, never the model's running statistics.
        chosen = set(self.names)
        self.constants: dict[str, Tensor] = {
            name: p.detach() for name, p in model.named_parameters() if name not in chosen
        }
        self.constants.update({name: b.clone() for name, b in model.named_buffers()})
        if cache_graph and method != "double_backward":
            raise ProbeError("cache_graph=True needs method='double_backward'")
        if cache_graph is None:
            cache_graph = method == "double_backward" and len(self.chunks) == 1
        self.cache_graph = cache_graph
        self._graphs: list[Sequence[Tensor]] | None = None
        self._versions: list[int] = []

    # ----------------------------------------------------------------------------------
    def __call__(self, v: Tensor) -> Tensor:
        """Hv for a flat vector v of length ``dim``."""
        if v.shape != (self.dim,):
            raise ProbeError(f"vector must have shape ({self.dim},), got {tuple(v.shape)}")
        self._check_mode()
        vs = self._unflatten(v.to(dtype=self.dtype, device=self.device))
        out = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        for index, (weight, x, y) in enumerate(self.chunks):
            if self.method == "forward_over_reverse":
                hv = self._forward_over_reverse(x, y, vs)
            elif self.cache_graph:
                hv = self._backward_through(self._cached_graph(index), vs, retain=True)
            else:
                hv = self._backward_through(self._gradient_graph(x, y), vs, retain=False)
            out.add_(torch.cat([h.reshape(-1) for h in hv]), alpha=weight)
        self.count += 1
        return out

    def clear_cache(self) -> None:
        """Drop the recorded gradient graphs; the next HVP records them afresh."""
        self._graphs = None

    def gradient(self) -> Tensor:
        """∇L(θ), flat, over the full data."""
        self._check_mode()
        out = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        for weight, x, y in self.chunks:
            loss = self._chunk_loss(self._primals(), x, y)
            grads = torch.autograd.grad(
                loss, self.params, allow_unused=True, materialize_grads=True
            )
            out.add_(torch.cat([g.reshape(-1) for g in grads]), alpha=weight)
        return out

    def loss(self) -> float:
        """L(θ), the full-data mean loss."""
        self._check_mode()
        with torch.no_grad():
            return float(
                sum(w * self._chunk_loss(self._primals(), x, y) for w, x, y in self.chunks)
            )

    def flat_params(self) -> Tensor:
        """θ, flat, detached copy."""
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    # ----------------------------------------------------------------------------------
    def _check_mode(self) -> None:
        current = "train" if self.model.training else "eval"
        if current != self.mode:
            raise ProbeError(
                f"model switched to {current} mode after the HVP was built in {self.mode} mode; "
                "build a new HVP for the new mode"
            )

    def _primals(self) -> dict[str, Tensor]:
        return dict(zip(self.names, self.params, strict=True))

    def _unflatten(self, v: Tensor) -> list[Tensor]:
        return [
            c.view_as(p)
            for c, p in zip(v.split([p.numel() for p in self.params]), self.params, strict=True)
        ]

    def _chunk_loss(self, primals: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        out = functional_call(self.model, {**primals, **self.constants}, (x,))
        return self.loss_fn(out, y)

    def _gradient_graph(self, x: Tensor, y: Tensor) -> Sequence[Tensor]:
        """g = ∇L_c(θ) with its graph recorded, so that g can be differentiated again."""
        loss = self._chunk_loss(self._primals(), x, y)
        return torch.autograd.grad(
            loss, self.params, create_graph=True, allow_unused=True, materialize_grads=True
        )

    def _cached_graph(self, index: int) -> Sequence[Tensor]:
        # An in-place update of θ (an optimizer step) bumps the tensors' version counters:
        # the recorded graph then belongs to the old θ and is rebuilt.
        versions = [p._version for p in self.params]
        if self._graphs is None or versions != self._versions:
            self._graphs = [self._gradient_graph(x, y) for _, x, y in self.chunks]
            self._versions = versions
        return self._graphs[index]

    def _backward_through(
        self, grads: Sequence[Tensor], vs: list[Tensor], *, retain: bool
    ) -> Sequence[Tensor]:
        """∇(g · v): grad_outputs=v avoids building the dot product (measured ~15 % faster);
        a gradient entry that does not depend on θ contributes nothing to H."""
        pairs = [(g, v) for g, v in zip(grads, vs, strict=True) if g.requires_grad]
        if not pairs:
            return [torch.zeros_like(p) for p in self.params]
        outputs, grad_outputs = zip(*pairs, strict=True)
        return torch.autograd.grad(
            outputs,
            self.params,
            grad_outputs=grad_outputs,
            retain_graph=retain,
            allow_unused=True,
            materialize_grads=True,
        )

    def _forward_over_reverse(self, x: Tensor, y: Tensor, vs: list[Tensor]) -> Sequence[Tensor]:
        primals = {n: p.detach() for n, p in zip(self.names, self.params, strict=True)}
        tangents = dict(zip(self.names, vs, strict=True))

        def loss_of(p: dict[str, Tensor]) -> Tensor:
            return self._chunk_loss(p, x, y)

        try:
            _, hv = torch.func.jvp(torch.func.grad(loss_of), (primals,), (tangents,))
        except RuntimeError as e:
            raise ProbeError(
                f"forward_over_reverse failed on this model ({e}); "
                "use method='double_backward' (e.g. BatchNorm in train mode)"
            ) from e
        return [hv[n] for n in self.names]


def make_hvp(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    *,
    params: Sequence[str] | None = None,
    batch_size: int | None = None,
    method: Method = DEFAULT_METHOD,
    cache_graph: bool | None = None,
) -> HVP:
    """The operator v ↦ ∇²L(θ) v of the full-data mean loss (see the module docstring).

    ``params`` restricts to named parameters; ``batch_size`` chunks the data (same result,
    less memory); ``method`` is "double_backward" or "forward_over_reverse"; ``cache_graph``
    records the gradient graph once and reuses it (default: when double_backward runs on a
    single chunk).
    """
    return HVP(
        model,
        loss_fn,
        inputs,
        targets,
        params=params,
        batch_size=batch_size,
        method=method,
        cache_graph=cache_graph,
    )


def check_deterministic(hvp: HVP, *, seed: int = 0, rtol: float | None = None) -> float:
    """Apply the HVP twice to the same seeded vector; raise ``ProbeError`` if they differ.

    Passes when ||Hv₁ - Hv₂|| <= rtol · ||Hv₁|| (default rtol: 1000 × machine epsilon of the
    HVP's dtype, room for non-deterministic GPU reductions). Every Krylov method assumes a
    fixed operator; dropout or other randomness in the chosen mode breaks that silently.
    Returns the observed relative difference.
    """
    if rtol is None:
        rtol = 1e3 * torch.finfo(hvp.dtype).eps
    v = random_vector(hvp.dim, seed=seed, like=hvp)
    # Each pass records its own graph: a cached graph would replay one dropout mask.
    hvp.clear_cache()
    first = hvp(v)
    hvp.clear_cache()
    second = hvp(v)
    scale = float(first.norm())
    diff = float((first - second).norm())
    relative = diff / scale if scale > 0 else diff
    if relative > rtol:
        raise ProbeError(
            f"the HVP is not deterministic in {hvp.mode} mode: two passes on the same vector "
            f"differ by {relative:.3g} (relative), above rtol={rtol:.3g}; remove the "
            "randomness (dropout, data augmentation) or probe in eval mode"
        )
    return relative
