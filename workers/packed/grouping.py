"""Which runs can train as one pack, and why the others cannot (no torch: the dispatcher
decides packs without importing the training stack).

Runs pack when they share everything that fixes the shape of the batched computation: the
task's data (the same task config), the architecture (the same config: shapes and
activation), the normalization, the loss, the dtype, the device, the minibatch size, and
the optimizer's update rule (its name, and Nesterov or not). Everything else is per run:
seed (init and minibatch stream), init, learning rate, schedule and the optimizer's other
hyperparameters, clipping, budget, divergence and plateau settings, target, probes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from workers.config import BUILTIN_TASKS, RunConfig, train_size

# Architectures the packed model computes: nn.Sequential stacks of Linear, BatchNorm1d,
# LayerNorm and elementwise activations (workers/packed/model.py).
PACKED_ARCHITECTURES = ("deep_linear", "mlp")
PACKED_OPTIMIZERS = ("adam", "adamw", "sgd")
# Built-in tasks draw from their own generators, never the global one that seeds a run's
# init (workers.train.init_model), so one copy of their data serves every run of a pack.
BUILTIN_TASK_NAMES = tuple(m.model_fields["name"].default for m in BUILTIN_TASKS)


def pack_refusal(config: RunConfig) -> str | None:
    """Why this run cannot train in a pack, or None when it can."""
    if config.task.name not in BUILTIN_TASK_NAMES:
        return f"task '{config.task.name}' is a plugin; packed: " + ", ".join(BUILTIN_TASK_NAMES)
    if config.architecture.name not in PACKED_ARCHITECTURES:
        return f"architecture '{config.architecture.name}' does not pack yet; packed: " + (
            ", ".join(PACKED_ARCHITECTURES)
        )
    if config.optimizer.name not in PACKED_OPTIMIZERS:
        return f"optimizer '{config.optimizer.name}' does not pack yet; packed: " + (
            ", ".join(PACKED_OPTIMIZERS)
        )
    return None


# What one run of a pack holds on its device per parameter, in numbers, at the peak of a
# step: its weights, their gradient, the copy the update norm is measured against, the
# optimizer's state (SGD's momentum, Adam's two moments), and temporaries of the step's
# backward and update (measured: 6.0 numbers per parameter with SGD and momentum, 7.4 with
# Adam; tests/workers/test_packed.py keeps the estimate above the measure).
PARAMETER_COPIES = {"sgd": 7, "adam": 8, "adamw": 8}
# Per sample and hidden unit of a packed model: the pre-activation, the normalized and the
# activated value, and a gradient of each kept by autograd at their peak.
ACTIVATION_COPIES = 6
DTYPE_BYTES = {"float32": 4, "float64": 8}


def pack_run_bytes(config: RunConfig) -> int:
    """Memory one run of a pack holds on its device while it trains, in bytes: an upper
    estimate from its config (the pack's one copy of the task data is not counted). The
    dispatcher sizes GPU packs by it; tests/workers/test_packed.py measures it against the
    allocator's peak."""
    from workers.cost import parameter_count, task_shape

    shape = task_shape(config.task)
    assert shape is not None and pack_refusal(config) is None, "a run that packs"
    arch = config.architecture
    parameters = parameter_count(arch, config.normalization, shape)
    assert parameters is not None  # a built-in architecture
    n_train = train_size(config.task)
    assert n_train is not None
    batch = n_train if config.budget.full_batch else min(config.budget.batch_size, n_train)
    hidden = arch.depth * arch.width  # mlp and deep_linear: depth layers of width units
    per_sample = shape.vector_width + ACTIVATION_COPIES * hidden + 3 * shape.n_outputs
    numbers = PARAMETER_COPIES[config.optimizer.name] * parameters + batch * per_sample
    return DTYPE_BYTES[config.dtype] * numbers


def pack_key(config: RunConfig) -> tuple[Any, ...]:
    """Runs with equal keys (and no refusal) can train as one pack."""
    budget, n_train = config.budget, train_size(config.task)
    assert n_train is not None  # a built-in task
    batch = n_train if budget.full_batch else min(budget.batch_size, n_train)
    return (
        config.task.model_dump_json(),
        config.architecture.model_dump_json(),
        config.normalization,
        config.loss,
        config.dtype,
        config.device,
        budget.full_batch,
        batch,
        config.optimizer.name,
        getattr(config.optimizer, "nesterov", False),
    )


@dataclass(frozen=True)
class Packing:
    """How a list of runs executes: `packs` are lists of indices into it (two runs or more,
    each list one batched computation); `single` maps every other index to why it runs one
    by one."""

    packs: list[list[int]] = field(default_factory=list)
    single: dict[int, str] = field(default_factory=dict)


def packable(configs: Sequence[RunConfig], *, max_size: int | None = None) -> Packing:
    """Group runs into packs of at most `max_size` (None: no limit), in the order given."""
    if max_size is not None and max_size < 1:
        raise ValueError(f"max_size must be at least 1; got {max_size}")
    groups: dict[tuple[Any, ...], list[int]] = {}
    single: dict[int, str] = {}
    for i, config in enumerate(configs):
        refusal = pack_refusal(config)
        if refusal is not None:
            single[i] = refusal
        else:
            groups.setdefault(pack_key(config), []).append(i)
    packs: list[list[int]] = []
    for members in groups.values():
        # Near-equal packs: 65 runs with max_size 64 make 33 + 32, not 64 + 1.
        n = -(-len(members) // (max_size or len(members)))
        for k in range(n):
            chunk = members[k * len(members) // n : (k + 1) * len(members) // n]
            if len(chunk) > 1:
                packs.append(chunk)
            else:
                single[chunk[0]] = (
                    "no other run shares its data, shapes, batch size and optimizer"
                    if len(members) == 1
                    else f"left alone by packs of at most {max_size} runs"
                )
    return Packing(packs, dict(sorted(single.items())))
