"""The training loop: one run from a `RunConfig` to a `TrainResult`, with per-step evidence.

It reads top to bottom: set up (seeds, device, data, model, init, optimizer), then one
loop over steps (minibatch -> loss -> backward -> evidence -> clip -> step), then the final
evaluation and the plateau analysis. Nothing here knows about the database or Ray: the
caller passes `TrainHooks` to receive metric batches, to be told to stop, and to probe.
"""

from __future__ import annotations

import functools
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
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
from workers.plugins import plugin_versions
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
    """`auto`: a GPU where this process may use one (`gpu_allowed`), else the CPU."""
    if name == "auto":
        name = "cuda" if gpu_allowed() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    return torch.device(name)


def gpu_allowed() -> bool:
    """Whether torch sees a GPU this process may use. Inside a Ray task only the GPUs Ray
    assigned it count: Ray (>= 2.4x) leaves every GPU of the node visible to a task that asked
    for none, and an `auto` run placed on a GPU node as a CPU task must not take one."""
    if not torch.cuda.is_available():
        return False
    ray = sys.modules.get("ray")
    in_task = ray is not None and ray.is_initialized()
    if in_task and ray.get_runtime_context().worker.mode == ray.WORKER_MODE:
        return bool(ray.get_gpu_ids())
    return True


def build(config: RunConfig, device: torch.device) -> tuple[TaskData, nn.Module]:
    """Data and initialized model for a config; seeded, so a run is a function of its config."""
    dtype = getattr(torch, config.dtype)
    torch.manual_seed(config.seed)
    data = create_task(config.task).to(device, dtype)
    return data, _initialized(config, data, device)


def init_model(config: RunConfig, data: TaskData, device: torch.device) -> nn.Module:
    """The initialized model of a config over task data built once for several runs (a
    pack): the same weights `build` gives, since the built-in tasks draw from their own
    generators (tasks.DATA_SEED), never from the global one that seeds the init."""
    torch.manual_seed(config.seed)
    return _initialized(config, data, device)


def _initialized(config: RunConfig, data: TaskData, device: torch.device) -> nn.Module:
    model = create_model(config.architecture, config.normalization, data)
    if config.init.name == "saddle":  # placed in the run's dtype: exact to its rounding
        model = model.to(device, getattr(torch, config.dtype))
        place_at_saddle(model, data, config.init.modes)  # type: ignore[union-attr]
        return model
    apply_init(model, config.init, activation_of(config.architecture))
    return model.to(device, getattr(torch, config.dtype))


@torch.no_grad()
def place_at_saddle(model: nn.Module, data: TaskData, modes: list[int]) -> None:
    """Set a two-layer deep linear net to the critical point that has learned exactly the
    singular modes `modes` of the task's map (workers.config.SaddleInit): hidden unit j
    carries mode modes[j], sqrt(s) in and out; the other units are zero."""
    assert data.modes is not None, "the saddle init needs the deep_linear task"
    u, s, v = (t.double() for t in data.modes)
    first, second = (m for m in model.modules() if isinstance(m, nn.Linear))
    w1 = torch.zeros_like(first.weight, dtype=torch.float64)
    w2 = torch.zeros_like(second.weight, dtype=torch.float64)
    for j, i in enumerate(modes):
        w1[j] = s[i].sqrt() * v[:, i]
        w2[:, j] = s[i].sqrt() * u[:, i]
    first.weight.copy_(w1.to(first.weight.device))
    second.weight.copy_(w2.to(second.weight.device))


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


def environment(
    config: RunConfig, device: torch.device, execution: str = "single"
) -> dict[str, Any]:
    """Where and how the run was computed. `execution`: "single" (its own loop, `train`) or
    "packed(n=N)" (one of N runs trained as one batched computation, workers/packed)."""
    env = {
        "torch": torch.__version__,
        "device": str(device),
        "dtype": config.dtype,
        "threads": torch.get_num_threads(),
        "host": platform.node(),
        "python": platform.python_version(),
        "execution": execution,
    }
    if device.type == "cuda":
        env["cuda_device"] = torch.cuda.get_device_name(device)
    env["plateau_bench"] = _own_version()
    plugins = plugin_versions(config.task.name, config.architecture.name)
    if plugins is not None:
        env["plugins"] = plugins
    env.update(ray_node())
    return env


@functools.cache
def _own_version() -> str:
    try:
        return metadata.version("plateau-bench")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "not installed"


