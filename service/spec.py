"""The sweep spec: a document (YAML or JSON) whose axes expand to a grid of RunConfigs.

Field names are the API's contract: name, task, architectures, optimizers, inits,
normalization, grad_clip, seeds, budget, target (plus loss, divergence, plateau, probes,
device, threads, dtype, owner, max_attempts). Axis entries may be written short: "orthogonal" for
{"name": "orthogonal"}, 1.0 for {"mode": "norm", "threshold": 1.0}, null for no clipping.
"""

from __future__ import annotations

import itertools
import json
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from workers.config import (
    TASK_LOSS,
    Budget,
    DefaultInit,
    Divergence,
    GradClip,
    InitConfig,
    Normalization,
    OptimizerConfig,
    PlateauThresholds,
    ProbeSpec,
    RunConfig,
    Target,
    batch_problem,
    compatibility_problem,
    named_entry,
    names_of,
)

if TYPE_CHECKING:
    # Unions built at import time from the built-ins and the installed plugins
    # (workers/plugins.py): no static type covers them, so mypy sees Any.
    TaskConfig = Any
    ArchConfig = Any
else:
    from workers.config import ArchConfig, TaskConfig

from service.suggest import unknown_name


class SpecError(ValueError):
    """A spec file that cannot be read or parsed (the CLI prints it and exits 2)."""


def printable(value: str) -> str:
    """A one-line text a database column and a page can hold: no control characters (NUL
    included: PostgreSQL's text refuses it) and no lone surrogates (not UTF-8)."""
    for i, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise ValueError(
                f"must not contain control characters or lone surrogates; found "
                f"{ascii(char)} at position {i}"
            )
    return value


# Free text a person chooses (names, owners, filters): printable, one line.
Label = Annotated[
    str,
    AfterValidator(printable),
    # The same in the schema, for clients (lone surrogates have no JSON-schema pattern).
    Field(json_schema_extra={"pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*$"}),
]

# The `owner` of a sweep or study spec (both spell it alike).
SpecOwner = Annotated[
    Annotated[Label, Field(min_length=1, max_length=200)] | None,
    Field(
        description="deprecated: the owner is the API key's user (a spec may repeat that "
        "name, nothing else); in single-user mode a free-text name, default 'anonymous'",
    ),
]


# --- registry names: "did you mean", and the short forms in the schema ------------------------

TASK_NAMES = names_of(TaskConfig)
ARCHITECTURE_NAMES = names_of(ArchConfig)
OPTIMIZER_NAMES = names_of(OptimizerConfig)
INIT_NAMES = names_of(InitConfig)
NORMALIZATIONS: tuple[str, ...] = get_args(get_args(Normalization)[0])
LossName = Literal["cross_entropy", "mse"]
LOSSES: tuple[str, ...] = get_args(LossName)


def known(kind: str, names: Sequence[str]) -> Callable[[Any], Any]:
    """A check that a name is one of `names`, refusing others with 'did you mean'."""

    def check(value: Any) -> Any:
        if isinstance(value, str) and value not in names:
            message = unknown_name(kind, value, names)
            raise PydanticCustomError("unknown_name", "{message}", {"message": message})
        return value

    return check


def registry_entry(kind: str, names: Sequence[str], *, short: bool) -> Callable[[Any], Any]:
    """Before a registry union (task, architecture, optimizer, init) validates an entry: a
    name alone stands for {"name": name} when `short`, and an unknown name is refused with
    'did you mean' at the entry's `name` (pydantic's own error would be "Input tag 'adma'
    found using 'name' does not match any of the expected tags")."""
    # The name is validated as a one-key document, so the error's location ends in "name".
    name_only = TypeAdapter(dict[str, Annotated[str, AfterValidator(known(kind, names))]])

    def validate(value: Any) -> Any:
        if short:
            value = named_entry(value)
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            name_only.validate_python({"name": value["name"]})
        return value

    return validate


def short_entry(kind: str, union: Any) -> Any:
    """A registry union that also takes a name alone ("orthogonal" for {"name": ...}), and
    says so in the schema: the name is a string with the registered names as examples (not
    an enum: plugins add names)."""
    names = names_of(union)
    name = Annotated[
        str,
        Field(description=f"short for {{name: ...}}: a registered {kind}", examples=list(names)),
    ]
    validator = registry_entry(kind, names, short=True)
    return Annotated[union, BeforeValidator(validator, json_schema_input_type=union | name)]


if TYPE_CHECKING:  # built at import time; what mypy sees is the validated type
    TaskEntry = Any
    ArchEntry = Any
    InitEntry = InitConfig
else:
    TaskEntry = short_entry("task", TaskConfig)
    ArchEntry = short_entry("architecture", ArchConfig)
    InitEntry = short_entry("init", InitConfig)
