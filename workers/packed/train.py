"""The packed training loop: R runs of one pack (workers/packed/grouping.py) as one batched
computation, each run's record kept by the same `workers.train.RunLog` as a single run's.

Per step: each run's stop check and learning rate; each run's minibatch indices from its
own seeded stream (`workers.train.Minibatches`), gathered into (R, B, ...); one batched
forward and loss (R,); each run's divergence check on its loss; one backward of the sum
(the runs' parameters are disjoint, so each gets exactly its own gradient); per-run,
per-tensor gradient norms (R, tensors) and each run's clipping decision, applied as per-run
factors and thresholds; the packed optimizer with per-run hyperparameters; per-run update
and weight norms on logged steps; then each run's evidence row, plateau tracker, pruner and
probe points. A run that diverges, is pruned, is stopped or reaches its budget leaves the
pack: its result is made (final evaluation, end probe) and the stacks shrink to the others.

Test-set evaluation and activation statistics are batched over the runs
(workers/packed/evidence.py). Probes get each run's own nn.Module, built and initialized as
the single loop builds it, with the run's parameters and buffers copied in
(`PackedModel.load`): the same `ProbeContext` as a single run's.
"""

from __future__ import annotations

import ctypes
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

import torch
from torch import Tensor, nn

from workers.activations import activation_stats
from workers.config import GradClip, RunConfig
from workers.errors import Unpackable
from workers.packed.evidence import activation_stats_packed, evaluate_packed
from workers.packed.grouping import pack_key, pack_refusal, packable
from workers.packed.model import PackedModel
from workers.packed.optim import PackedOptimizer, create_packed_optimizer
from workers.tasks import TaskData, batched_loss_fn, create_task, loss_fn
from workers.train import (
    Minibatches,
    ProbeContext,
    RunLog,
    TrainHooks,
    TrainResult,
    environment,
    flat_parameters,
    init_model,
    layer_names,
    resolve_device,
    train,
)

Loss = Callable[[Tensor, Tensor], Tensor]
Outcome = TrainResult | Exception


@dataclass
class _Run:
    """One run of the pack: its place in the caller's list, its own module and record."""

    index: int
    config: RunConfig
    hooks: TrainHooks
    model: nn.Module  # the run's own module: probes see it, loaded with the run's state
    log: RunLog
    batches: Minibatches
    init_params: Tensor
    error: Exception | None = None  # what ended it alone (stopped, a hook failed)


@cache
def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse instead of handing it back to the system, in
    this process from now on; True where it could.

    A pack allocates and frees tensors of R x B x width numbers at every step (2 MiB each in
    the benchmark's 64 x 128 x 64 float32). glibc serves such sizes with fresh pages (above
    its mmap threshold, or after trimming the heap's top), and each first touch of a page
    is a fault: about 1,000 a step there, 15-20 % of the step's time. Raising both
    thresholds (32 MiB, the most the mmap threshold takes; 1 GiB) keeps the pages mapped.
    A worker's memory then stays at its high-water mark, as a caching allocator's does.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(
        libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30)
    )


def check_pack(configs: Sequence[RunConfig]) -> None:
    """Raise Unpackable unless these runs can train as one pack."""
    if not configs:
        raise Unpackable("a pack needs at least one run")
    for config in configs:
        refusal = pack_refusal(config)
        if refusal is not None:
            raise Unpackable(refusal)
    keys = {pack_key(c) for c in configs}
    if len(keys) > 1:
        raise Unpackable(
            "the runs of a pack share task, architecture, normalization, loss, dtype, device, "
            f"batch size and optimizer; these runs have {len(keys)} different combinations"
        )


