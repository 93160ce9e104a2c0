"""The typed configuration of one training run: the contract between service/ and workers/.

Everything here is plain pydantic (no torch), so the API process can validate requests
without importing the training stack. Each registry entry (task, architecture, init,
optimizer, schedule) has a config model whose `name` field is the registry key; a request
chooses code only through these names.

A `RunConfig` is fully resolved: every default is filled in, so its JSON (and hash) is
the complete description of a run, and identical settings from different sweeps hash alike.
"""

from __future__ import annotations

import hashlib
import json
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workers.plugins import architecture_plugins, task_plugins

PositiveFloat = Annotated[float, Field(gt=0)]
# Fields that several configs share, described once.
NTrain = Annotated[int, Field(ge=16, le=200_000, description="training samples")]
NTest = Annotated[int, Field(ge=16, le=100_000, description="test samples")]
InputDim = Annotated[int, Field(ge=1, le=4096, description="dimension of an input")]
Noise = Annotated[float, Field(ge=0, description="std of the Gaussian noise added")]
Depth = Annotated[int, Field(ge=1, le=64, description="hidden layers")]
Width = Annotated[int, Field(ge=1, le=8192, description="units per hidden layer")]


def registry_name_required(schema: dict[str, Any]) -> None:
    """JSON schema of a registry entry: its `name` is required and described.

    `name` has a default in Python (DefaultInit() is the default init), but it is the tag
    of the discriminated unions below: a document without it matches no member, so the
    schema a client builds bodies from must say it is required."""
    name = schema.get("properties", {}).get("name")
    if name is None:
        return
    name.setdefault("description", "the registry name that chooses this entry")
    schema["required"] = ["name", *[f for f in schema.get("required", []) if f != "name"]]


class Strict(BaseModel):
    """Base for config models: unknown fields are errors, not silently ignored, and numbers
    are finite (JSON has no inf or NaN; Python's parser accepts `Infinity` all the same)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        json_schema_extra=registry_name_required,
    )


# --- tasks -----------------------------------------------------------------------------


class DigitsTask(Strict):
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes)."""

    name: Literal["digits"] = "digits"
    test_fraction: float = Field(0.2, gt=0, lt=1, description="fraction held out for testing")
    n_train: int | None = Field(
        None, ge=10, le=1797, description="train on the first N of the training split (all: null)"
    )

    @model_validator(mode="after")
    def _split_fits(self) -> DigitsTask:
        available = 1797 - split_test_size(1797, self.test_fraction)
        if available < 1:
            raise ValueError(
                f"test_fraction={self.test_fraction} leaves no training samples of the 1797"
            )
        if self.n_train is not None and self.n_train > available:
            raise ValueError(
                f"n_train={self.n_train} exceeds the {available} training samples left by "
                f"test_fraction={self.test_fraction}"
            )
        return self


class TeacherStudentTask(Strict):
    """Gaussian inputs, targets from a random soft-committee teacher (regression, MSE)."""

    name: Literal["teacher_student"] = "teacher_student"
    input_dim: InputDim = 20
    teacher_hidden: int = Field(4, ge=1, le=1024, description="hidden units of the teacher")
    n_train: NTrain = 2000
    n_test: NTest = 500
    noise: Noise = 0.0


class DeepLinearTask(Strict):
    """Learn y = A x with whitened x and A with the given singular values (MSE)."""

    name: Literal["deep_linear"] = "deep_linear"
    input_dim: InputDim = 16
    output_dim: int = Field(16, ge=1, le=4096, description="dimension of a target")
    singular_values: list[PositiveFloat] = Field(
        default_factory=lambda: [4.0, 2.0, 1.0, 0.5],
        description="singular values of A, one per mode (Saxe et al.'s s)",
    )
    n_train: NTrain = 1024
    n_test: NTest = 256

    @model_validator(mode="after")
    def _rank_fits(self) -> DeepLinearTask:
        if len(self.singular_values) > min(self.input_dim, self.output_dim):
            raise ValueError(
                f"singular_values has {len(self.singular_values)} entries; at most "
                f"min(input_dim, output_dim) = {min(self.input_dim, self.output_dim)} allowed"
            )
        # Each split is whitened by its own centred covariance, of rank at most n - 1: with
        # n <= input_dim some directions are scaled by 1/sqrt(1e-12) instead of whitened.
        for split in ("n_train", "n_test"):
            n = getattr(self, split)
            if n <= self.input_dim:
                raise ValueError(
                    f"{split}={n} samples cannot be whitened in input_dim={self.input_dim} "
                    f"dimensions: needs {split} > input_dim"
                )
        return self