def ray_node() -> dict[str, Any]:
    """The Ray node a run trained on (its id, and the labels it was started with, e.g. a
    worker group's), when the process is connected to Ray (a Ray worker); else nothing."""
    ray = sys.modules.get("ray")  # not imported for this: a process without Ray has no node
    if ray is None or not ray.is_initialized():
        return {}
    context = ray.get_runtime_context()
    labels = {k: v for k, v in context.get_node_labels().items() if not k.startswith("ray.io/")}
    return {"ray_node": context.get_node_id(), "ray_node_labels": labels}


class Minibatches:
    """A run's minibatch stream: sampling with replacement from a generator seeded with the
    run's seed, so batch t is a function of (seed, t) only, whatever happened before and
    however the run is executed (alone or in a pack)."""

    def __init__(self, config: RunConfig, n_train: int, device: torch.device) -> None:
        budget = config.budget
        self.full_batch = budget.full_batch  # exact gradient descent on the training loss
        self.size = n_train if budget.full_batch else min(budget.batch_size, n_train)
        self.n_train, self.device = n_train, device
        self.generator = torch.Generator(device=device).manual_seed(config.seed)

    def next(self) -> Tensor | None:
        """Indices (size,) of the next batch; None under full_batch (the whole set)."""
        if self.full_batch:
            return None
        return torch.randint(
            0, self.n_train, (self.size,), generator=self.generator, device=self.device
        )

    def ahead(self, steps: int) -> Tensor:
        """The indices of the next `steps` batches at once, (steps, size): on the CPU the
        numbers `steps` calls of next() give (its generator fills a tensor in order; CUDA's
        does not, so there call next() each step). Not under full_batch."""
        assert not self.full_batch and self.device.type == "cpu"
        return torch.randint(
            0, self.n_train, (steps, self.size), generator=self.generator, device=self.device
        )