def train_packed(
    configs: Sequence[RunConfig],
    hooks: Sequence[TrainHooks | None] | None = None,
    *,
    threads: int | None = None,
) -> list[Outcome]:
    """Train the runs of one pack together; one entry per run, in order: its TrainResult,
    or the exception that ended it alone (Stopped from its should_stop, or whatever its
    hooks raised, e.g. a lost lease). An error of the batched computation itself raises.

    `threads`: torch's CPU threads for the pack (default: the largest `threads` of the
    configs). Each result's environment says `execution: packed(n=R)`, R the pack's size.
    """
    check_pack(configs)
    keep_freed_memory()
    started = time.perf_counter()
    hooks = list(hooks) if hooks is not None else [None] * len(configs)
    if len(hooks) != len(configs):
        raise ValueError(f"{len(configs)} configs but {len(hooks)} hooks")
    first = configs[0]
    device = resolve_device(first.device)
    if device.type == "cpu":
        torch.set_num_threads(threads or max(c.threads for c in configs))
    dtype = getattr(torch, first.dtype)
    data = create_task(first.task).to(device, dtype)
    loss = loss_fn(first.loss or data.loss, data.loss)  # a run's own, for its probes
    batched_loss = batched_loss_fn(first.loss or data.loss, data.loss)
    classify = data.loss == "cross_entropy"  # labels: accuracy is measured whatever the loss
    execution = f"packed(n={len(configs)})"
    stats_batch = data.x_train[:256]  # activation statistics, as a single run takes them

    runs: list[_Run] = []
    for i, (config, run_hooks) in enumerate(zip(configs, hooks, strict=True)):
        model = init_model(config, data, device).train()
        run_hooks = run_hooks or TrainHooks()
        log = RunLog(config, run_hooks, layer_names(model), activation_stats(model, stats_batch))
        init_params = flat_parameters(model).clone() if log.wants_probes else torch.empty(0)
        batches = Minibatches(config, len(data.x_train), device)
        runs.append(_Run(i, config, run_hooks, model, log, batches, init_params))
    packed = PackedModel.stack([r.model for r in runs])
    minibatches = _Minibatches([r.batches for r in runs])
    optimizer = create_packed_optimizer([r.config.optimizer for r in runs], packed.params)
    results: list[Outcome | None] = [None] * len(runs)

    def probe(position: int, step: int, trigger: str) -> None:
        run = runs[position]
        if run.hooks.on_probe is not None:
            model = packed.load(position, run.model)
            run.hooks.on_probe(ProbeContext(step, trigger, model, data, loss, run.init_params))

    def leave(leaving: set[int]) -> None:
        """Make the results of the runs at these positions and drop them from the pack."""
        nonlocal runs
        ending = sorted(p for p in leaving if runs[p].error is None)
        for p in ending:
            runs[p].error = _call(runs[p].log.flush)
        evaluated = [
            p for p in ending if runs[p].error is None and runs[p].log.diverged_step is None
        ]
        finals: dict[int, tuple[float, float, float | None]] = {}
        if evaluated:
            subset = packed.subset(torch.tensor(evaluated, device=device))
            train_eval = evaluate_packed(
                subset, data.x_train, data.y_train, batched_loss, classify=classify
            )
            test_eval = evaluate_packed(
                subset, data.x_test, data.y_test, batched_loss, classify=classify
            )
            for p, (final_loss, _), (test_loss, test_acc) in zip(
                evaluated, train_eval, test_eval, strict=True
            ):
                finals[p] = (final_loss, test_loss, test_acc)
        for p in sorted(leaving):
            run = runs[p]
            if run.error is None and p in finals:
                log = run.log
                if log.settle(finals[p][0]) and "end" in run.config.probes.at:
                    run.error = _call(probe, p, len(log.losses), "end")
            if run.error is not None:
                results[run.index] = run.error
                continue
            seconds = time.perf_counter() - started
            env = environment(run.config, device, execution)
            results[run.index] = run.log.result(finals.get(p), env, seconds)
        staying = [p for p in range(len(runs)) if p not in leaving]
        if staying:
            index = torch.tensor(staying, device=device)
            packed.keep(index)
            optimizer.keep(index)
            minibatches.keep(staying)
        runs = [runs[p] for p in staying]

    step = 0
    while runs:
        # Each run's should_stop is asked once a step, as the single loop asks it.
        stopped = {p for p, run in enumerate(runs) if _fails(run, run.log.check_stop, step)}
        if stopped:
            leave(stopped)
            if not runs:
                break
        logs = [run.log for run in runs]
        lrs = [log.lr(step) for log in logs]
        if runs[0].batches.full_batch:  # one batch, the whole training set, for every run
            shared, x = True, data.x_train
            y = data.y_train.expand(len(runs), *data.y_train.shape)
        else:
            idx = minibatches.next()  # (R, B)
            shared, x, y = False, data.x_train[idx], data.y_train[idx]  # (R, B, ...)
        losses = batched_loss(packed.forward(x, shared=shared, training=True), y)  # (R,)
        values = losses.detach().tolist()
        leaving = {p for p, log in enumerate(logs) if log.diverges(step, values[p])}
        grads = list(torch.autograd.grad(losses.sum(), packed.params))

        lr = torch.tensor(lrs, dtype=dtype, device=device)
        measured = _clip_step_measure(step, logs, grads, packed, optimizer, lr)

        evaluation = _Evaluation(packed, data, batched_loss, classify, stats_batch)
        for position, run in enumerate(runs):
            if position in leaving:  # diverged at this step's loss: no update recorded
                continue
            try:
                triggers = run.log.step_done(
                    step,
                    values[position],
                    lrs[position],
                    per_tensor=measured.per_tensor[position],
                    grad_norm=measured.grad_norms[position],
                    clipped=measured.clipped[position],
                    update_norms=measured.update_norms[position],
                    weight_norms=measured.weight_norms[position],
                    evaluate=partial(evaluation.test, position),
                    activations=partial(evaluation.activations, position),
                )
                for trigger in triggers or ():
                    probe(position, step, trigger)
            except Exception as e:  # this run's hooks failed: the others go on
                run.error = e
                triggers = None
            if triggers is None or step == run.config.budget.steps - 1:  # pruned, failed, done
                leaving.add(position)
        if leaving:
            leave(leaving)
        step += 1
    return [r for r in results if r is not None]