class ParityTask(Strict):
    """n-bit (sparse) parity of +-1 inputs; label is the parity of the first k bits."""

    name: Literal["parity"] = "parity"
    n_bits: int = Field(10, ge=2, le=64, description="bits of an input")
    k: int | None = Field(None, ge=1, description="bits that decide the label (default: all)")
    n_train: NTrain = 2000
    n_test: NTest = 1000

    @model_validator(mode="after")
    def _k_fits(self) -> ParityTask:
        if self.k is not None and self.k > self.n_bits:
            raise ValueError(f"k={self.k} exceeds n_bits={self.n_bits}")
        return self


class SpiralsTask(Strict):
    """Two interleaved 2-D spirals, binary classification."""

    name: Literal["spirals"] = "spirals"
    turns: float = Field(1.5, gt=0, le=10, description="turns of each spiral")
    noise: Noise = 0.05
    n_train: NTrain = 1000
    n_test: NTest = 500


class ModularAdditionTask(Strict):
    """(a + b) mod p from the token pair (a, b); trained on a fraction of all p^2 pairs."""

    name: Literal["modular_addition"] = "modular_addition"
    p: int = Field(23, ge=2, le=512, description="the modulus")
    train_fraction: float = Field(0.5, gt=0, lt=1, description="fraction of pairs trained on")

    @model_validator(mode="after")
    def _split_fits(self) -> ModularAdditionTask:
        pairs = self.p**2
        if pairs - split_test_size(pairs, 1 - self.train_fraction) < 1:
            raise ValueError(
                f"train_fraction={self.train_fraction} of the p^2 = {pairs} pairs (p={self.p}) "
                f"leaves no training pair; it needs train_fraction > {0.5 / pairs:.3g}"
            )
        return self


def split_test_size(n: int, test_fraction: float) -> int:
    """Size of the test split of n samples (workers/tasks.py: `_split`): never empty."""
    return max(1, int(round(n * test_fraction)))


def train_size(task: Any) -> int | None:
    """Training samples of a built-in task (what `create_task` builds); None for plugins."""
    name = getattr(task, "name", None)
    if name == "digits":
        return task.n_train or 1797 - split_test_size(1797, task.test_fraction)
    if name == "modular_addition":
        return task.p**2 - split_test_size(task.p**2, 1 - task.train_fraction)
    if name in ("teacher_student", "deep_linear", "parity", "spirals"):
        return int(task.n_train)
    return None


BUILTIN_TASKS: tuple[type[BaseModel], ...] = (
    DigitsTask,
    TeacherStudentTask,
    DeepLinearTask,
    ParityTask,
    SpiralsTask,
    ModularAdditionTask,
)
# Built-ins plus the configs of installed plugins (workers/plugins.py), one discriminated union.
TaskConfig = Annotated[
    typing.Union[BUILTIN_TASKS + tuple(p.config for p in task_plugins().values())],  # noqa: UP007
    Field(discriminator="name"),
]

# The loss each built-in task trains with unless the spec says `loss:`. Classification tasks
# (cross_entropy) may also train with MSE on one-hot targets, as landscape papers often do.
TASK_LOSS: dict[str, str] = {
    "digits": "cross_entropy",
    "teacher_student": "mse",
    "deep_linear": "mse",
    "parity": "cross_entropy",
    "spirals": "cross_entropy",
    "modular_addition": "cross_entropy",
}

