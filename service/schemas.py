"""The API's language: pydantic models for requests and responses, separate from db/ models.

Every field carries a description: /openapi.json is the whole documentation a generated
client gets (tests/service/test_openapi.py counts the missing ones). Closed sets of values
(statuses, verdicts, metrics) are Literals, i.e. enums in the document; names that plugins
extend (tasks, architectures) are plain strings with examples."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from db.models import RUN_STATUSES
from service.spec import SweepSpec, known
from workers.config import Verdict

SweepCreate = SweepSpec
RunStatus = Literal["queued", "running", "succeeded", "failed", "diverged", "cancelled"]
assert get_args(RunStatus) == RUN_STATUSES
# As a filter: a misspelled status is refused with "did you mean", not matched by no run.
RunStatusFilter = Annotated[RunStatus, BeforeValidator(known("run status", RUN_STATUSES))]
# db.queries.sweep_status
SweepStatus = Literal["queued", "running", "finished", "cancelled"]
# db.models.Study.state
StudyState = Literal["running", "finished", "cancelled"]
# Optuna's TrialState, lower case
TrialState = Literal["running", "waiting", "complete", "pruned", "fail"]
SweepSource = Literal["api", "cli", "study", "study-confirm", "schedule"]

CREATED_AT = "when it was created (UTC)"


# --- errors --------------------------------------------------------------------------------


class Problem(BaseModel):
    """The body of a 4xx answer other than 422 (404 not found, 409 conflict, 403, ...)."""

    detail: str = Field(
        description="what went wrong, in one sentence", examples=["sweep 7 not found"]
    )


class ValidationProblem(BaseModel):
    """One reason a request was refused (service/api/validation.py)."""

    type: str = Field(
        description="the kind of error: pydantic's error type (missing, value_error, "
        "literal_error, ...) or one of the service's (limit_exceeded, json_too_deep)",
        examples=["value_error"],
    )
    loc: list[str | int] = Field(
        description="where: 'body', 'query' or 'path', then the field's path",
        examples=[["body", "optimizers", 0, "name"]],
    )
    msg: str = Field(
        description="what is wrong and what would be accepted",
        examples=["Value error, unknown optimizer 'adma'; did you mean 'adam'? (known: ...)"],
    )
    input: Any = Field(None, description="the refused value, cut to 200 characters")
    ctx: dict[str, Any] | None = Field(None, description="the error's parameters, if any")


class ValidationProblems(BaseModel):
    """The body of a 422: every reason the request was refused."""

    detail: list[ValidationProblem] = Field(description="the reasons, one per bad field")


def problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


# Shared `responses=` of the routes: the 4xx answers an operation documents.
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: problem("no such sweep, run, study or key")}
CONFLICT: dict[int | str, dict[str, Any]] = {409: problem("the request conflicts with its state")}
INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ValidationProblems, "description": "a parameter or the body is invalid"}
}
# The same for a route whose answer is not JSON (FastAPI files `model` under its media type).
INVALID_JSON: dict[int | str, dict[str, Any]] = {
    422: {
        "description": INVALID[422]["description"],
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ValidationProblems"}}
        },
    }
}


# --- sweeps and runs -----------------------------------------------------------------------


class SweepCreated(BaseModel):
    id: int = Field(description="the new sweep's id")
    runs: int = Field(description="runs queued: the size of the spec's grid")
    url: str = Field(description="where to read the sweep (GET)")


class SweepDeleted(BaseModel):
    id: int = Field(description="the deleted sweep's id")
    runs: int = Field(description="runs deleted with it")
    configurations: int = Field(description="leaderboard configurations whose sums were recomputed")


class SweepRetried(BaseModel):
    id: int = Field(description="the sweep's id")
    requeued: int = Field(description="failed runs queued again")


class SweepPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="the sweep's id")
    name: str = Field(description="the spec's name")
    owner: str = Field(description="who submitted it (the API key's user)")
    source: SweepSource = Field(
        description="api, cli, study (a study's trials) or study-confirm (a study's "
        "confirmation on fresh seeds)"
    )
    status: SweepStatus = Field(
        description="queued: no run started; running; finished: every run ended; cancelled"
    )
    n_runs: int = Field(description="runs of the sweep")
    counts: dict[RunStatus, int] = Field(
        description="runs by status", examples=[{"succeeded": 20, "running": 4}]
    )
    progress: float = Field(description="finished runs / all runs, 0 to 1")
    created_at: dt.datetime = Field(description=CREATED_AT)
    cancelled_at: dt.datetime | None = Field(description="when it was cancelled, if it was")
    software: dict[str, Any] = Field(
        description="versions of the software that submitted it (python, torch, ...)"
    )


class SweepDetail(SweepPublic):
    spec: dict[str, Any] = Field(description="the spec as submitted, every default filled in")


class SweepsPublic(BaseModel):
    data: list[SweepPublic] = Field(description="one page of sweeps, newest first")
    count: int = Field(description="sweeps in all")


class Diagnosis(BaseModel):
    verdict: Verdict = Field(description="the run's verdict (README: 'What the verdicts mean')")
    # None only for results recorded before 2026-12.
    sentence: str | None = Field(
        None, description="one sentence naming the numbers that decided the verdict"
    )
    evidence: dict[str, Any] = Field(description="the measured numbers the rules read")
    thresholds: dict[str, Any] = Field(description="the thresholds the rules compared them to")


class RunPublic(BaseModel):
    id: int = Field(description="the run's id")
    sweep_id: int = Field(description="its sweep's id")
    grid_index: int = Field(description="its position in the sweep's grid, from 0")
    status: RunStatus = Field(description="where the run is in its life")
    config_hash: str = Field(description="sha256 of its resolved config")
    attempts: int = Field(description="times a worker started it")
    max_attempts: int = Field(description="starts allowed before it is failed")
    queued_at: dt.datetime = Field(description="when it was queued (UTC)")
    started_at: dt.datetime | None = Field(description="when its latest attempt started")
    finished_at: dt.datetime | None = Field(description="when it ended")
    error: str | None = Field(
        description="why it failed: the first line for most, the traceback for admins"
    )
    summary: dict[str, Any] = Field(
        description="short names of the axes: task, architecture, optimizer, init, ...",
        examples=[{"task": "digits", "optimizer": "adam(lr=0.001)", "init": "default"}],
    )
    curves_pruned_at: dt.datetime | None = Field(
        None,
        description="when its per-step curve was thinned to the evaluation steps "
        "(PLATEAU_CURVE_RETENTION_DAYS)",
    )
    final_loss: float | None = Field(None, description="training loss at the end")
    test_accuracy: float | None = Field(None, description="last test accuracy (classification)")
    reached_target: bool | None = Field(None, description="did the smoothed loss reach the target")
    steps_to_target: int | None = Field(None, description="steps until it did (null: censored)")
    plateau_fraction: float | None = Field(None, description="fraction of steps on a plateau")
    diagnosis: Diagnosis | None = Field(None, description="the verdict, once finished")


class RunsPublic(BaseModel):
    data: list[RunPublic] = Field(description="one page of runs, in grid order")
    count: int = Field(description="runs in all (matching the filter)")


class RunDetail(RunPublic):
    config: dict[str, Any] = Field(description="the resolved config (workers/config.py)")
    result: dict[str, Any] | None = Field(
        description="the recorded result: losses, plateaus, diagnosis, environment, ..."
    )
    curves: dict[str, list[Any]] = Field(
        description="per-step columns: step, loss, lr, grad_norm, update_norm, param_norm, "
        "clipped, eval_loss, eval_accuracy, layer_grad_norms"
    )
    activation_stats: list[dict[str, Any]] = Field(
        description="[{step, layers: {layer: {mean, std}}}] at init and evaluation steps"
    )
    probes_url: str = Field(description="where to read its landscape probes")


class ProbePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="the probe's id")
    step: int = Field(description="the training step it probed")
    trigger: Literal["end", "every", "plateau"] = Field(description="what asked for it")
    lambda_max: float | None = Field(description="largest Hessian eigenvalue")
    lambda_min: float | None = Field(description="smallest Hessian eigenvalue")
    trace: float | None = Field(description="Hessian trace estimate")
    trace_stderr: float | None = Field(description="its standard error")
    negative_mass: float | None = Field(description="fraction of negative eigenvalues (SLQ)")
    negative_mass_stderr: float | None = Field(description="its standard error")
    grad_norm: float | None = Field(description="full-batch gradient norm")
    data: dict[str, Any] = Field(
        description="everything else measured: eigenvalues, residuals, density, slices"
    )


class ProbesPublic(BaseModel):
    data: list[ProbePublic] = Field(description="the run's probes, by step")
    count: int = Field(description="probes in all")


class Health(BaseModel):
    status: Literal["ok", "degraded"] = Field(
        description="degraded: the database or Ray is not reachable"
    )
    database: dict[str, Any] = Field(description="ok, dialect, or the error")
    ray: dict[str, Any] = Field(description="ok, mode (driver or port), nodes and CPUs")


class Readiness(BaseModel):
    ready: bool = Field(description="can this process serve (its database answers)")
    database: dict[str, Any] = Field(description="ok, dialect, or the error")


# --- studies (service/studies.py) ----------------------------------------------------------


class StudyCreated(BaseModel):
    id: int = Field(description="the new study's id")
    trials: int = Field(description="trials it will run (n_trials)")
    sweep_id: int = Field(description="the sweep that collects its trial runs")
    optuna_study_name: str = Field(description="its name in Optuna's storage")
    url: str = Field(description="where to read the study (GET)")


class StudyPublic(BaseModel):
    id: int = Field(description="the study's id")
    name: str = Field(description="the spec's name")
    owner: str = Field(description="who submitted it")
    state: StudyState = Field(description="running, finished (every trial told) or cancelled")
    optuna_study_name: str = Field(
        description="its name in Optuna's storage (optuna.load_study, optuna-dashboard)"
    )
    sweep_id: int = Field(description="the sweep that collects its trial runs")
    created_at: dt.datetime = Field(description=CREATED_AT)


class StudiesPublic(BaseModel):
    data: list[StudyPublic] = Field(description="one page of studies, newest first")
    count: int = Field(description="studies in all")


class TrialPublic(BaseModel):
    number: int = Field(description="Optuna's trial number, from 0")
    params: dict[str, Any] = Field(
        description="the sampled parameters", examples=[{"init": "orthogonal", "init_scale": 0.5}]
    )
    state: TrialState = Field(description="Optuna's state of the trial")
    values: list[float] | None = Field(description="objective values, once complete")
    value: float | None = Field(description="the objective value of a single-objective study")
    run_id: int | None = Field(description="the run that trains it")
    intermediate_values: dict[str, float] = Field(
        description="reported losses by step (what pruners read)"
    )
    user_attrs: dict[str, Any] = Field(description="Optuna's user attributes of the trial")
    pruned_by: Any = Field(None, description="why the plateau pruner stopped it, if it did")


class StudyDetail(StudyPublic):
    objective: list[str] = Field(description="objectives, all minimized")
    n_trials: int = Field(description="trials it runs")
    parallelism: int = Field(description="trials in flight at a time")
    finished_at: dt.datetime | None = Field(description="when it finished or was cancelled")
    trials: list[TrialPublic] = Field(description="every trial so far")
    best_trial: TrialPublic | None = Field(description="single objective: the best complete trial")
    pareto_front: list[TrialPublic] | None = Field(
        description="several objectives: the Pareto-optimal trials"
    )
    importances: dict[str, float | str] | None = Field(
        description="parameter importances (4+ complete trials), or {'unavailable': why}"
    )


class StudyCancelled(BaseModel):
    id: int = Field(description="the study's id")
    state: StudyState = Field(description="its state after the request")


# --- identities (service/auth.py) ---------------------------------------------------------

Role = Literal["viewer", "member", "admin"]
# Names of team users: no spaces or control characters, so they read the same in a URL, a
# shell and the audit log. (Legacy users keep the free text they came with.)
USER_NAME = r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$"
ROLE = "viewer: reads; member: also submits and changes its own; admin: everything"


class IdentityPublic(BaseModel):
    """Who the request came from (`GET /api/v1/me`)."""

    auth: bool = Field(description="are keys required on this service")
    user: str = Field(description="the user's name; 'single-user' in single-user mode")
    role: Role = Field(description=ROLE)
    via: Literal["key", "session", "single-user"] = Field(description="how it was identified")
    key_prefix: str | None = Field(description="the prefix of the key it used")


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1, max_length=200, pattern=USER_NAME, description="the user's name"
    )
    role: Role = Field("member", description=ROLE)


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role | None = Field(None, description="the new role; null: unchanged")
    disabled: bool | None = Field(
        None, description="true: its keys and sessions stop working; null: unchanged"
    )


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="the user's id")
    name: str = Field(description="the user's name")
    role: Role = Field(description=ROLE)
    origin: Literal["team", "legacy"] = Field(
        description="team: created by an admin; legacy: from a free-text owner"
    )
    created_at: dt.datetime = Field(description=CREATED_AT)
    disabled_at: dt.datetime | None = Field(description="when it was disabled, if it is")


class UsersPublic(BaseModel):
    data: list[UserPublic] = Field(description="the users")
    count: int = Field(description="users in all")


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=200, description="whose key it is")
    name: str = Field("", max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$", description="a label")


class KeyPublic(BaseModel):
    prefix: str = Field(description="pb_ and 8 characters: shown in lists, never the secret")
    user: str = Field(description="whose key it is")
    role: Role = Field(description="its user's role")
    name: str = Field(description="its label")
    created_at: dt.datetime = Field(description=CREATED_AT)
    last_used_at: dt.datetime | None = Field(description="when it was last used, to the minute")
    revoked_at: dt.datetime | None = Field(description="when it was revoked, if it was")


class KeyCreated(KeyPublic):
    key: str = Field(description="the secret, shown this once: it is stored only as a hash")


class KeysPublic(BaseModel):
    data: list[KeyPublic] = Field(description="the keys")
    count: int = Field(description="keys in all")


class AuditEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="the event's id")
    created_at: dt.datetime = Field(description="when it happened (UTC)")
    actor: str = Field(description="who did it: a user's name, or cli:...")
    key_prefix: str | None = Field(description="the key it used")
    action: str = Field(description="what was done", examples=["key.revoke", "sweep.cancel"])
    target: str = Field(description="to what", examples=["sweep:7"])
    detail: dict[str, Any] | None = Field(description="the action's particulars")


class AuditEventsPublic(BaseModel):
    data: list[AuditEventPublic] = Field(description="one page of events, newest first")
    count: int = Field(description="events in all (matching the filters)")
