"""Turning db/ rows into API schemas (shared by the routes and the CLI)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.models import TERMINAL_STATUSES, ApiKey, Run, Sweep
from db.queries import list_runs, sweep_status
from service.api.deps import RunsQuery
from service.schemas import Diagnosis, RunPublic, RunsPublic, SweepDetail, SweepPublic


def sweep_public(sweep: Sweep, counts: dict[str, int], *, detail: bool = False) -> SweepPublic:
    done = sum(counts.get(s, 0) for s in TERMINAL_STATUSES)
    fields = dict(
        id=sweep.id,
        name=sweep.name,
        owner=sweep.owner,
        source=sweep.source,
        status=sweep_status(counts=counts, cancelled=sweep.cancelled_at is not None),
        n_runs=sweep.n_runs,
        counts=counts,
        progress=done / sweep.n_runs if sweep.n_runs else 1.0,
        created_at=sweep.created_at,
        cancelled_at=sweep.cancelled_at,
        software=sweep.software,
    )
    return SweepDetail(**fields, spec=sweep.spec) if detail else SweepPublic(**fields)


def _label(entry: dict[str, Any], skip: tuple[str, ...] = ("name",)) -> str:
    extras = ",".join(
        f"{k}={v}"
        for k, v in entry.items()
        if k not in skip and v not in (None, False) and not isinstance(v, dict)
    )
    return f"{entry['name']}({extras})" if extras else entry["name"]


def run_summary(config: dict[str, Any]) -> dict[str, Any]:
    """Short, human-readable names of a run's axes."""
    clip = config.get("grad_clip")
    return {
        "task": config["task"]["name"],
        "architecture": _label(config["architecture"]),
        "normalization": config["normalization"],
        "optimizer": _label(config["optimizer"], skip=("name", "schedule")),
        "init": _label(config["init"]),
        "grad_clip": None if clip is None else f"{clip['mode']}:{clip['threshold']}",
        "seed": config["seed"],
    }


def public_error(error: str | None, *, full: bool) -> str | None:
    """A failed run's stored error: all of it (the worker's traceback) for admins, its first
    line, `ExceptionType: message`, for everyone else (tracebacks name server paths)."""
    if error is None or full:
        return error
    return error.splitlines()[0] if error.strip() else error


def run_public(run: Run, *, full_error: bool = False) -> dict[str, Any]:
    """The API's fields of a run; `full_error` for admins (see public_error)."""
    result = run.result
    fields: dict[str, Any] = dict(
        id=run.id,
        sweep_id=run.sweep_id,
        grid_index=run.grid_index,
        status=run.status,
        config_hash=run.config_hash,
        attempts=run.attempts,
        max_attempts=run.max_attempts,
        queued_at=run.queued_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        error=public_error(run.error, full=full_error),
        summary=run_summary(run.config),
        curves_pruned_at=run.curves_pruned_at,
    )
    if result is not None:
        fields.update(
            final_loss=result.final_loss,
            test_accuracy=result.test_accuracy,
            reached_target=result.reached_target,
            steps_to_target=result.steps_to_target,
            plateau_fraction=result.plateau_fraction,
            diagnosis=Diagnosis(**result.diagnosis) if result.diagnosis else None,
        )
    return fields


def run_list_item(run: Run, *, full_error: bool = False) -> RunPublic:
    return RunPublic(**run_public(run, full_error=full_error))


def runs_page(
    *, session: Session, sweep_id: int | None, query: RunsQuery, full_error: bool
) -> RunsPublic:
    """A page of runs (one sweep's, or every sweep's): see db.queries.list_runs."""
    runs, count = list_runs(
        session=session,
        sweep_id=sweep_id,
        offset=query.offset,
        limit=query.limit,
        status=query.status,
    )
    return RunsPublic(data=[run_list_item(r, full_error=full_error) for r in runs], count=count)


def key_public(key: ApiKey) -> dict[str, Any]:
    """The fields of KeyPublic (never the secret: only its digest is stored)."""
    return dict(
        prefix=key.prefix,
        user=key.user.name,
        role=key.user.role,
        name=key.name,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
    )


def result_dict(run: Run) -> dict[str, Any] | None:
    r = run.result
    if r is None:
        return None
    keys = (
        "attempt",
        "outcome",
        "steps_done",
        "final_loss",
        "test_loss",
        "test_accuracy",
        "reached_target",
        "steps_to_target",
        "plateau_fraction",
        "longest_plateau",
        "plateaus",
        "clip_fraction",
        "diverged_step",
        "diagnosis",
        "environment",
        "seconds",
        "created_at",
    )
    return {k: getattr(r, k) for k in keys}