class _Minibatches:
    """The pack's minibatch indices (R, B) at each step, each run's from its own stream;
    on the CPU drawn `chunk` steps ahead: one generator call per run and chunk, not per
    step (the same numbers: `Minibatches.ahead`)."""

    def __init__(self, streams: list[Minibatches], chunk: int = 32) -> None:
        self.streams, self.chunk = streams, chunk
        self.cpu = streams[0].device.type == "cpu"
        self.drawn: Tensor | None = None  # (R, chunk, B)
        self.used = 0

    def next(self) -> Tensor:
        if not self.cpu:
            return torch.stack([s.next() for s in self.streams])  # type: ignore[misc]
        if self.drawn is None or self.used == self.chunk:
            self.drawn = torch.stack([s.ahead(self.chunk) for s in self.streams])
            self.used = 0
        self.used += 1
        return self.drawn[:, self.used - 1]

    def keep(self, positions: list[int]) -> None:
        self.streams = [self.streams[p] for p in positions]
        if self.drawn is not None:
            self.drawn = self.drawn[positions]


class _Evaluation:
    """One step's batched test-set evaluation and activation statistics of every run in
    the pack, made when the first run asks for them."""

    def __init__(
        self,
        packed: PackedModel,
        data: TaskData,
        batched_loss: Loss,
        classify: bool,
        stats_batch: Tensor,
    ) -> None:
        self.packed, self.data, self.batched_loss = packed, data, batched_loss
        self.classify, self.stats_batch = classify, stats_batch
        self._test: list[tuple[float, float | None]] | None = None
        self._stats: list[dict[str, dict[str, float]]] | None = None

    def test(self, position: int) -> tuple[float, float | None]:
        if self._test is None:
            data = self.data
            self._test = evaluate_packed(
                self.packed, data.x_test, data.y_test, self.batched_loss, classify=self.classify
            )
        return self._test[position]

    def activations(self, position: int) -> dict[str, dict[str, float]]:
        if self._stats is None:
            self._stats = activation_stats_packed(self.packed, self.stats_batch)
        return self._stats[position]


def _call(fn: Callable[..., object], *args: Any) -> Exception | None:
    """Call a run's hook-calling function; the exception it raised, or None."""
    try:
        fn(*args)
    except Exception as e:
        return e
    return None


def _fails(run: _Run, fn: Callable[..., object], *args: Any) -> bool:
    run.error = _call(fn, *args)
    return run.error is not None


@dataclass
class _Measured:
    """What a step measured for each run's record (None where a run does not log it)."""

    per_tensor: list[list[float] | None]  # gradient norms per tensor, before clipping
    grad_norms: list[float | None]
    clipped: list[bool]
    update_norms: list[list[float] | None]  # per tensor: |θ_t - θ_{t+1}|
    weight_norms: list[list[float] | None]  # per tensor: |θ_{t+1}|