class RunLog:
    """One run's record as it trains: learning rate, divergence stop, clipping decision,
    per-step evidence rows, plateau tracking, probe points, the pruner, and the result.

    The single loop (`train`) and the packed executor (workers/packed) compute a step in
    different ways and hand this the same numbers, so a run's evidence, stops and result do
    not depend on how it was executed.
    """

    def __init__(
        self,
        config: RunConfig,
        hooks: TrainHooks,
        names: list[str],
        init_stats: dict[str, dict[str, float]],
    ) -> None:
        self.config, self.hooks, self.names = config, hooks, names
        self.init_stats = init_stats  # activation statistics at initialization
        self.tracker = PlateauTracker(target=config.target.loss, **config.plateau.model_dump())
        self.losses: list[float] = []  # every step's training loss
        self.grad_norms: dict[int, float] = {}  # logged steps
        self.update_norms: dict[int, float] = {}
        self.rows: list[dict[str, Any]] = []  # not yet handed to hooks.on_metrics
        self.clipped_steps = 0
        self.plateau_probes = 0
        self.pruned_step: int | None = None
        self.diverged_step: int | None = None
        self._above_since: int | None = None  # first step of the stretch above the bound

    @property
    def wants_probes(self) -> bool:
        probes = self.config.probes
        return self.hooks.on_probe is not None and bool(probes.at or probes.every)

    def flush(self) -> None:
        if self.rows and self.hooks.on_metrics is not None:
            self.hooks.on_metrics(list(self.rows))
        self.rows.clear()

    def check_stop(self, step: int) -> None:
        """Raise Stopped (after handing over the rows so far) when the caller says stop."""
        if self.hooks.should_stop is not None and self.hooks.should_stop():
            self.flush()
            raise Stopped(f"stopped at step {step}")

    def lr(self, step: int) -> float:
        optimizer = self.config.optimizer
        return optimizer.lr * lr_factor(optimizer.schedule, step, self.config.budget.steps)

    def logging(self, step: int) -> bool:
        budget = self.config.budget
        return step % budget.log_every == 0 or step == budget.steps - 1

    def needs_grad_norm(self, step: int) -> bool:
        clip = self.config.grad_clip
        return self.logging(step) or (clip is not None and clip.mode == "norm")

    def diverges(self, step: int, loss_value: float) -> bool:
        """True when the run stops as diverged at this step's loss (before its update)."""
        # Cross-entropy stays finite as logits blow up, so "non-finite" alone misses most
        # divergences: a loss held far above where it started counts too (config.Divergence).
        first_loss = self.losses[0] if self.losses else loss_value
        if not math.isfinite(loss_value):
            self.diverged_step = step
            return True
        divergence = self.config.divergence
        if loss_value > divergence.factor * max(first_loss, 1e-12):
            self._above_since = step if self._above_since is None else self._above_since
            if step - self._above_since + 1 >= divergence.patience:
                self.diverged_step = self._above_since
                return True
        else:
            self._above_since = None
        return False

    def clip_factor(self, per_tensor: list[float] | None) -> tuple[float | None, float | None]:
        """(global gradient norm, the factor norm clipping scales the gradients by this step,
        or None when it does not) from the per-tensor gradient norms."""
        grad_norm = math.sqrt(sum(x * x for x in per_tensor)) if per_tensor else None
        clip = self.config.grad_clip
        if clip is not None and clip.mode == "norm":
            assert grad_norm is not None
            if grad_norm > clip.threshold:
                return grad_norm, clip.threshold / (grad_norm + 1e-6)
        return grad_norm, None

    def step_done(
        self,
        step: int,
        loss_value: float,
        lr: float,
        *,
        per_tensor: list[float] | None,
        grad_norm: float | None,
        clipped: bool,
        update_norms: list[float] | None,
        weight_norms: list[float] | None,
        evaluate: Callable[[], tuple[float, float | None]],
        activations: Callable[[], dict[str, dict[str, float]]],
    ) -> list[str] | None:
        """Record a step taken: its loss, and on logged steps its evidence row (norms per
        tensor, before and after the update; `evaluate` and `activations` are called on
        evaluation steps). Returns the probe triggers the step fires, or None when a study's
        pruner stopped the run here."""
        config, hooks = self.config, self.hooks
        self.clipped_steps += clipped
        self.losses.append(loss_value)
        entered_plateau = self.tracker.update(loss_value)
        if (
            hooks.on_report is not None
            and step > 0
            and step % hooks.report_every == 0
            and self.tracker.reached is None
            and hooks.on_report(step, self.tracker.smoothed[-1], self.tracker.current())
        ):
            self.pruned_step = step
            return None
        if self.logging(step):
            assert per_tensor is not None and grad_norm is not None
            assert update_norms is not None and weight_norms is not None
            self.grad_norms[step] = grad_norm
            update_total_sq = sum(x * x for x in update_norms)
            weight_total_sq = sum(x * x for x in weight_norms)
            layer_sq: dict[str, float] = {}
            for name, norm in zip(self.names, per_tensor, strict=True):
                layer_sq[name] = layer_sq.get(name, 0.0) + norm * norm
            self.update_norms[step] = math.sqrt(update_total_sq)
            row: dict[str, Any] = {
                "step": step,
                "loss": loss_value,
                "lr": lr,
                "grad_norm": grad_norm,
                "update_norm": self.update_norms[step],
                "param_norm": math.sqrt(weight_total_sq),
                "clipped": clipped,
                "layer_grad_norms": {k: math.sqrt(v) for k, v in layer_sq.items()},
                "eval_loss": None,
                "eval_accuracy": None,
                "activation_stats": None,
            }
            budget = config.budget
            if step % budget.eval_every == 0 or step == budget.steps - 1:
                row["eval_loss"], row["eval_accuracy"] = evaluate()
                row["activation_stats"] = self.init_stats if step == 0 else activations()
            self.rows.append(row)
            if len(self.rows) >= hooks.flush_rows:
                self.flush()
        triggers = []
        probes = config.probes
        if (
            entered_plateau
            and "plateau" in probes.at
            and self.plateau_probes < probes.max_plateau_probes
        ):
            self.plateau_probes += 1
            triggers.append("plateau")
        if probes.every is not None and step > 0 and step % probes.every == 0:
            triggers.append("every")
        return triggers

    def settle(self, final_loss: float) -> bool:
        """After the final evaluation of a run that did not diverge on the way: False, and
        diverged at its last step, when the end state's training loss is not finite."""
        if not math.isfinite(final_loss):
            self.diverged_step = len(self.losses)
            return False
        return True

    def result(
        self,
        final: tuple[float, float, float | None] | None,
        environment: dict[str, Any],
        seconds: float,
    ) -> TrainResult:
        """The TrainResult; `final`: (training loss, test loss, test accuracy) at the end."""
        config, losses = self.config, self.losses
        analysis = detect_plateaus(
            losses,
            target=config.target.loss,
            thresholds=config.plateau.model_dump(),
            grad_norms=self.grad_norms,
        )
        steps_done = len(losses)
        diverged = self.diverged_step is not None
        final_loss = test_loss = test_acc = None
        if final is not None and not diverged:
            final_loss, test_loss, test_acc = final
        steps_to_target = analysis["steps_to_target"]
        return TrainResult(
            outcome="diverged" if diverged else "succeeded",
            steps_done=steps_done,
            final_loss=final_loss,
            test_loss=test_loss,
            test_accuracy=test_acc,
            reached_target=steps_to_target is not None,
            steps_to_target=steps_to_target,
            plateau_fraction=analysis["plateau_fraction"],
            longest_plateau=analysis["longest_plateau"],
            plateaus={
                "segments": analysis["segments"],
                "escaped": analysis["escaped"],
                "thresholds": analysis["thresholds"],
            },
            clip_fraction=(
                self.clipped_steps / max(1, steps_done) if config.grad_clip is not None else None
            ),
            diverged_step=self.diverged_step,
            pruned_step=self.pruned_step,
            environment=environment,
            seconds=seconds,
            losses=losses,
            grad_norms=self.grad_norms,
            update_norms=self.update_norms,
        )