# What a task's inputs look like decides which architectures can read them.
TASK_INPUT_KIND: dict[str, str] = {
    "digits": "image",
    "teacher_student": "vector",
    "deep_linear": "vector",
    "parity": "vector",
    "spirals": "vector",
    "modular_addition": "sequence",
}


# --- verdicts (workers/diagnose.py applies the rules; here, torch-free, for the API) -------

Verdict = Literal[
    "converged",
    "local_minimum",
    "saddle",
    "plateau",
    "diverged",
    "still_improving",
    "edge_of_stability",
    "unstable",
    "inconclusive",
]


# --- architectures ---------------------------------------------------------------------

Activation = Annotated[
    Literal["relu", "tanh", "gelu", "linear"], Field(description="nonlinearity between layers")
]
Normalization = Annotated[
    Literal["none", "batchnorm", "layernorm"], Field(description="normalization layers")
]


class MLPArch(Strict):
    """Fully connected net: `depth` hidden layers of `width`, Linear -> norm -> activation."""

    name: Literal["mlp"] = "mlp"
    depth: Depth = 2
    width: Width = 64
    activation: Activation = "relu"


class DeepLinearArch(Strict):
    """An MLP without nonlinearity or biases: the classic model of staged learning."""

    name: Literal["deep_linear"] = "deep_linear"
    depth: Depth = 4
    width: Width = 32


class ResMLPArch(Strict):
    """Residual MLP: x + W2 act(W1 norm(x)) blocks between an input and output projection."""

    name: Literal["resmlp"] = "resmlp"
    depth: int = Field(4, ge=1, le=64, description="number of residual blocks")
    width: Width = 64
    activation: Activation = "relu"


class CNNArch(Strict):
    """Small convnet for image tasks: conv blocks of `channels`, global average pool, linear."""

    name: Literal["cnn"] = "cnn"
    channels: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=lambda: [16, 32],
        min_length=1,
        max_length=8,
        description="output channels of each conv block",
    )
    activation: Activation = "relu"


class TransformerArch(Strict):
    """Tiny pre-norm decoder-style transformer reading a token sequence, predicting the last."""

    name: Literal["transformer"] = "transformer"
    d_model: int = Field(64, ge=4, le=2048, description="width of the residual stream")
    n_heads: int = Field(4, ge=1, le=64, description="attention heads (divide d_model)")
    n_layers: int = Field(1, ge=1, le=16, description="transformer blocks")
    mlp_ratio: int = Field(4, ge=1, le=16, description="MLP width / d_model")

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerArch:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        return self


BUILTIN_ARCHITECTURES: tuple[type[BaseModel], ...] = (
    MLPArch,
    DeepLinearArch,
    ResMLPArch,
    CNNArch,
    TransformerArch,
)
ArchConfig = Annotated[
    typing.Union[  # noqa: UP007
        BUILTIN_ARCHITECTURES + tuple(p.config for p in architecture_plugins().values())
    ],
    Field(discriminator="name"),
]

# Which input kinds each architecture reads (see TASK_INPUT_KIND). An image is also a
# vector once flattened; a token sequence is a vector once one-hot encoded.
ARCH_INPUT_KINDS: dict[str, set[str]] = {
    "mlp": {"vector", "image", "sequence"},
    "deep_linear": {"vector", "image"},
    "resmlp": {"vector", "image", "sequence"},
    "cnn": {"image"},
    "transformer": {"sequence"},
}
ARCH_NORMALIZATIONS: dict[str, set[str]] = {
    "mlp": {"none", "batchnorm", "layernorm"},
    # Normalizing a deep linear net makes it a different (nonlinear in training) model, which
    # defeats its purpose as the analytically understood plateau model.
    "deep_linear": {"none"},
    "resmlp": {"none", "batchnorm", "layernorm"},
    "cnn": {"none", "batchnorm", "layernorm"},
    # Attention over 2-3 tokens with batch statistics is not a model anyone trains.
    "transformer": {"none", "layernorm"},
}
TASK_INPUT_KIND.update({n: p.input_kind for n, p in task_plugins().items()})
ARCH_INPUT_KINDS.update({n: set(p.input_kinds) for n, p in architecture_plugins().items()})
ARCH_NORMALIZATIONS.update({n: set(p.normalizations) for n, p in architecture_plugins().items()})