# An optimizer needs its lr: no short form.
OptimizerEntry = Annotated[
    OptimizerConfig, BeforeValidator(registry_entry("optimizer", OPTIMIZER_NAMES, short=False))
]
NormalizationEntry = Annotated[
    Normalization, BeforeValidator(known("normalization", NORMALIZATIONS))
]
Loss = Annotated[LossName, BeforeValidator(known("loss", LOSSES))]


# A grad_clip entry as written: a GradClip, a number (the norm threshold) or null.
ClipShort = (
    GradClip
    | Annotated[float, Field(gt=0, description="short for {mode: norm, threshold: ...}")]
    | None
)


def distinct(field: str, values: list[Any]) -> list[Any]:
    """`values`, if no two are equal once resolved (defaults filled in); else a ValueError
    naming both positions and the value: a repeated axis value repeats grid points."""
    documents = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in values]
    # The name first, where people look for it.
    documents = [
        {"name": d.pop("name"), **d} if isinstance(d, dict) and "name" in d else d
        for d in documents
    ]
    for i, document in enumerate(documents):
        if document in documents[:i]:
            first = documents.index(document)
            message = (
                f"{field}[{i}] repeats {field}[{first}] ({json.dumps(document)}): each value "
                "of an axis must differ, or the grid runs the same configuration twice"
            )
            raise PydanticCustomError("duplicate", "{message}", {"message": message})
    return values


def grid_limit() -> int:
    from service.settings import get_settings

    return get_settings().max_grid_runs


