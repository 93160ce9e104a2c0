"""The service's limits on what one submission may ask for (README "Limits").

Each answers 422 naming the limit, its setting and the numbers that broke it:
- one run's model, data and cost (`check_runs`): PLATEAU_MAX_RUN_PARAMETERS,
  PLATEAU_MAX_TASK_ELEMENTS, PLATEAU_MAX_RUN_COST (parameter-samples, workers/cost.py) and
  PLATEAU_MAX_PROBES_PER_RUN;
- a team's unfinished runs (`reserve_queue`): PLATEAU_MAX_QUEUED_RUNS.
The grid's size (PLATEAU_MAX_GRID_RUNS) is checked by the spec itself (service/spec.py), so
`plateau run` applies it too; these apply to submissions to the service.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from db import queries, queue
from service.settings import Settings
from service.spec import SweepSpec
from service.study_spec import StudySpec
from workers.config import RunConfig
from workers.cost import run_cost

Loc = tuple[str | int, ...]


class LimitExceeded(Exception):
    """A submission past one of the service's limits (422)."""

    def __init__(self, loc: Loc, message: str, reason: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message
        self.reason = reason  # label of plateau_requests_refused_total


async def limit_exceeded_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LimitExceeded)
    from service.metrics import REFUSED

    REFUSED.labels(reason=exc.reason).inc()
    error = {"type": "limit_exceeded", "loc": list(exc.loc), "msg": exc.message}
    return JSONResponse({"detail": [error]}, status_code=422)


# (location of the architecture, of the probes, the architecture's name in messages, a run)
Candidate = tuple[Loc, Loc, str, RunConfig]


def sweep_runs(spec: SweepSpec) -> Iterable[Candidate]:
    """One run per architecture and normalization: what a run's cost depends on (the other
    axes, optimizer, init, clipping and seed, change no count)."""
    for i, arch in enumerate(spec.architectures):
        for norm in spec.normalization:
            loc = ("body", "architectures", i)
            yield loc, ("body", "probes"), f"architectures[{i}]", spec.run_config(arch, norm)


def study_runs(spec: StudySpec) -> Iterable[Candidate]:
    for norm in spec.search_space.normalization:
        config = spec.to_run_config({"normalization": norm})
        yield ("body", "architecture"), ("body", "fixed", "probes"), "architecture", config


def check_runs(runs: Iterable[Candidate], settings: Settings) -> None:
    """Refuse the first run past a per-run limit (LimitExceeded)."""
    for loc, probes_loc, where, config in runs:
        cost = run_cost(config)
        arch: Any = config.architecture  # a union built at import time (plugins): Any to mypy
        task: Any = config.task
        name = f"{where} ({arch.name}, normalization {config.normalization})"
        if cost.task_elements is not None and cost.task_elements > settings.max_task_elements:
            raise LimitExceeded(
                ("body", "task"),
                f"task '{task.name}' holds {cost.task_elements:,} numbers (inputs and "
                f"targets), above the limit of {settings.max_task_elements:,} "
                "(PLATEAU_MAX_TASK_ELEMENTS)",
                "run_cost",
            )
        if cost.parameters is not None and cost.parameters > settings.max_run_parameters:
            raise LimitExceeded(
                loc,
                f"{name} has {cost.parameters:,} parameters, above the limit of "
                f"{settings.max_run_parameters:,} (PLATEAU_MAX_RUN_PARAMETERS)",
                "run_cost",
            )
        if cost.probes > settings.max_probes_per_run:
            raise LimitExceeded(
                probes_loc,
                f"probes: up to {cost.probes:,} probes per run, above the limit of "
                f"{settings.max_probes_per_run} (PLATEAU_MAX_PROBES_PER_RUN); raise probes.every",
                "run_cost",
            )
        if cost.cost is not None and cost.cost > settings.max_run_cost:
            raise LimitExceeded(
                loc,
                f"{name}: one run costs about {cost.cost:.3g} parameter-samples "
                f"({cost.describe(config.budget.steps)}), above the limit of "
                f"{settings.max_run_cost:.3g} (PLATEAU_MAX_RUN_COST); lower budget.steps, "
                "budget.batch_size, the probes or the model's size",
                "run_cost",
            )


def reserve_queue(*, session: Session, settings: Settings, team: str | None, adding: int) -> None:
    """Refuse `adding` more unfinished runs past the team's limit. Takes the team's queue
    lock first (Postgres), held until the submission commits, so concurrent submissions of
    one team count each other."""
    queue.lock_queue(session=session, team=team)
    # wired at merge: the owners (users) of `team`; None counts every sweep (one team).
    owners: list[str] | None = None
    unfinished = queries.count_unfinished_runs(session=session, owners=owners)
    if unfinished + adding > settings.max_queued_runs:
        raise LimitExceeded(
            ("body",),
            f"the team has {unfinished:,} unfinished (queued or running) runs and this adds "
            f"{adding:,}: above the limit of {settings.max_queued_runs:,} "
            "(PLATEAU_MAX_QUEUED_RUNS); wait for runs to finish or cancel some",
            "queued_runs",
        )
