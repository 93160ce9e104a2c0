"""The study spec: an Optuna search over initialization, clipping, normalization (and
optionally lr and optimizer) for a fixed task and architecture.

Field names are the API's contract: name, task, architecture, fixed, search_space,
objective, n_trials, parallelism, sampler, pruner, enqueue (trials with given parameters,
asked before the sampler's). Every trial becomes an ordinary run (service/studies.py);
`to_run_config` is the one place trial parameters become a config.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from service.spec import (
    INIT_NAMES,
    OPTIMIZER_NAMES,
    ArchEntry,
    InitEntry,
    Label,
    NormalizationEntry,
    OptimizerEntry,
    SpecOwner,
    TaskEntry,
    distinct,
    known,
)
from workers.config import (
    Budget,
    DefaultInit,
    Normalization,
    PlateauThresholds,
    ProbeSpec,
    RunConfig,
    Target,
    batch_problem,
    compatibility_problem,
)

MAX_TRIALS = 500
InitName = Annotated[
    str, BeforeValidator(known("init", INIT_NAMES)), Field(examples=list(INIT_NAMES))
]
OptimizerName = Annotated[
    str, BeforeValidator(known("optimizer", OPTIMIZER_NAMES)), Field(examples=list(OPTIMIZER_NAMES))
]
Objective = Literal["steps_to_target", "plateau_fraction", "final_loss"]
SINGLE_OBJECTIVE_SAMPLERS = {"cmaes"}


def _pair_or_object(schema: dict[str, Any]) -> None:
    """LogRange's JSON schema: the object, or the [low, high] pair the README writes."""
    as_object = {k: v for k, v in schema.items() if k not in ("title", "description")}
    for key in as_object:
        del schema[key]
    positive = {"type": "number", "exclusiveMinimum": 0}
    pair = {"type": "array", "prefixItems": [positive, positive], "minItems": 2, "maxItems": 2}
    schema["anyOf"] = [as_object, {**pair, "description": "[low, high]", "examples": [[0.05, 1.0]]}]


class LogRange(BaseModel):
    """A log-uniform range [low, high] with 0 < low < high; written as a 2-list."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, json_schema_extra=_pair_or_object
    )
    low: float = Field(gt=0, description="lower end, > 0", examples=[0.05])
    high: float = Field(gt=0, description="upper end, > low", examples=[1.0])

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):
            if len(v) != 2:
                raise ValueError(f"a range is [low, high]; got {len(v)} values")
            return {"low": v[0], "high": v[1]}
        return v

    @model_validator(mode="after")
    def _ordered(self) -> LogRange:
        if not self.low < self.high:
            raise ValueError(f"empty or inverted range [{self.low}, {self.high}]: need low < high")
        return self


class SearchSpace(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    init: list[InitName] = Field(
        default_factory=lambda: ["default"], min_length=1, description="init schemes to try"
    )
    init_scale: LogRange | None = Field(
        None, description="range of the init's scale, sampled log-uniformly; null: 1"
    )
    # list[T](...): mypy infers no element type for a lambda against Field's union of
    # factory signatures; the parameterized call gives it one (and is a plain list).
    grad_clip: list[Literal["norm", "value"] | None] = Field(
        default_factory=lambda: list[Literal["norm", "value"] | None]([None]),
        min_length=1,
        description="clipping modes to try; null: no clipping",
    )
    grad_clip_threshold: LogRange = Field(
        default_factory=lambda: LogRange(low=0.1, high=10.0),
        description="range of the clipping threshold, sampled log-uniformly",
    )
    normalization: list[NormalizationEntry] = Field(
        default_factory=lambda: list[Normalization](["none"]),
        min_length=1,
        description="normalizations to try",
    )
    lr: LogRange | None = Field(None, description="range of the lr; null: fixed.optimizer's")
    optimizer: list[OptimizerName] | None = Field(
        None, min_length=1, description="optimizers to try (with fixed.optimizer's lr); null: it"
    )

    @field_validator("init", "grad_clip", "normalization", "optimizer")
    @classmethod
    def _distinct(cls, v: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
        return None if v is None else distinct(f"search_space.{info.field_name}", v)


class Fixed(BaseModel):
    """Settings every trial shares; `init` is also the baseline the best trial is compared to."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    optimizer: OptimizerEntry = Field(description="the optimizer, with its lr")
    budget: Budget = Field(default_factory=Budget, description="steps and batches of a trial")
    target: Target = Field(default_factory=Target, description="the loss that counts as reached")
    plateau: PlateauThresholds = Field(
        default_factory=PlateauThresholds, description="the plateau detector's parameters"
    )
    probes: ProbeSpec = Field(default_factory=ProbeSpec, description="landscape probes")
    init: InitEntry = Field(
        default_factory=DefaultInit, description="the init, and the baseline of the comparison"
    )
    normalization: NormalizationEntry = Field("none", description="normalization layers")
    seed: int = Field(0, ge=0, lt=2**31, description="seed of every trial")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where trials train")
    dtype: Literal["float32", "float64"] = Field("float32", description="parameter dtype")


class SamplerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    name: Literal["tpe", "random", "grid", "cmaes", "nsga2"] = Field(
        "tpe", description="Optuna's sampler"
    )
    seed: int = Field(0, ge=0, lt=2**31, description="the sampler's seed")
    grid_points: int = Field(4, ge=2, le=50, description="values per range for the grid sampler")


OPTUNA_PRUNER_FIELDS = {"n_startup_trials", "n_warmup_steps"}


class PrunerSpec(BaseModel):
    """median / hyperband: Optuna's, over intermediate values (n_startup_trials,
    n_warmup_steps). plateau: stop a trial that has sat on one plateau for longer than
    `slack` times the best complete trial's steps to target (rule and why in workers/trial.py).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    name: Literal["none", "median", "hyperband", "plateau"] = Field(
        "none", description="the pruner; none: trials run to their budget"
    )
    n_startup_trials: int = Field(5, ge=0, description="median/hyperband: trials never pruned")
    n_warmup_steps: int = Field(0, ge=0, description="median/hyperband: steps never pruned")
    slack: float = Field(
        1.0,
        ge=1.0,
        description="plateau pruner: prune past slack * the best steps to target; below 1 it "
        "could prune a trial that would have beaten the best",
    )

    @model_validator(mode="after")
    def _fields_of_the_pruner(self) -> PrunerSpec:
        if self.name == "none":
            return self
        own = {"slack"} if self.name == "plateau" else OPTUNA_PRUNER_FIELDS
        defaults = {f: info.default for f, info in type(self).model_fields.items()}
        # Only a value other than the default is refused: stored specs carry every field.
        other = sorted(
            f for f in defaults.keys() - own - {"name"} if getattr(self, f) != defaults[f]
        )
        if other:
            raise ValueError(
                f"pruner.{other[0]} is not a setting of pruner '{self.name}', which takes: "
                + ", ".join(sorted(own))
            )
        return self


class FixedTrial(BaseModel):
    """A trial with given parameters, asked before the sampler's (Optuna's enqueue_trial).

    Parameters left out are sampled; `grad_clip: null` (or "none") means no clipping.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    init: InitName | None = Field(None, description="the init scheme")
    init_scale: float | None = Field(None, gt=0, description="the init's scale")
    grad_clip: Literal["norm", "value", "none"] | None = Field(
        None, description="the clipping mode; none or null: no clipping"
    )
    grad_clip_threshold: float | None = Field(None, gt=0, description="the clipping threshold")
    normalization: NormalizationEntry | None = Field(None, description="the normalization")
    lr: float | None = Field(None, gt=0, description="the learning rate")
    optimizer: OptimizerName | None = Field(None, description="the optimizer")

    @model_serializer(mode="wrap")
    def _given_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # What was left out stays out (it is sampled), so a stored spec reads back the same.
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}

    def params(self) -> dict[str, Any]:
        """Optuna's fixed parameters: what was given, with no clipping spelled "none"."""
        given = self.model_dump()
        if "grad_clip" in given:
            given["grad_clip"] = given["grad_clip"] or "none"
        return given

    def problem(self, space: SearchSpace) -> str | None:
        """Why this trial lies outside the search space, or None."""
        given = self.params()
        categorical: dict[str, Sequence[str] | None] = {
            "init": list(space.init),
            "grad_clip": [c or "none" for c in space.grad_clip],
            "normalization": list(space.normalization),
            "optimizer": space.optimizer,
        }
        ranges = {
            "init_scale": space.init_scale,
            "grad_clip_threshold": space.grad_clip_threshold if any(space.grad_clip) else None,
            "lr": space.lr,
        }
        for name, value in given.items():
            choices, bounds = categorical.get(name), ranges.get(name)
            if choices is None and bounds is None:
                return f"{name} is not a parameter this search_space searches"
            if choices is not None and value not in choices:
                return f"{name} {value!r} is not in search_space.{name}: {choices}"
            if bounds is not None and not bounds.low <= value <= bounds.high:
                return (
                    f"{name} {value} is outside search_space.{name} [{bounds.low}, {bounds.high}]"
                )
        if given.get("grad_clip") == "none" and "grad_clip_threshold" in given:
            return "grad_clip_threshold is given with grad_clip none"
        return None


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: Label = Field(min_length=1, max_length=200, description="a name for people")
    owner: SpecOwner = None
    task: TaskEntry = Field(description="what every trial learns", examples=["deep_linear"])
    architecture: ArchEntry = Field(description="the model of every trial", examples=["mlp"])
    fixed: Fixed = Field(description="settings every trial shares")
    search_space: SearchSpace = Field(description="what the sampler chooses per trial")
    objective: Objective | list[Objective] = Field(
        "steps_to_target", description="what is minimized; a list: a multi-objective study"
    )
    n_trials: int = Field(20, ge=1, le=MAX_TRIALS, description="trials to run")
    parallelism: int = Field(2, ge=1, le=64, description="trials in flight at a time")
    sampler: SamplerSpec = Field(default_factory=SamplerSpec, description="how trials are chosen")
    pruner: PrunerSpec = Field(
        default_factory=PrunerSpec, description="when unpromising trials stop early"
    )
    confirm_seeds: list[int] = Field(
        default_factory=lambda: [1, 2, 3],
        min_length=1,
        max_length=20,
        description="fresh seeds on which the best trial is re-run against the baseline",
    )
    max_attempts: int | None = Field(
        None, ge=1, le=20, description="starts allowed per run; null: PLATEAU_MAX_ATTEMPTS"
    )
    enqueue: list[FixedTrial] = Field(
        default_factory=list,
        max_length=MAX_TRIALS,
        description="trials with given parameters, asked first and in this order; they count "
        "towards n_trials",
    )

    @field_validator("confirm_seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        return distinct("confirm_seeds", v)

    @field_validator("objective")
    @classmethod
    def _distinct(cls, v: Objective | list[Objective]) -> Objective | list[Objective]:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("a multi-objective list needs distinct objectives")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> StudySpec:
        for norm in self.search_space.normalization:
            problem = compatibility_problem(
                self.task.name, self.architecture.name, norm
            ) or batch_problem(self.task, self.architecture.name, norm, self.fixed.budget)
            if problem:
                raise ValueError(f"search_space.normalization '{norm}': {problem}")
        if self.pruner.name == "plateau" and self.objectives != ["steps_to_target"]:
            raise ValueError(
                f"pruner 'plateau' needs objective steps_to_target, got {self.objective!r}: "
                "a plateau's length bounds only the steps to target (workers/trial.py)"
            )
        if self.multi_objective:
            if self.sampler.name in SINGLE_OBJECTIVE_SAMPLERS:
                raise ValueError(
                    f"sampler '{self.sampler.name}' is single-objective; with several "
                    "objectives use one of: tpe, random, grid, nsga2"
                )
            if self.pruner.name != "none":
                raise ValueError(
                    "pruner: Optuna cannot prune multi-objective studies; use pruner {name: none}"
                )
        if len(self.enqueue) > self.n_trials:
            raise ValueError(
                f"enqueue: {len(self.enqueue)} trials given but n_trials is {self.n_trials}"
            )
        for i, trial in enumerate(self.enqueue):
            problem = trial.problem(self.search_space)
            if problem:
                raise ValueError(f"enqueue[{i}]: {problem}")
        return self

    @property
    def objectives(self) -> list[str]:
        return list(self.objective) if isinstance(self.objective, list) else [self.objective]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def to_run_config(self, params: dict[str, Any], *, seed: int | None = None) -> RunConfig:
        """The run of one trial: fixed settings overridden by the sampled parameters."""
        fixed = self.fixed
        init: dict[str, Any] = {"name": params.get("init", fixed.init.name)}
        if init["name"] == fixed.init.name:
            init = fixed.init.model_dump()  # keep its std / bound / mode
        if "init_scale" in params:
            init["scale"] = params["init_scale"]
        optimizer = fixed.optimizer.model_dump()
        if "optimizer" in params and params["optimizer"] != optimizer["name"]:
            optimizer = {
                "name": params["optimizer"],
                "lr": optimizer["lr"],
                "schedule": optimizer["schedule"],
            }
        if "lr" in params:
            optimizer["lr"] = params["lr"]
        clip = params.get("grad_clip", "none")
        return RunConfig.model_validate(
            {
                "task": self.task,
                "architecture": self.architecture,
                "normalization": params.get("normalization", fixed.normalization),
                "init": init,
                "optimizer": optimizer,
                "grad_clip": None
                if clip in (None, "none")
                else {"mode": clip, "threshold": params["grad_clip_threshold"]},
                "seed": fixed.seed if seed is None else seed,
                "budget": fixed.budget,
                "target": fixed.target,
                "plateau": fixed.plateau,
                "probes": fixed.probes,
                "device": fixed.device,
                "dtype": fixed.dtype,
            }
        )

    def baseline_config(self, *, seed: int) -> RunConfig:
        """The fixed settings alone (the 'default' the search is compared against)."""
        return self.to_run_config({}, seed=seed)


def objective_values(spec: StudySpec, result: dict[str, Any] | None, status: str) -> list[float]:
    """Objective values (all minimized) of a finished trial run.

    steps_to_target is censored at the budget: a run that never reaches the target scores
    budget * (1 + log1p(final_loss / target)), so it ranks behind every run that did and
    among the censored by how far it got; a diverged run scores as the worst censored one.
    """
    budget = spec.fixed.budget.steps
    target = spec.fixed.target.loss
    values = []
    for objective in spec.objectives:
        diverged = status == "diverged" or result is None or result.get("final_loss") is None
        final = math.inf if diverged else float(result["final_loss"])  # type: ignore[index]
        if objective == "steps_to_target":
            # A reached target is the trial's value even if the run records a pruned_step.
            if not diverged and result and result.get("steps_to_target") is not None:
                values.append(float(result["steps_to_target"]))
            else:
                values.append(budget * (1 + min(math.log1p(final / target), 20.0)))
        elif objective == "plateau_fraction":
            values.append(1.0 if diverged else float(result["plateau_fraction"]))  # type: ignore[index]
        else:
            values.append(1e12 if diverged else final)
    return values
