"""The training loop: one run from a `RunConfig` to a `TrainResult`, with per-step evidence.

It reads top to bottom: set up (seeds, device, data, model, init, optimizer), then one
loop over steps (minibatch -> loss -> backward -> evidence -> clip -> step), then the final
evaluation and the plateau analysis. Nothing here knows about the database or Ray: the
caller passes `TrainHooks` to receive metric batches, to be told to stop, and to probe.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from workers.activations import activation_stats
from workers.config import RunConfig
from workers.errors import Stopped
from workers.inits import apply_init
from workers.models import activation_of, create_model
from workers.optim import create_optimizer, lr_factor
from workers.plateau import OnPlateau, PlateauTracker, detect_plateaus
from workers.tasks import TaskData, create_task, loss_fn


@dataclass
class ProbeContext:
    """What a probe sees: the live model at a step, its data and loss, and where it began."""

    step: int
    trigger: str  # end | every | plateau
    model: nn.Module
    data: TaskData
    loss: Callable[[Tensor, Tensor], Tensor]
    init_params: Tensor  # flat initial parameters, for the init -> now interpolation


ProbeHook = Callable[[ProbeContext], None]


@dataclass
class TrainHooks:
    """How a caller observes and steers a run. All optional."""

    on_metrics: Callable[[list[dict[str, Any]]], None] | None = None  # a batch of step rows
    should_stop: Callable[[], bool] | None = None  # checked every step; True -> Stopped
    on_probe: ProbeHook | None = None  # called at the probe points the config asks for
    flush_rows: int = 256  # metric rows per on_metrics call
    # Intermediate values for a study's pruner: (step, smoothed loss, current plateau or
    # None) -> True to stop here. Never called once the run has reached its target: a trial
    # that earned its steps-to-target completes with it.
    on_report: Callable[[int, float, OnPlateau | None], bool] | None = None
    report_every: int = 50


@dataclass
class TrainResult:
    outcome: str  # succeeded | diverged
    steps_done: int
    final_loss: float | None
    test_loss: float | None
    test_accuracy: float | None
    reached_target: bool
    steps_to_target: int | None
    plateau_fraction: float
    longest_plateau: int
    plateaus: dict[str, Any]
    clip_fraction: float | None
    diverged_step: int | None
    pruned_step: int | None
    environment: dict[str, Any]
    seconds: float
    losses: list[float] = field(repr=False, default_factory=list)  # every step's train loss
    # Logged steps' norms, for the diagnosis (stored per step in run_metric already).
    grad_norms: dict[int, float] = field(repr=False, default_factory=dict)
    update_norms: dict[int, float] = field(repr=False, default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The fields stored in run_result."""
        kept_out = ("outcome", "losses", "grad_norms", "update_norms")
        return {k: v for k, v in self.__dict__.items() if k not in kept_out}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    return torch.device(name)


def build(config: RunConfig, device: torch.device) -> tuple[TaskData, nn.Module]:
    """Data and initialized model for a config; seeded, so a run is a function of its config."""
    dtype = getattr(torch, config.dtype)
    torch.manual_seed(config.seed)
    data = create_task(config.task).to(device, dtype)
    model = create_model(config.architecture, config.normalization, data)
    apply_init(model, config.init, activation_of(config.architecture))
    return data, model.to(device, dtype)


def layer_names(model: nn.Module) -> list[str]:
    """Module path of each trainable parameter (weight and bias of a layer share it)."""
    return [
        n.rsplit(".", 1)[0] if "." in n else n
        for n, p in model.named_parameters()
        if p.requires_grad
    ]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss: Callable[[Tensor, Tensor], Tensor],
    *,
    classify: bool,
    chunk: int = 4096,
) -> tuple[float, float | None]:
    """Mean loss (and accuracy for classification) over (x, y), in eval mode."""
    was_training = model.training
    model.eval()
    total, correct = 0.0, 0
    for i in range(0, len(x), chunk):
        out = model(x[i : i + chunk])
        total += float(loss(out, y[i : i + chunk])) * len(out)
        if classify:
            correct += int((out.argmax(-1) == y[i : i + chunk]).sum())
    model.train(was_training)
    return total / len(x), (correct / len(x) if classify else None)