# --- initializations -------------------------------------------------------------------


class _Init(Strict):
    scale: PositiveFloat = Field(1.0, description="multiplies every initialized weight")
    zeros_bias: bool = Field(False, description="set all biases to zero after init")


class DefaultInit(_Init):
    name: Literal["default"] = "default"


class XavierUniformInit(_Init):
    """Glorot & Bengio (2010): U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))."""

    name: Literal["xavier_uniform"] = "xavier_uniform"
    gain: PositiveFloat = Field(1.0, description="Glorot's gain; 1 as in the paper")


class XavierNormalInit(_Init):
    """Glorot & Bengio (2010): N(0, gain^2 * 2 / (fan_in + fan_out))."""

    name: Literal["xavier_normal"] = "xavier_normal"
    gain: PositiveFloat = Field(1.0, description="Glorot's gain; 1 as in the paper")


class KaimingUniformInit(_Init):
    name: Literal["kaiming_uniform"] = "kaiming_uniform"
    mode: Literal["fan_in", "fan_out"] = Field("fan_in", description="fan that sets the variance")


class KaimingNormalInit(_Init):
    name: Literal["kaiming_normal"] = "kaiming_normal"
    mode: Literal["fan_in", "fan_out"] = Field("fan_in", description="fan that sets the variance")


class LecunNormalInit(_Init):
    name: Literal["lecun_normal"] = "lecun_normal"


class OrthogonalInit(_Init):
    name: Literal["orthogonal"] = "orthogonal"


class NormalInit(_Init):
    name: Literal["normal"] = "normal"
    std: PositiveFloat = Field(0.01, description="standard deviation")


class UniformInit(_Init):
    name: Literal["uniform"] = "uniform"
    bound: PositiveFloat = Field(0.05, description="U(-bound, bound)")


class SaddleInit(_Init):
    """A two-layer deep linear net (`deep_linear`, depth 1) placed exactly on a strict
    saddle of the deep_linear task: the singular modes of A listed in `modes` already
    learned (balanced: sqrt(s) into and out of one hidden unit each), the others not. Leave
    out a mode stronger than one listed and the point is a saddle, not a minimum: the
    full-batch gradient is zero (the inputs are whitened exactly), each sample's is not,
    and the Hessian's most negative eigenvalue is minus the strongest missing mode's
    singular value (tests/workers/test_saddle_init.py checks both against a dense Hessian)."""

    name: Literal["saddle"] = "saddle"
    modes: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [0, 2],
        min_length=1,
        description="indices of the singular modes of A the net starts with (0: strongest)",
    )

    @field_validator("modes")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"modes repeat a mode: {v}")
        return v


# Version of each init's definition. It is part of `config_key`, so runs made under an older
# definition never pool with runs of the current one. Version 1: every init up to 2026-11
# (xavier_* then multiplied by the activation's gain, which on ReLU nets is He's variance).
# Version 2 of xavier_*: Glorot & Bengio's, gain 1 unless the spec sets `gain`.
INIT_VERSION: dict[str, int] = {"xavier_uniform": 2, "xavier_normal": 2}
LEGACY_INIT_VERSION = 1

InitConfig = Annotated[
    DefaultInit
    | XavierUniformInit
    | XavierNormalInit
    | KaimingUniformInit
    | KaimingNormalInit
    | LecunNormalInit
    | OrthogonalInit
    | NormalInit
    | UniformInit
    | SaddleInit,
    Field(discriminator="name"),
]


