"""The sweep spec: a document (YAML or JSON) whose axes expand to a grid of RunConfigs.

Field names are the API's contract: name, task, architectures, optimizers, inits,
normalization, grad_clip, seeds, budget, target (plus loss, divergence, plateau, probes,
device, threads, dtype, owner, max_attempts). Axis entries may be written short: "orthogonal" for
{"name": "orthogonal"}, 1.0 for {"mode": "norm", "threshold": 1.0}, null for no clipping.
"""

from __future__ import annotations

import itertools
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

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
)

if TYPE_CHECKING:
    # Unions built at import time from the built-ins and the installed plugins
    # (workers/plugins.py): no static type covers them, so mypy sees Any.
    TaskConfig = Any
    ArchConfig = Any
else:
    from workers.config import ArchConfig, TaskConfig


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
Label = Annotated[str, AfterValidator(printable)]

# The `owner` of a sweep or study spec (both spell it alike).
SpecOwner = Annotated[
    Annotated[Label, Field(min_length=1, max_length=200)] | None,
    Field(
        description="deprecated: the owner is the API key's user (a spec may repeat that "
        "name, nothing else); in single-user mode a free-text name, default 'anonymous'",
    ),
]


def grid_limit() -> int:
    from service.settings import get_settings

    return get_settings().max_grid_runs


class SweepSpec(BaseModel):
    """A sweep request. The grid is the Cartesian product of the list-valued axes."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: Label = Field(min_length=1, max_length=200)
    owner: SpecOwner = None
    task: TaskConfig
    architectures: list[ArchConfig] = Field(min_length=1)
    optimizers: list[OptimizerConfig] = Field(min_length=1)
    # list[T](...): mypy infers no element type for a lambda against Field's union of
    # factory signatures; the parameterized call gives it one (and is a plain list).
    inits: list[InitConfig] = Field(
        default_factory=lambda: list[InitConfig]([DefaultInit()]), min_length=1
    )
    normalization: list[Normalization] = Field(
        default_factory=lambda: list[Normalization](["none"]), min_length=1
    )
    grad_clip: list[GradClip | None] = Field(
        default_factory=lambda: list[GradClip | None]([None]), min_length=1
    )
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    budget: Budget = Field(default_factory=Budget)
    target: Target = Field(default_factory=Target)
    loss: Literal["cross_entropy", "mse"] | None = Field(
        None, description="training loss; null: the task's own (mse on class labels: one-hot)"
    )
    divergence: Divergence = Field(default_factory=Divergence)
    plateau: PlateauThresholds = Field(default_factory=PlateauThresholds)
    probes: ProbeSpec = Field(default_factory=ProbeSpec)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(1, ge=1, le=256)
    dtype: Literal["float32", "float64"] = "float32"
    max_attempts: int | None = Field(None, ge=1, le=20)

    @field_validator("task", mode="before")
    @classmethod
    def _task_short(cls, v: Any) -> Any:
        return named_entry(v)

    @field_validator("architectures", "inits", mode="before")
    @classmethod
    def _names_short(cls, v: Any) -> Any:
        return [named_entry(x) for x in v] if isinstance(v, list) else v

    @field_validator("grad_clip", mode="before")
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