def flat_parameters(model: nn.Module) -> Tensor:
    """The trainable parameters as one flat copy (a probe's `init_params`)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])


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
    clip = config.grad_clip
    batches = Minibatches(config, len(data.x_train), device)
    # Per-layer activation statistics on a fixed batch (the first 256 training samples): at
    # initialization, then at every evaluation step.
    stats_batch = data.x_train[:256]
    log = RunLog(config, hooks, layer_names(model), activation_stats(model, stats_batch))
    init_params = flat_parameters(model).clone() if log.wants_probes else torch.empty(0)

    def probe(step: int, trigger: str) -> None:
        if hooks.on_probe is not None:
            hooks.on_probe(ProbeContext(step, trigger, model, data, loss, init_params))

    def evaluate_test() -> tuple[float, float | None]:
        return evaluate(model, data.x_test, data.y_test, loss, classify=classify)

    model.train()
    for step in range(config.budget.steps):
        log.check_stop(step)
        lr = log.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = batches.next()
        x_batch, y_batch = (
            (data.x_train, data.y_train) if idx is None else (data.x_train[idx], data.y_train[idx])
        )
        batch_loss = loss(model(x_batch), y_batch)
        loss_value = float(batch_loss.detach())
        if log.diverges(step, loss_value):
            break
        optimizer.zero_grad(set_to_none=True)
        batch_loss.backward()

        logging = log.logging(step)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        # Per-tensor gradient norms as Python floats: one reduction kernel and one sync.
        per_tensor = (
            torch.stack(torch._foreach_norm(grads)).tolist() if log.needs_grad_norm(step) else None
        )
        grad_norm, factor = log.clip_factor(per_tensor)
        clipped = factor is not None
        if factor is not None:
            torch._foreach_mul_(grads, factor)
        elif clip is not None and clip.mode == "value":
            clipped = any(bool((g.abs() > clip.threshold).any()) for g in grads)
            torch._foreach_clamp_min_(grads, -clip.threshold)
            torch._foreach_clamp_max_(grads, clip.threshold)

        if logging:  # keep θ_t to measure the update θ_{t+1} - θ_t
            torch._foreach_copy_(before, weights)
        optimizer.step()
        update_norms = weight_norms = None
        if logging:
            torch._foreach_sub_(before, weights)  # now θ_t - θ_{t+1}: same norm as the update
            # One kernel for the update and weight norms, one conversion to Python for both.
            norms = torch.stack(torch._foreach_norm(before + weights)).tolist()
            update_norms, weight_norms = norms[: len(weights)], norms[len(weights) :]
        triggers = log.step_done(
            step,
            loss_value,
            lr,
            per_tensor=per_tensor,
            grad_norm=grad_norm,
            clipped=clipped,
            update_norms=update_norms,
            weight_norms=weight_norms,
            evaluate=evaluate_test,
            activations=lambda: activation_stats(model, stats_batch),
        )
        if triggers is None:
            break
        for trigger in triggers:
            probe(step, trigger)
    log.flush()

    final = None
    if log.diverged_step is None:
        final_loss, _ = evaluate(model, data.x_train, data.y_train, loss, classify=classify)
        final = (final_loss, *evaluate_test())
        if log.settle(final_loss) and "end" in config.probes.at:
            probe(len(log.losses), "end")
    return log.result(final, environment(config, device), time.perf_counter() - started)