# --- optimizers and schedules ----------------------------------------------------------


class ConstantSchedule(Strict):
    name: Literal["constant"] = "constant"


class CosineSchedule(Strict):
    """Cosine decay from lr to lr * min_factor over the budget."""

    name: Literal["cosine"] = "cosine"
    min_factor: float = Field(0.0, ge=0, le=1, description="final lr = lr * min_factor")


class WarmupSchedule(Strict):
    """Linear warmup over `warmup_steps`, then constant or cosine decay."""

    name: Literal["linear_warmup"] = "linear_warmup"
    warmup_steps: int = Field(100, ge=1, description="steps of linear warmup from 0 to lr")
    then: Literal["constant", "cosine"] = Field("cosine", description="the schedule after")
    min_factor: float = Field(0.0, ge=0, le=1, description="final lr = lr * min_factor")


ScheduleConfig = Annotated[
    ConstantSchedule | CosineSchedule | WarmupSchedule, Field(discriminator="name")
]


Beta1 = Annotated[float, Field(ge=0, lt=1, description="decay of the first moment")]
Beta2 = Annotated[float, Field(ge=0, lt=1, description="decay of the second moment")]
Eps = Annotated[float, Field(gt=0, description="added to the denominator")]
Momentum = Annotated[float, Field(ge=0, lt=1, description="momentum coefficient")]
WeightDecay = Annotated[float, Field(ge=0, description="weight decay coefficient")]


class _Optim(Strict):
    lr: PositiveFloat = Field(description="learning rate", examples=[0.1, 0.001])
    weight_decay: WeightDecay = 0.0
    schedule: ScheduleConfig = Field(
        default_factory=ConstantSchedule, description="how the lr changes over the budget"
    )


class SGDOptim(_Optim):
    name: Literal["sgd"] = "sgd"
    momentum: Momentum = 0.0
    nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0)")

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDOptim:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=true needs momentum > 0")
        return self


class AdamOptim(_Optim):
    name: Literal["adam"] = "adam"
    beta1: Beta1 = 0.9
    beta2: Beta2 = 0.999
    eps: Eps = 1e-8


class AdamWOptim(_Optim):
    name: Literal["adamw"] = "adamw"
    beta1: Beta1 = 0.9
    beta2: Beta2 = 0.999
    eps: Eps = 1e-8
    weight_decay: WeightDecay = 0.01


class RMSpropOptim(_Optim):
    name: Literal["rmsprop"] = "rmsprop"
    alpha: float = Field(0.99, gt=0, lt=1, description="decay of the squared-gradient average")
    momentum: Momentum = 0.0
    eps: Eps = 1e-8


class AdagradOptim(_Optim):
    name: Literal["adagrad"] = "adagrad"
    eps: Eps = 1e-10


OptimizerConfig = Annotated[
    SGDOptim | AdamOptim | AdamWOptim | RMSpropOptim | AdagradOptim,
    Field(discriminator="name"),
]


# --- clipping, budget, target, probes --------------------------------------------------


class GradClip(Strict):
    """`norm`: rescale so the global L2 norm is at most threshold; `value`: clamp each entry."""

    mode: Literal["norm", "value"] = Field("norm", description="clip the global norm or entries")
    threshold: PositiveFloat = Field(description="the largest norm (or entry) let through")


class Budget(Strict):
    steps: int = Field(500, ge=1, le=1_000_000, description="training steps")
    batch_size: int = Field(
        128,
        ge=1,
        le=65_536,
        description="minibatch size, drawn with replacement (ignored with full_batch)",
    )
    full_batch: bool = Field(
        False, description="exact gradient descent: every step uses the whole training set"
    )
    log_every: int = Field(1, ge=1, description="record per-step evidence every k steps")
    eval_every: int = Field(50, ge=1, description="evaluate on the test split every m steps")


class Target(Strict):
    loss: PositiveFloat = Field(0.1, description="training loss that counts as 'reached'")


