"""What a run costs, estimated from its config alone (no torch): the service refuses a run
past its limits at submission instead of letting it occupy (or kill) a worker.

The unit is one *parameter-sample*: one parameter's share of one sample's forward and
backward pass. A training step over a batch of B samples of a model with P parameters costs
P·B, so a run of T steps costs about

    cost = P · (T · B  +  n_probes · S · (2 · H + E / 3))

where a probe over S = min(max_samples, n_train) samples makes at most H Hessian-vector
products (each about two gradients: 1.26-1.61x measured, benchmarks/probes.py) and E loss
evaluations for its slices (a forward pass is about a third of a gradient). Training FLOPs
are about 6 per parameter-sample (Kaplan et al. 2020), so cost × 6 is the run's FLOP count.

`parameter_count` is exact for the built-in architectures (tests/workers/test_cost.py builds
every one with torch and compares); plugins' models are not known here and get None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workers.config import RunConfig, split_test_size, train_size

SLICE_POINTS_2D = 11  # workers/probes/__init__.py: run_probes(slice_points_2d=11)
SLICE_LINES = 4  # 1-D slices: a random direction, top and bottom eigenvectors, interpolation


@dataclass(frozen=True)
class TaskShape:
    """What a model builder reads of a task (workers.tasks.TaskData), without building it."""

    input_shape: tuple[int, ...]  # one example (token count for sequences)
    n_outputs: int
    vocab_size: int | None  # sequences only
    n_samples: int  # training and test samples together
    target_width: int  # numbers per target (1 for a class label)

    @property
    def vector_width(self) -> int:
        """Width of an example once flattened (one-hot for token sequences)."""
        width = 1
        for n in self.input_shape:
            width *= n
        return width * (self.vocab_size or 1)

    @property
    def elements(self) -> int:
        """Numbers the task's tensors hold (inputs and targets of both splits)."""
        per_example = 1
        for n in self.input_shape:
            per_example *= n
        return self.n_samples * (per_example + self.target_width)


def task_shape(task: Any) -> TaskShape | None:
    """The shape of a built-in task's data; None for a plugin's."""
    name = task.name
    if name == "digits":
        n = train_size(task) + split_test_size(1797, task.test_fraction)
        return TaskShape((1, 8, 8), 10, None, n, 1)
    if name == "teacher_student":
        return TaskShape((task.input_dim,), 1, None, task.n_train + task.n_test, 1)
    if name == "deep_linear":
        n = task.n_train + task.n_test
        return TaskShape((task.input_dim,), task.output_dim, None, n, task.output_dim)
    if name == "parity":
        return TaskShape((task.n_bits,), 2, None, task.n_train + task.n_test, 1)
    if name == "spirals":
        return TaskShape((2,), 2, None, task.n_train + task.n_test, 1)
    if name == "modular_addition":
        return TaskShape((2,), task.p, task.p, task.p**2, 1)
    return None


def _norm(kind: str, width: int) -> int:
    # BatchNorm and LayerNorm (GroupNorm(1, c) for feature maps) learn a scale and a shift.
    return 0 if kind == "none" else 2 * width


def _linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def parameter_count(arch: Any, normalization: str, shape: TaskShape) -> int | None:
    """Trainable parameters of a built-in architecture (workers/models.py); None otherwise."""
    name, out = arch.name, shape.n_outputs
    if name == "mlp":
        d, total = shape.vector_width, 0
        for _ in range(arch.depth):
            total += _linear(d, arch.width) + _norm(normalization, arch.width)
            d = arch.width
        return total + _linear(d, out)
    if name == "deep_linear":
        w = arch.width
        hidden = (arch.depth - 1) * w * w
        return shape.vector_width * w + hidden + w * out
    if name == "resmlp":
        w = arch.width
        block = _norm(normalization, w) + 2 * _linear(w, w)
        return (
            _linear(shape.vector_width, w)
            + arch.depth * block
            + _norm(normalization, w)
            + _linear(w, out)
        )
    if name == "cnn":
        c_in, total = shape.input_shape[0], 0
        for c in arch.channels:
            total += c_in * c * 9 + c + _norm(normalization, c)
            c_in = c
        return total + _linear(c_in, out)
    if name == "transformer":
        d, hidden = arch.d_model, arch.mlp_ratio * arch.d_model
        assert shape.vocab_size is not None  # transformers read token sequences only
        attention = _linear(d, 3 * d) + _linear(d, d)  # in_proj (q, k, v) and out_proj
        block = 2 * _norm(normalization, d) + attention + _linear(d, hidden) + _linear(hidden, d)
        return (
            shape.vocab_size * d
            + shape.input_shape[0] * d  # learned positions
            + arch.n_layers * block
            + _norm(normalization, d)
            + _linear(d, out)
        )
    return None


def probe_count(config: RunConfig) -> int:
    """The most probes a run can take: every N steps, plateau entries, and the end."""
    probes = config.probes
    n = 0
    if probes.every is not None:
        n += (config.budget.steps - 1) // probes.every
    if "plateau" in probes.at:
        n += probes.max_plateau_probes
    if "end" in probes.at:
        n += 1
    return n


def probe_work(config: RunConfig) -> tuple[int, int]:
    """(Hessian-vector products, loss evaluations) of one probe, at most."""
    probes = config.probes
    hvps, evaluations = 2, 0  # the gradient check
    if "eigenvalues" in probes.measure:
        hvps += probes.lanczos_max_steps
    if "trace" in probes.measure:
        hvps += probes.hutchinson_vectors
    if "density" in probes.measure:
        hvps += probes.slq_vectors * probes.slq_steps
    if "slices" in probes.measure:
        evaluations += SLICE_LINES * probes.slice_points + SLICE_POINTS_2D**2
    return hvps, evaluations


@dataclass(frozen=True)
class RunCost:
    parameters: int | None  # None: a plugin architecture or task, not estimated
    samples_per_step: int | None
    probes: int
    task_elements: int | None
    cost: float | None  # parameter-samples; None when the parameters are unknown

    def describe(self, steps: int) -> str:
        """The arithmetic of the estimate, for an error message."""
        probes = f" + {self.probes} probes" if self.probes else ""
        return (
            f"{self.parameters:,} parameters x {self.samples_per_step:,} samples x "
            f"{steps:,} steps{probes}"
        )


def run_cost(config: RunConfig) -> RunCost:
    """The estimated cost of one run (see the module docstring for the formula)."""
    shape = task_shape(config.task)
    n_train = train_size(config.task)
    n_probes = probe_count(config)
    if shape is None or n_train is None:
        return RunCost(None, None, n_probes, None, None)
    parameters = parameter_count(config.architecture, config.normalization, shape)
    batch = n_train if config.budget.full_batch else min(config.budget.batch_size, n_train)
    if parameters is None:
        return RunCost(None, batch, n_probes, shape.elements, None)
    hvps, evaluations = probe_work(config)
    probe_samples = min(config.probes.max_samples, n_train)
    per_probe = probe_samples * (2 * hvps + evaluations / 3)
    cost = parameters * (config.budget.steps * batch + n_probes * per_probe)
    return RunCost(parameters, batch, n_probes, shape.elements, float(cost))
