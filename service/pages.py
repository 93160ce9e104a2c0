"""What the sweep and study pages (and their figure endpoints) are drawn from, as plain
JSON-ready documents: the figures in service/figures/ take these and nothing else."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db import pages as db_pages
from db import queries
from db.models import Study
from service import studies
from service.api.views import run_summary
from service.study_spec import StudySpec
from workers.trial import PRUNED_BY, STEPS_TO_TARGET

MAX_CURVES = 100  # loss curves a sweep's overlay carries (the first runs of a larger sweep)


def sweep_runs(*, session: Session, sweep_id: int) -> list[dict[str, Any]]:
    """The sweep's runs, flat: id, status, axes (service.figures.sweep.AXES), outcomes, and
    the loss curve of the first MAX_CURVES finished ones."""
    runs, _ = queries.list_runs(session=session, sweep_id=sweep_id, offset=0, limit=100_000)
    drawn = [r.id for r in runs if r.status in ("succeeded", "diverged", "running")]
    curves = db_pages.loss_curves(session=session, run_ids=drawn[:MAX_CURVES])
    out = []
    for run in runs:
        res = run.result
        steps, loss = curves.get(run.id, ([], []))
        out.append(
            {"id": run.id, "status": run.status}
            | run_summary(run.config)
            | {
                "verdict": (res.diagnosis or {}).get("verdict") if res else None,
                "plateau_fraction": res.plateau_fraction if res else None,
                "final_loss": res.final_loss if res else None,
                "steps_to_target": res.steps_to_target if res else None,
                "steps": steps,
                "loss": loss,
            }
        )
    return out


def study_document(*, session: Session, row: Study, url: str) -> dict[str, Any]:
    """GET /api/v1/studies/{id} (service.studies.describe), and what its page adds: the
    budget and target that censored values are penalised against, each trial's kind
    (complete, censored, pruned, ...), and the confirmation of the best trial on fresh seeds
    when one was run (`plateau search` runs it; None otherwise)."""
    spec = StudySpec.model_validate(row.spec)
    view = studies.describe(session=session, row=row, url=url)
    censorable = spec.objectives[0] == "steps_to_target"
    for t in view["trials"]:
        t["kind"] = trial_kind(t, censorable=censorable)
        t["steps_to_target"] = t["user_attrs"].get(STEPS_TO_TARGET)
        reported = sorted(t["intermediate_values"].items(), key=lambda kv: int(kv[0]))
        t["last_reported"] = (
            {"step": int(reported[-1][0]), "loss": reported[-1][1]} if reported else None
        )
        t["pruned_by"] = t["user_attrs"].get(PRUNED_BY)
    view["budget_steps"] = spec.fixed.budget.steps
    view["target_loss"] = spec.fixed.target.loss
    view["censorable"] = censorable
    view["search_space"] = spec.search_space.model_dump(mode="json")
    view["confirmation"] = None
    sweeps = db_pages.confirmation_sweeps(session=session, study_id=row.id)
    if sweeps:
        sweep = sweeps[0]
        done = queries.unfinished_runs(session=session, sweep_id=sweep.id) == 0
        view["confirmation"] = {
            "sweep_id": sweep.id,
            "best_trial": sweep.spec.get("best_trial"),
            "params": sweep.spec.get("params"),
            "seeds": sweep.spec.get("seeds"),
            "finished": done,
            "summary": studies.confirmation_summary(
                session=session, sweep_id=sweep.id, budget=spec.fixed.budget.steps
            )
            if done
            else None,
        }
    return view


def trial_kind(trial: dict[str, Any], *, censorable: bool) -> str:
    """complete, censored (complete, but its steps_to_target value is the penalty of a run
    that never reached the target), pruned, or Optuna's other states (fail, running, ...)."""
    if trial["state"] != "complete":
        return str(trial["state"])
    if censorable and trial["user_attrs"].get(STEPS_TO_TARGET) is None:
        return "censored"
    return "complete"