class PlateauThresholds(Strict):
    """Parameters of the plateau detector (workers/plateau.py), stored with each result.

    What is measured, not what is trained: they are not part of `config_key`.
    """

    # Defaults (2026-12): found every plateau of examples/deep_linear_init_scale.yaml and the
    # ~150-step first plateau of a scale-0.35 deep linear net, where window 50 / 1 % / 100
    # steps missed them under minibatch noise of +-4 % (tests/workers/test_plateau.py).
    window: int = Field(25, ge=2, description="steps over which relative progress is measured")
    rel_improvement: float = Field(
        0.02, gt=0, lt=1, description="a window improving the loss by less than this is flat"
    )
    min_length: int = Field(50, ge=1, description="shortest plateau that counts, in steps")
    band: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="a plateau lasts while the smoothed loss stays within level * (1 +- band); "
        "escaped when it later falls below level * (1 - band)",
    )
    smoothing: float = Field(0.9, ge=0, lt=1, description="EMA factor applied to the loss")

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        # Configs stored before 2026-12 carry escape_factor (replaced by band) and
        # divergence_factor (moved to RunConfig.divergence); accept and drop them.
        if isinstance(data, dict):
            legacy = ("escape_factor", "divergence_factor")
            data = {k: v for k, v in data.items() if k not in legacy}
        return data


class Divergence(Strict):
    """When a run is stopped as diverged (workers/train.py).

    Non-finite loss stops it at once. Otherwise a run diverges when its training loss stays
    above `factor` times its first step's loss (the loss at initialization) for `patience`
    consecutive steps; `diverged_step` is the first of them. Defaults: a healthy run never
    sits at 10x its initial loss (cross-entropy starts near ln C and only falls), while a
    catapult spike (Lewkowycz et al. 2020) returns within a few steps; 20 steps tells them apart.
    """

    factor: float = Field(10.0, gt=1, description="loss above factor x its first value ...")
    patience: int = Field(20, ge=1, le=100_000, description="... for this many steps in a row")


class ProbeSpec(Strict):
    """When to probe the loss landscape, and how much each probe may cost."""

    at: list[Literal["end", "plateau"]] = Field(
        default_factory=list, description="probe at the end, and/or on entering a plateau"
    )
    every: int | None = Field(None, ge=1, description="also probe every N steps")
    max_plateau_probes: int = Field(
        3, ge=0, le=100, description="probe at most this many plateau entries per run"
    )
    measure: list[Literal["eigenvalues", "trace", "density", "slices"]] = Field(
        default_factory=lambda: ["eigenvalues", "trace", "density", "slices"],
        min_length=1,
        description="which probes run; [eigenvalues] alone costs only its Lanczos steps",
    )
    k: int = Field(3, ge=1, le=50, description="extreme eigenvalues at each end")
    lanczos_steps: int = Field(
        40,
        ge=2,
        le=1000,
        description="Lanczos steps to start with; more are taken, up to "
        "lanczos_max_steps, until the k extreme eigenvalues converge",
    )
    lanczos_max_steps: int = Field(300, ge=2, le=5000, description="most Lanczos steps")
    trace_method: Literal["auto", "hutchinson", "hutchpp", "xtrace"] = Field(
        "auto", description="trace estimator (workers/probes/__init__.py says what auto picks)"
    )
    hutchinson_vectors: int = Field(
        20,
        ge=2,
        le=10_000,
        description="matrix-vector products of the trace estimate (>= 2 for a standard error)",
    )
    slq_vectors: int = Field(4, ge=2, le=200, description="random vectors of the SLQ density")
    slq_steps: int = Field(30, ge=2, le=500, description="Lanczos steps per SLQ vector")
    slice_points: int = Field(21, ge=3, le=201, description="points along each loss slice")
    max_samples: int = Field(2048, ge=16, description="probe batch: first N training samples")
    mode: Literal["eval", "train"] = Field(
        "eval", description="model mode while probing (BatchNorm uses running stats in eval)"
    )

    @model_validator(mode="after")
    def _steps_fit(self) -> ProbeSpec:
        if self.lanczos_max_steps < self.lanczos_steps:
            raise ValueError(
                f"lanczos_max_steps={self.lanczos_max_steps} is below "
                f"lanczos_steps={self.lanczos_steps}"
            )
        return self