def environment(config: RunConfig, device: torch.device) -> dict[str, Any]:
    env = {
        "torch": torch.__version__,
        "device": str(device),
        "dtype": config.dtype,
        "threads": torch.get_num_threads(),
        "host": platform.node(),
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        env["cuda_device"] = torch.cuda.get_device_name(device)
    return env


def train(config: RunConfig, hooks: TrainHooks | None = None) -> TrainResult:
    hooks = hooks or TrainHooks()
    started = time.perf_counter()
    device = resolve_device(config.device)
    if device.type == "cpu":
        # One thread per run by default: runs pack onto cores instead of fighting over them,
        # and a fixed thread count keeps CPU reductions bitwise reproducible.
        torch.set_num_threads(config.threads)
    data, model = build(config, device)
    loss = loss_fn(config.loss or data.loss, data.loss)
    classify = data.loss == "cross_entropy"  # labels: accuracy is measured whatever the loss
    optimizer = create_optimizer(model.parameters(), config.optimizer)
    params = [p for p in model.parameters() if p.requires_grad]
    weights = [p.detach() for p in params]
    before = [torch.empty_like(w) for w in weights]  # reused buffer for the update norm
    names = layer_names(model)
    clip = config.grad_clip
    budget = config.budget
    batch_gen = torch.Generator(device=device).manual_seed(config.seed)
    tracker = PlateauTracker(target=config.target.loss, **config.plateau.model_dump())
    probe_every = config.probes.every

    losses: list[float] = []
    grad_norms: dict[int, float] = {}
    update_norms: dict[int, float] = {}
    rows: list[dict[str, Any]] = []
    clipped_steps = 0
    plateau_probes = 0
    pruned_step: int | None = None
    diverged_step: int | None = None
    n_train = len(data.x_train)
    batch_size = n_train if budget.full_batch else min(budget.batch_size, n_train)
    base_lr = config.optimizer.lr
    divergence = config.divergence
    above_since: int | None = None  # first step of the current stretch above the bound

    def flush() -> None:
        if rows and hooks.on_metrics is not None:
            hooks.on_metrics(list(rows))
        rows.clear()

    wants_probes = hooks.on_probe is not None and (config.probes.at or probe_every)
    init_params = (
        torch.cat([p.detach().reshape(-1) for p in params]).clone()
        if wants_probes
        else torch.empty(0)
    )

    def probe(step: int, trigger: str) -> None:
        if hooks.on_probe is not None:
            hooks.on_probe(ProbeContext(step, trigger, model, data, loss, init_params))

    # Per-layer activation statistics on a fixed batch (the first 256 training samples): at
    # initialization, then at every evaluation step.
    stats_batch = data.x_train[:256]
    init_stats = activation_stats(model, stats_batch)

    model.train()
    step = 0
    for step in range(budget.steps):
        if hooks.should_stop is not None and hooks.should_stop():
            flush()
            raise Stopped(f"stopped at step {step}")
        lr = base_lr * lr_factor(config.optimizer.schedule, step, budget.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr

        if budget.full_batch:  # exact gradient descent on the training loss
            x_batch, y_batch = data.x_train, data.y_train
        else:
            # Sampling with replacement from a seeded generator: batch t is a function of
            # (seed, t) only, whatever happened before.
            idx = torch.randint(0, n_train, (batch_size,), generator=batch_gen, device=device)
            x_batch, y_batch = data.x_train[idx], data.y_train[idx]
        out = model(x_batch)
        batch_loss = loss(out, y_batch)
        loss_value = float(batch_loss.detach())
        # Cross-entropy stays finite as logits blow up, so "non-finite" alone misses most
        # divergences: a loss held far above where it started counts too (config.Divergence).
        first_loss = losses[0] if losses else loss_value
        if not math.isfinite(loss_value):
            diverged_step = step
            break
        if loss_value > divergence.factor * max(first_loss, 1e-12):
            above_since = step if above_since is None else above_since
            if step - above_since + 1 >= divergence.patience:
                diverged_step = above_since
                break
        else:
            above_since = None
        optimizer.zero_grad(set_to_none=True)
        batch_loss.backward()

        logging = step % budget.log_every == 0 or step == budget.steps - 1
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        need_norm = logging or (clip is not None and clip.mode == "norm")
        # Per-tensor gradient norms as Python floats: one reduction kernel and one sync.
        per_tensor = torch.stack(torch._foreach_norm(grads)).tolist() if need_norm else None
        grad_norm = math.sqrt(sum(x * x for x in per_tensor)) if per_tensor else None
        clipped = False
        if clip is not None and clip.mode == "norm":
            assert grad_norm is not None
            if grad_norm > clip.threshold:
                torch._foreach_mul_(grads, clip.threshold / (grad_norm + 1e-6))
                clipped = True
        elif clip is not None:
            clipped = any(bool((g.abs() > clip.threshold).any()) for g in grads)
            torch._foreach_clamp_min_(grads, -clip.threshold)
            torch._foreach_clamp_max_(grads, clip.threshold)
        clipped_steps += clipped

        if logging:  # keep θ_t to measure the update θ_{t+1} - θ_t
            torch._foreach_copy_(before, weights)
        optimizer.step()

        losses.append(loss_value)
        entered_plateau = tracker.update(loss_value)
        if (
            hooks.on_report is not None
            and step > 0
            and step % hooks.report_every == 0
            and tracker.reached is None
            and hooks.on_report(step, tracker.smoothed[-1], tracker.current())
        ):
            pruned_step = step
            break
        if logging:
            assert per_tensor is not None and grad_norm is not None
            grad_norms[step] = grad_norm
            torch._foreach_sub_(before, weights)  # now θ_t - θ_{t+1}: same norm as the update
            # One kernel for the update and weight norms, one conversion to Python for both.
            norms = torch.stack(torch._foreach_norm(before + weights)).tolist()
            n = len(weights)
            per_param_sq = [x * x for x in per_tensor]
            update_total_sq = sum(x * x for x in norms[:n])
            weight_total_sq = sum(x * x for x in norms[n:])
            layer_sq: dict[str, float] = {}
            for name, sq in zip(names, per_param_sq, strict=True):
                layer_sq[name] = layer_sq.get(name, 0.0) + sq
            update_norms[step] = math.sqrt(update_total_sq)
            row: dict[str, Any] = {
                "step": step,
                "loss": loss_value,
                "lr": lr,
                "grad_norm": grad_norm,
                "update_norm": update_norms[step],
                "param_norm": math.sqrt(weight_total_sq),
                "clipped": clipped,
                "layer_grad_norms": {k: math.sqrt(v) for k, v in layer_sq.items()},
                "eval_loss": None,
                "eval_accuracy": None,
                "activation_stats": None,
            }
            if step % budget.eval_every == 0 or step == budget.steps - 1:
                row["eval_loss"], row["eval_accuracy"] = evaluate(
                    model, data.x_test, data.y_test, loss, classify=classify
                )
                row["activation_stats"] = (
                    init_stats if step == 0 else activation_stats(model, stats_batch)
                )
            rows.append(row)
            if len(rows) >= hooks.flush_rows:
                flush()
        if (
            entered_plateau
            and "plateau" in config.probes.at
            and plateau_probes < config.probes.max_plateau_probes
        ):
            plateau_probes += 1
            probe(step, "plateau")
        if probe_every is not None and step > 0 and step % probe_every == 0:
            probe(step, "every")
    flush()

    steps_done = len(losses)
    diverged = diverged_step is not None
    final_loss = test_loss = test_acc = None
    if not diverged:
        final_loss, _ = evaluate(model, data.x_train, data.y_train, loss, classify=classify)
        test_loss, test_acc = evaluate(model, data.x_test, data.y_test, loss, classify=classify)
        if not math.isfinite(final_loss):
            diverged, diverged_step = True, steps_done
        elif "end" in config.probes.at:
            probe(steps_done, "end")
    analysis = detect_plateaus(
        losses,
        target=config.target.loss,
        thresholds=config.plateau.model_dump(),
        grad_norms=grad_norms,
    )
    steps_to_target = analysis["steps_to_target"]
    return TrainResult(
        outcome="diverged" if diverged else "succeeded",
        steps_done=steps_done,
        final_loss=final_loss if not diverged else None,
        test_loss=test_loss if not diverged else None,
        test_accuracy=test_acc if not diverged else None,
        reached_target=steps_to_target is not None,
        steps_to_target=steps_to_target,
        plateau_fraction=analysis["plateau_fraction"],
        longest_plateau=analysis["longest_plateau"],
        plateaus={
            "segments": analysis["segments"],
            "escaped": analysis["escaped"],
            "thresholds": analysis["thresholds"],
        },
        clip_fraction=(clipped_steps / max(1, steps_done)) if clip is not None else None,
        diverged_step=diverged_step,
        pruned_step=pruned_step,
        environment=environment(config, device),
        seconds=time.perf_counter() - started,
        losses=losses,
        grad_norms=grad_norms,
        update_norms=update_norms,
    )