def _clip_step_measure(
    step: int,
    logs: list[RunLog],
    grads: list[Tensor],
    packed: PackedModel,
    optimizer: PackedOptimizer,
    lr: Tensor,
) -> _Measured:
    """Each run's gradient norms and clipping decision (its RunLog's, as a single run's),
    the clipping, the optimizer step, and the update and weight norms of logging runs."""
    runs = len(logs)
    logging = [log.logging(step) for log in logs]
    per_tensor: list[list[float] | None] = [None] * runs
    need_norm = [log.needs_grad_norm(step) for log in logs]
    if any(need_norm):
        # Per-run, per-tensor gradient norms: one (R, tensors) table, one sync.
        table = torch.stack([g.flatten(1).norm(dim=1) for g in grads], 1).tolist()
        per_tensor = [row if need else None for row, need in zip(table, need_norm, strict=True)]
    decided = [log.clip_factor(n) for log, n in zip(logs, per_tensor, strict=True)]
    clipped = [factor is not None for _, factor in decided]
    clips = [log.config.grad_clip for log in logs]
    _clip(clips, grads, [factor for _, factor in decided], clipped)

    before = [p.detach().clone() for p in packed.params] if any(logging) else None
    optimizer.step(packed.params, grads, lr)
    update_norms: list[list[float] | None] = [None] * runs
    weight_norms: list[list[float] | None] = [None] * runs
    if before is not None:  # θ_t - θ_{t+1} and θ_{t+1}: one (R, 2 x tensors) table
        weights = [p.detach() for p in packed.params]
        norms = [(b - w).flatten(1).norm(dim=1) for b, w in zip(before, weights, strict=True)]
        table = torch.stack(norms + [w.flatten(1).norm(dim=1) for w in weights], 1).tolist()
        n = len(weights)
        update_norms = [row[:n] if log else None for row, log in zip(table, logging, strict=True)]
        weight_norms = [row[n:] if log else None for row, log in zip(table, logging, strict=True)]
    grad_norms = [norm for norm, _ in decided]
    return _Measured(per_tensor, grad_norms, clipped, update_norms, weight_norms)


def _clip(
    clips: list[GradClip | None],
    grads: list[Tensor],
    factors: list[float | None],
    clipped: list[bool],
) -> None:
    """Clip the stacked gradients in place of the list: norm clipping by per-run factors (1
    where a run does not clip), value clipping by per-run thresholds (inf where a run does
    not); `clipped` gains the runs whose values were clamped."""
    like = grads[0]
    if any(f is not None for f in factors):
        scale = torch.tensor([1.0 if f is None else f for f in factors], dtype=like.dtype)
        scale = scale.to(like.device)
        grads[:] = [g * scale.view(-1, *([1] * (g.dim() - 1))) for g in grads]
    if any(c is not None and c.mode == "value" for c in clips):
        inf = float("inf")
        bound = torch.tensor(
            [c.threshold if c is not None and c.mode == "value" else inf for c in clips],
            dtype=like.dtype,
            device=like.device,
        )
        peak = torch.stack([g.abs().flatten(1).amax(1) for g in grads]).amax(0)
        for p, hit in enumerate((peak > bound).tolist()):
            clipped[p] = clipped[p] or hit
        shaped = [bound.view(-1, *([1] * (g.dim() - 1))) for g in grads]
        grads[:] = [torch.clamp(g, -b, b) for g, b in zip(grads, shaped, strict=True)]


def train_many(
    configs: Sequence[RunConfig],
    hooks: Sequence[TrainHooks | None] | None = None,
    *,
    max_size: int | None = None,
    threads: int | None = None,
) -> list[Outcome]:
    """Train runs in-process, packed where they pack (`packable`) and one by one otherwise;
    one entry per run, in order, as `train_packed` gives them."""
    hooks = list(hooks) if hooks is not None else [None] * len(configs)
    packing = packable(configs, max_size=max_size)
    results: list[Outcome | None] = [None] * len(configs)
    for pack in packing.packs:
        outcomes = train_packed(
            [configs[i] for i in pack], [hooks[i] for i in pack], threads=threads
        )
        for i, outcome in zip(pack, outcomes, strict=True):
            results[i] = outcome
    for i in packing.single:
        try:
            results[i] = train(configs[i], hooks[i])
        except Exception as e:
            results[i] = e
    return [r for r in results if r is not None]