class RunConfig(Strict):
    """One fully resolved run: what the worker needs and what the config hash covers."""

    task: TaskConfig
    architecture: ArchConfig
    normalization: Normalization = "none"
    init: InitConfig = Field(default_factory=DefaultInit)
    optimizer: OptimizerConfig
    grad_clip: GradClip | None = None
    loss: Literal["cross_entropy", "mse"] | None = Field(
        None,
        description="training loss; null: the task's own (mse on a classification task uses "
        "one-hot targets)",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)
    budget: Budget = Field(default_factory=Budget)
    target: Target = Field(default_factory=Target)
    divergence: Divergence = Field(default_factory=Divergence)
    plateau: PlateauThresholds = Field(default_factory=PlateauThresholds)
    probes: ProbeSpec = Field(default_factory=ProbeSpec)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(1, ge=1, le=256, description="torch intra-op threads on CPU")
    dtype: Literal["float32", "float64"] = "float32"

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        # Configs stored before 2026-12 kept the divergence factor among the plateau settings.
        plateau = data.get("plateau")
        legacy = isinstance(plateau, dict) and "divergence_factor" in plateau
        if legacy and "divergence" not in data:
            data["divergence"] = {"factor": plateau["divergence_factor"]}
        # A resolved config names its loss, so equal trainings hash equal however written.
        task = data.get("task")
        task_name = task.get("name") if isinstance(task, dict) else getattr(task, "name", None)
        if data.get("loss") is None and task_name in TASK_LOSS:
            data["loss"] = TASK_LOSS[task_name]
        return data

    @model_validator(mode="after")
    def _compatible(self) -> RunConfig:
        problem = compatibility_problem(
            self.task.name, self.architecture.name, self.normalization
        ) or batch_problem(self.task, self.architecture.name, self.normalization, self.budget)
        if problem:
            raise ValueError(problem)
        if self.init.name == "saddle":
            problem = saddle_problem(self)
            if problem:
                raise ValueError(problem)
        if self.loss == "cross_entropy" and TASK_LOSS.get(self.task.name) == "mse":
            raise ValueError(
                f"loss 'cross_entropy' needs class labels; task '{self.task.name}' is a "
                "regression task (expected loss: mse)"
            )
        return self

    def config_hash(self) -> str:
        """sha256 of the canonical JSON: equal settings hash equal across sweeps."""
        return config_hash(self.model_dump(mode="json"))

    def config_key(self) -> str:
        """Hash of what changes the training, seed excluded: see `key_document`."""
        return config_key(self.model_dump(mode="json"))


def saddle_problem(config: RunConfig) -> str | None:
    """Why the saddle init cannot place this run's net, or None."""
    init, task, arch = config.init, config.task, config.architecture
    assert isinstance(init, SaddleInit)
    if task.name != "deep_linear" or arch.name != "deep_linear" or arch.depth != 1:
        return (
            "init 'saddle' places a two-layer deep linear net on the deep_linear task: "
            "needs task deep_linear and architecture deep_linear with depth 1"
        )
    assert isinstance(task, DeepLinearTask) and isinstance(arch, DeepLinearArch)
    if max(init.modes) >= len(task.singular_values):
        return (
            f"init 'saddle': mode {max(init.modes)} does not exist; the task has "
            f"{len(task.singular_values)} singular values (modes 0-{len(task.singular_values) - 1})"
        )
    if len(init.modes) > arch.width:
        return f"init 'saddle': {len(init.modes)} modes need width >= {len(init.modes)}"
    if init.scale != 1.0:
        return "init 'saddle': scale must be 1 (any other scale moves the net off the saddle)"
    return None