class SweepSpec(BaseModel):
    """A sweep request. The grid is the Cartesian product of the list-valued axes."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: Label = Field(
        min_length=1, max_length=200, description="a name for people", examples=["quickstart"]
    )
    owner: SpecOwner = None
    task: TaskEntry = Field(description="what to learn", examples=["digits"])
    architectures: list[ArchEntry] = Field(
        min_length=1, description="grid axis: the models", examples=[["mlp"]]
    )
    optimizers: list[OptimizerEntry] = Field(
        min_length=1,
        description="grid axis: the optimizers, each with its lr",
        examples=[[{"name": "sgd", "lr": 0.1, "momentum": 0.9}, {"name": "adam", "lr": 0.001}]],
    )
    # list[T](...): mypy infers no element type for a lambda against Field's union of
    # factory signatures; the parameterized call gives it one (and is a plain list).
    inits: list[InitEntry] = Field(
        default_factory=lambda: list[InitConfig]([DefaultInit()]),
        min_length=1,
        description="grid axis: the initializations",
        examples=[["default", "orthogonal", {"name": "normal", "std": 0.01}]],
    )
    normalization: list[NormalizationEntry] = Field(
        default_factory=lambda: list[Normalization](["none"]),
        min_length=1,
        description="grid axis: the normalization layers",
        examples=[["none", "batchnorm"]],
    )
    grad_clip: list[GradClip | None] = Field(
        default_factory=lambda: list[GradClip | None]([None]),
        min_length=1,
        description="grid axis: gradient clipping; null: none, a number: the global-norm "
        "threshold (short for {mode: norm, threshold: ...})",
        examples=[[None, 1.0]],
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0],
        min_length=1,
        description="grid axis: random seeds, each in [0, 2^31)",
        examples=[[0, 1, 2]],
    )
    budget: Budget = Field(default_factory=Budget, description="steps and batches of each run")
    target: Target = Field(default_factory=Target, description="the loss that counts as reached")
    loss: Loss | None = Field(
        None, description="training loss; null: the task's own (mse on class labels: one-hot)"
    )
    divergence: Divergence = Field(
        default_factory=Divergence, description="when a run is stopped as diverged"
    )
    plateau: PlateauThresholds = Field(
        default_factory=PlateauThresholds, description="the plateau detector's parameters"
    )
    probes: ProbeSpec = Field(
        default_factory=ProbeSpec, description="when and how to probe the loss landscape"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where runs train; auto: CUDA when the worker has it"
    )
    threads: int = Field(1, ge=1, le=256, description="torch intra-op threads per run on CPU")
    dtype: Literal["float32", "float64"] = Field("float32", description="parameter dtype")
    max_attempts: int | None = Field(
        None, ge=1, le=20, description="starts allowed per run; null: PLATEAU_MAX_ATTEMPTS"
    )

    @field_validator(
        "grad_clip",
        mode="before",
        json_schema_input_type=Annotated[list[ClipShort], Field(min_length=1)],
    )
    @classmethod
    def _clip_short(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        return [
            {"mode": "norm", "threshold": x}
            if isinstance(x, int | float) and not isinstance(x, bool)
            else x
            for x in v
        ]

    @field_validator("seeds")
    @classmethod
    def _seeds_range(cls, v: list[int]) -> list[int]:
        bad = [s for s in v if not 0 <= s < 2**31]
        if bad:
            raise ValueError(f"seeds must be in [0, 2^31); got {bad}")
        return v

    @field_validator("architectures", "optimizers", "inits", "normalization", "grad_clip", "seeds")
    @classmethod
    def _distinct(cls, v: list[Any], info: ValidationInfo) -> list[Any]:
        return distinct(str(info.field_name), v)

    @model_validator(mode="after")
    def _grid_is_runnable(self) -> SweepSpec:
        if self.loss == "cross_entropy" and TASK_LOSS.get(self.task.name) == "mse":
            raise ValueError(
                f"loss: 'cross_entropy' needs class labels; task '{self.task.name}' is a "
                "regression task (expected: mse)"
            )
        every = self.probes.every
        if every is not None and every >= self.budget.steps:
            raise ValueError(
                f"probes.every: {every} is not below budget.steps: {self.budget.steps}, so it "
                "would never probe; use probes.at: [end] for one probe at the end"
            )
        for i, arch in enumerate(self.architectures):
            for norm in self.normalization:
                problem = compatibility_problem(self.task.name, arch.name, norm) or batch_problem(
                    self.task, arch.name, norm, self.budget
                )
                if problem:
                    raise ValueError(f"architectures[{i}] with normalization '{norm}': {problem}")
        size, limit = self.grid_size(), grid_limit()
        if size > limit:
            raise ValueError(
                f"grid: {self.grid_shape()} = {size} runs, above the limit of {limit} "
                "(set PLATEAU_MAX_GRID_RUNS to raise it)"
            )
        return self

    def axes(self) -> dict[str, list[Any]]:
        return {
            "architectures": self.architectures,
            "normalization": self.normalization,
            "optimizers": self.optimizers,
            "inits": self.inits,
            "grad_clip": self.grad_clip,
            "seeds": self.seeds,
        }

    def grid_size(self) -> int:
        size = 1
        for values in self.axes().values():
            size *= len(values)
        return size

    def grid_shape(self) -> str:
        return " x ".join(f"{len(v)} {k}" for k, v in self.axes().items())

    def expand(self) -> list[RunConfig]:
        """One RunConfig per grid point, in a stable order (architectures vary slowest)."""
        return [
            self.run_config(arch, norm, opt, init, clip, seed)
            for arch, norm, opt, init, clip, seed in itertools.product(*self.axes().values())
        ]

    def run_config(
        self,
        arch: Any,
        norm: Normalization,
        opt: Any = None,
        init: Any = None,
        clip: GradClip | None = None,
        seed: int | None = None,
    ) -> RunConfig:
        """The run at one grid point; axes left out take their first value."""
        return RunConfig(
            architecture=arch,
            normalization=norm,
            optimizer=self.optimizers[0] if opt is None else opt,
            init=self.inits[0] if init is None else init,
            grad_clip=clip,
            seed=self.seeds[0] if seed is None else seed,
            task=self.task,
            budget=self.budget,
            target=self.target,
            loss=self.loss,
            divergence=self.divergence,
            plateau=self.plateau,
            probes=self.probes,
            device=self.device,
            threads=self.threads,
            dtype=self.dtype,
        )


def _yaml_problem(path: Path, e: yaml.YAMLError) -> str:
    """ "spec.yaml, line 3, column 1: not valid YAML/JSON: expected ',' or ']', but got
    '<stream end>' (in a flow sequence from line 2, column 7)": the file, not PyYAML's
    "<unicode string>", and lines and columns counted from 1."""
    if not isinstance(e, yaml.MarkedYAMLError) or e.problem_mark is None:
        return f"{path}: not valid YAML/JSON: {e}"
    mark = e.problem_mark
    message = f"{path}, line {mark.line + 1}, column {mark.column + 1}: not valid YAML/JSON: "
    message += e.problem or "cannot parse"
    if e.context and e.context_mark is not None:
        where = e.context_mark
        context = e.context.removeprefix("while parsing ").removeprefix("while scanning ")
        message += f" (in {context} from line {where.line + 1}, column {where.column + 1})"
    return message


def load_spec_document(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON spec file into a dict, with errors that name the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"cannot read spec file {path}: {e.strerror}") from e
    try:
        document = yaml.safe_load(text)  # JSON is YAML, so one parser serves both
    except yaml.YAMLError as e:
        raise SpecError(_yaml_problem(path, e)) from e
    if not isinstance(document, dict):
        raise SpecError(
            f"{path} must hold a mapping (name: ..., task: ...), not {type(document).__name__}"
        )
    return document