def compatibility_problem(task: str, architecture: str, normalization: str) -> str | None:
    """Why this task / architecture / normalization combination cannot run, or None."""
    kind = TASK_INPUT_KIND.get(task)
    readable = ARCH_INPUT_KINDS.get(architecture)
    if kind is not None and readable is not None and kind not in readable:
        return (
            f"architecture '{architecture}' cannot read the {kind} inputs of task '{task}'; "
            f"architectures for {kind} inputs: "
            + ", ".join(sorted(a for a, kinds in ARCH_INPUT_KINDS.items() if kind in kinds))
        )
    allowed = ARCH_NORMALIZATIONS.get(architecture)
    if allowed is not None and normalization not in allowed:
        return (
            f"normalization '{normalization}' is not offered for architecture "
            f"'{architecture}'; expected one of: {', '.join(sorted(allowed))}"
        )
    return None


# Architectures whose BatchNorm is BatchNorm1d over (batch, features): in training mode it
# needs two samples or more ("Expected more than 1 value per channel when training").
BATCHNORM_1D_ARCHITECTURES = {"mlp", "resmlp"}


def batch_problem(task: Any, architecture: str, normalization: str, budget: Budget) -> str | None:
    """Why BatchNorm cannot train on batches this small, or None. (A probe's batch, the first
    min(max_samples, n_train) >= 16 samples, is then never smaller.)"""
    if normalization != "batchnorm" or architecture not in BATCHNORM_1D_ARCHITECTURES:
        return None
    n_train = train_size(task)
    if budget.full_batch:
        batch, source = n_train, f"full_batch over {n_train} training samples"
    else:  # workers/train.py draws min(batch_size, n_train) samples per step
        batch = budget.batch_size if n_train is None else min(budget.batch_size, n_train)
        source = f"budget.batch_size {budget.batch_size}" + (
            f" of a task with {n_train} training samples"
            if n_train is not None and n_train < budget.batch_size
            else ""
        )
    if batch is not None and batch < 2:
        return f"normalization 'batchnorm' needs batches of 2 or more samples; {source}"
    return None


def names_of(union: Any) -> tuple[str, ...]:
    """The registry names of a discriminated union of config models (e.g. InitConfig)."""
    members = typing.get_args(typing.get_args(union)[0])
    return tuple(m.model_fields["name"].default for m in members)


def named_entry(value: Any) -> Any:
    """An axis entry written short ("orthogonal") as its config document ({"name": ...})."""
    return {"name": value} if isinstance(value, str) else value


def config_hash(document: dict[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# What changes the training, and so what a configuration (a leaderboard row) is. Everything
# else in a RunConfig is how it is measured or executed (probes, plateau detector, log and
# eval cadence, threads, device) or the seed, which a configuration pools over.
KEY_FIELDS = (
    "task",
    "architecture",
    "normalization",
    "init",
    "optimizer",
    "grad_clip",
    "loss",
    "budget",
    "dtype",
    "divergence",
    "target",
)
KEY_BUDGET_FIELDS = ("steps", "batch_size", "full_batch")


def key_document(document: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config (its JSON) that `config_key` hashes.

    The init carries the version of its definition (INIT_VERSION); with full-batch training
    the batch size means nothing and is left out.
    """
    doc = {k: document[k] for k in KEY_FIELDS if k in document}
    budget = {k: doc["budget"][k] for k in KEY_BUDGET_FIELDS if k in doc.get("budget", {})}
    if budget.get("full_batch"):
        budget.pop("batch_size", None)
    doc["budget"] = budget
    init = dict(doc.get("init") or {"name": "default"})
    init["version"] = INIT_VERSION.get(init["name"], LEGACY_INIT_VERSION)
    doc["init"] = init
    return doc


def config_key(document: dict[str, Any]) -> str:
    """Hash of `key_document(document)`: the runs of one configuration over seeds share it."""
    return config_hash(key_document(document))
