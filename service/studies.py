"""Optuna studies whose trials are ordinary runs.

One execution path: `advance` (called from every dispatcher tick) asks Optuna for new
trials while fewer than `parallelism` are in flight, and enqueues each as a run of the
study's sweep, tagged with the study and trial number. The same dispatcher and workers
execute it. When the run ends, `advance` tells Optuna its objective values (or PRUNED /
FAIL); a run that reached its target is never told PRUNED, and its steps to target go on
the trial as the user attribute `steps_to_target` (the plateau pruner's reference, see
workers/trial.py). The spec's `enqueue` trials are enqueued in Optuna when the study is
created, so the first asks take them, in order. The run's lease is the only liveness
mechanism: a trial whose worker dies is retried through the queue up to max_attempts, then
failed, and never left RUNNING.

Optuna's RDBStorage lives in the same database, so `optuna-dashboard $DATABASE_URL` and
`optuna.load_study(study_name=..., storage=DATABASE_URL)` see the same trials.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections.abc import Callable
from typing import Any

import optuna
from sqlalchemy.orm import Session

from db import queue
from db import studies as db_studies
from db.models import RunResult, Study, User, utcnow
from db.optuna_storage import cached_storage, optuna_storage
from db.session import read_scope, session_scope
from service.auth import Identity
from service.settings import Settings
from service.study_spec import StudySpec, objective_values
from service.sweeps import queue_rows, software_versions
from workers.trial import PRUNED_BY, STEPS_TO_TARGET
from workers.trial import make_pruner as worker_pruner

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

TERMINAL = ("succeeded", "failed", "diverged", "cancelled")


def make_sampler(spec: StudySpec, n_asked: int) -> optuna.samplers.BaseSampler:
    """Samplers are not persisted: each ask re-creates one, seeded by (seed, trials so far)
    so that a study is reproducible and consecutive asks do not repeat the same draw."""
    seed = spec.sampler.seed + n_asked
    name = spec.sampler.name
    if name == "tpe":
        # constant_liar: in-flight trials count as bad, so parallel asks spread out (optuna#1547)
        return optuna.samplers.TPESampler(
            seed=seed, constant_liar=True, n_startup_trials=min(10, max(2, spec.n_trials // 4))
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.GridSampler(grid_space(spec), seed=spec.sampler.seed)


def grid_space(spec: StudySpec) -> dict[str, list[Any]]:
    space, points = spec.search_space, spec.sampler.grid_points

    def geometric(r: Any) -> list[float]:
        return [r.low * (r.high / r.low) ** (i / (points - 1)) for i in range(points)]

    grid: dict[str, list[Any]] = {
        "init": list(space.init),
        "grad_clip": [c or "none" for c in space.grad_clip],
        "normalization": list(space.normalization),
    }
    if space.init_scale:
        grid["init_scale"] = geometric(space.init_scale)
    if any(space.grad_clip):
        grid["grad_clip_threshold"] = geometric(space.grad_clip_threshold)
    if space.lr:
        grid["lr"] = geometric(space.lr)
    if space.optimizer:
        grid["optimizer"] = list(space.optimizer)
    return grid


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    return worker_pruner(spec.pruner.model_dump(), spec.fixed.budget.steps)


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Sample one point of the search space (define-by-run: the clip threshold only exists
    when clipping is on)."""
    space = spec.search_space
    params: dict[str, Any] = {"init": trial.suggest_categorical("init", list(space.init))}
    if space.init_scale:
        params["init_scale"] = trial.suggest_float(
            "init_scale", space.init_scale.low, space.init_scale.high, log=True
        )
    clip = trial.suggest_categorical("grad_clip", [c or "none" for c in space.grad_clip])
    params["grad_clip"] = clip
    if clip != "none":
        r = space.grad_clip_threshold
        params["grad_clip_threshold"] = trial.suggest_float(
            "grad_clip_threshold", r.low, r.high, log=True
        )
    params["normalization"] = trial.suggest_categorical("normalization", list(space.normalization))
    if space.lr:
        params["lr"] = trial.suggest_float("lr", space.lr.low, space.lr.high, log=True)
    if space.optimizer:
        params["optimizer"] = trial.suggest_categorical("optimizer", list(space.optimizer))
    return params


def load(spec: StudySpec, row: Study, url: str, n_asked: int = 0) -> optuna.Study:
    return optuna.load_study(
        study_name=row.optuna_study_name,
        storage=cached_storage(url),
        sampler=make_sampler(spec, n_asked),
        pruner=make_pruner(spec),
    )


def create_study(
    *,
    session: Session,
    spec: StudySpec,
    settings: Settings,
    owner: User | str | None = None,
    before_commit: Callable[[Study], None] | None = None,
) -> Study:
    """The Optuna study, then the study row and its sweep (which collects the trial runs),
    committed before it returns. `owner` as for service.sweeps.submit_sweep: the key's user,
    or a legacy user's name.

    Optuna writes through its own connection, so it goes first, before `session` takes
    SQLite's write lock; if our rows then fail to insert or to commit, the Optuna study is
    deleted again, so a refused study leaves nothing behind.
    """
    owner = owner if owner is not None else spec.owner or "anonymous"
    document = spec.model_dump(mode="json")
    slug = re.sub(r"[^a-z0-9]+", "-", spec.name.lower()).strip("-")[:60]
    name = f"plateau-{uuid.uuid4().hex[:8]}-{slug}"
    storage = optuna_storage(settings.database_url)
    study = optuna.create_study(
        study_name=name, storage=storage, directions=["minimize"] * len(spec.objectives)
    )
    try:
        for i, fixed in enumerate(spec.enqueue):  # WAITING trials: the first asks take them
            study.enqueue_trial(fixed.params(), user_attrs={"enqueued": i})
        sweep = queue.enqueue_sweep(
            session=session,
            name=f"study: {spec.name}",
            owner=owner,
            spec=document,
            runs=[],
            source="study",
            software=software_versions(),
        )
        row = Study(
            name=spec.name,
            owner_user=sweep.owner_user,
            optuna_study_name=name,
            sweep_id=sweep.id,
            spec=document,
        )
        session.add(row)
        if before_commit is not None:  # e.g. a schedule's firing links the study
            session.flush()
            before_commit(row)
        session.commit()
    except Exception:
        session.rollback()
        optuna.delete_study(study_name=name, storage=storage)
        raise
    return row


def advance_all(settings: Settings) -> None:
    with read_scope(settings.database_url) as session:
        ids = db_studies.running_study_ids(session=session)
    for study_id in ids:
        with db_studies.advancing(settings.database_url, study_id) as mine:
            if mine:
                advance(settings, study_id)


def advance(settings: Settings, study_id: int) -> None:
    """Tell Optuna about finished trial runs, ask for new ones, close the study when done."""
    url = settings.database_url
    with read_scope(url) as session:
        row = session.get(Study, study_id)
        assert row is not None
        spec = StudySpec.model_validate(row.spec)
        runs = {
            r.trial_number: (r.status, _result_dict(r.result))
            for r in db_studies.trial_runs(session=session, study_id=study_id)
        }
    study = load(spec, row, url)
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        if trial.state != optuna.trial.TrialState.RUNNING:
            continue
        status, result = runs.get(trial.number, ("missing", None))
        if status == "missing":  # asked, but the run was never enqueued (a crash between)
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        elif status in TERMINAL:
            _tell(study, cached_storage(url), trial, spec, status, result)
    in_flight = sum(1 for s, _ in runs.values() if s not in TERMINAL)
    asked = sum(1 for t in trials if t.state != optuna.trial.TrialState.WAITING)  # enqueued
    while row.state == "running" and asked < spec.n_trials and in_flight < spec.parallelism:
        study = load(spec, row, url, n_asked=asked)
        new_trial = study.ask()
        params = suggest(new_trial, spec)
        config = spec.to_run_config(params)
        with session_scope(url) as session:
            queue.enqueue_trial_run(
                session=session,
                sweep_id=row.sweep_id,
                study_id=study_id,
                trial_number=new_trial.number,
                config=config.model_dump(mode="json"),
                config_hash=config.config_hash(),
                config_key=config.config_key(),
                max_attempts=spec.max_attempts or settings.max_attempts,
            )
        asked += 1
        in_flight += 1
    if asked >= spec.n_trials and in_flight == 0 and row.state == "running":
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if not running:
            with session_scope(url) as session:
                session.get(Study, study_id).state = "finished"  # type: ignore[union-attr]
                session.get(Study, study_id).finished_at = utcnow()  # type: ignore[union-attr]


def _result_dict(result: RunResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "final_loss": result.final_loss,
        "steps_to_target": result.steps_to_target,
        "plateau_fraction": result.plateau_fraction,
        "pruned_step": result.pruned_step,
    }


def _tell(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    trial: optuna.trial.FrozenTrial,
    spec: StudySpec,
    status: str,
    result: dict[str, Any] | None,
) -> None:
    """A finished run's outcome to Optuna. A run that reached its target completes with its
    objective values whatever else it records: `pruned_step` never overrides a reached target.
    The steps to target go on the trial as a user attribute, which the plateau pruner reads."""
    state = optuna.trial.TrialState
    if status in ("failed", "cancelled"):
        study.tell(trial.number, state=state.FAIL)
        return
    steps = result.get("steps_to_target") if result else None
    pruned = steps is None and result is not None and result.get("pruned_step") is not None
    attrs: dict[str, Any] = {STEPS_TO_TARGET: steps}
    if not pruned and trial.user_attrs.get(PRUNED_BY) is not None:
        attrs[PRUNED_BY] = None  # an earlier attempt's decision; this attempt ran to its end
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), trial.number
    )
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)
    if pruned:
        study.tell(trial.number, state=state.PRUNED)
    else:
        values = objective_values(spec, result, status)
        study.tell(trial.number, values if len(values) > 1 else values[0])


def cancel(*, session: Session, study: Study, identity: Identity) -> None:
    """Cancel the study and its trial runs; who asked goes to the audit log."""
    study.state = "cancelled"
    study.finished_at = utcnow()
    n = queue.cancel_sweep(session=session, sweep_id=study.sweep_id)
    identity.record(
        session=session,
        action="study.cancel",
        target=f"study:{study.id}",
        detail={"runs_cancelled": n, "owner": study.owner},
    )


def trial_context(url: str, study_id: int) -> dict[str, Any] | None:
    """What a worker needs to report intermediate values, or None when nothing prunes."""
    with read_scope(url) as session:
        row = session.get(Study, study_id)
        if row is None:
            return None
        spec = StudySpec.model_validate(row.spec)
        if spec.pruner.name == "none":
            return None
        value_every = max(1, spec.fixed.budget.steps // 20)
        # The plateau pruner decides within half a minimum plateau of its threshold; it
        # reads the database only while the run sits on a plateau (workers/trial.py).
        plateau_every = max(1, spec.fixed.plateau.min_length // 2)
        return {
            "study_name": row.optuna_study_name,
            "pruner": spec.pruner.model_dump(),
            "budget_steps": spec.fixed.budget.steps,
            "report_every": min(value_every, plateau_every)
            if spec.pruner.name == "plateau"
            else value_every,
            "value_every": value_every,
        }


def describe(*, session: Session, row: Study, url: str) -> dict[str, Any]:
    """The study as the API shows it: state, trials with run ids, best trial or Pareto front,
    parameter importances (with at least 4 complete trials)."""
    spec = StudySpec.model_validate(row.spec)
    study = optuna.load_study(study_name=row.optuna_study_name, storage=optuna_storage(url))
    run_ids = db_studies.trial_run_ids(session=session, study_id=row.id)
    trials = [
        {
            "number": t.number,
            "params": t.params,
            "state": t.state.name.lower(),
            "values": t.values,
            "value": t.values[0] if t.values and len(t.values) == 1 else None,
            "run_id": run_ids.get(t.number),
            "intermediate_values": {str(k): v for k, v in t.intermediate_values.items()},
            "user_attrs": t.user_attrs,
            "pruned_by": t.user_attrs.get(PRUNED_BY),
        }
        for t in study.get_trials(deepcopy=False)
    ]
    complete = [t for t in trials if t["state"] == "complete"]
    view: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "owner": row.owner,
        "state": row.state,
        "optuna_study_name": row.optuna_study_name,
        "sweep_id": row.sweep_id,
        "objective": spec.objectives,
        "n_trials": spec.n_trials,
        "parallelism": spec.parallelism,
        "created_at": row.created_at,
        "finished_at": row.finished_at,
        "trials": trials,
        "best_trial": None,
        "pareto_front": None,
        "importances": None,
    }
    by_number = {t["number"]: t for t in trials}
    if complete and spec.multi_objective:
        view["pareto_front"] = [by_number[t.number] for t in study.best_trials]
    elif complete:
        view["best_trial"] = by_number[study.best_trial.number]
    if len(complete) >= 4:
        try:
            view["importances"] = optuna.importance.get_param_importances(
                study, target=(lambda t: t.values[0]) if spec.multi_objective else None
            )
        except (RuntimeError, ValueError) as e:  # e.g. a single distinct value per param
            view["importances"] = {"unavailable": str(e)}
    return view


def progress(*, url: str, study_id: int) -> dict[str, Any]:
    """How far a study has come, cheap enough for every dispatcher tick (no importances):
    its state, its trials per Optuna state ("complete", "pruned", "fail", "running", ...),
    and for one objective the best trial so far ({"number", "value", "params"}) or None."""
    with read_scope(url) as session:
        row = session.get(Study, study_id)
        if row is None:
            raise LookupError(f"study {study_id} not found")
        state, name = row.state, row.optuna_study_name
    study = optuna.load_study(study_name=name, storage=optuna_storage(url))
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    best = None
    if counts.get("complete") and len(study.directions) == 1:
        b = study.best_trial
        best = {"number": b.number, "value": b.value, "params": b.params}
    return {"state": state, "counts": counts, "best": best}


def censored_mean_steps(results: list[dict[str, Any] | None], budget: int) -> float:
    """Mean steps to target over runs, counting a run that never reached it at the budget."""
    steps = [
        r["steps_to_target"] if r and r.get("steps_to_target") is not None else budget
        for r in results
    ]
    return sum(steps) / len(steps) if steps else math.nan


def confirm(*, settings: Settings, study_id: int) -> tuple[dict[str, Any], int]:
    """Queue the best trial's setting and the baseline on the spec's fresh `confirm_seeds`,
    as one sweep; returns (best params, sweep id). Multi-objective: the first Pareto trial."""
    url = settings.database_url
    with read_scope(url) as session:
        row = session.get(Study, study_id)
        assert row is not None
        spec = StudySpec.model_validate(row.spec)
        view = describe(session=session, row=row, url=url)
    best = view["best_trial"] or (view["pareto_front"] or [None])[0]
    if best is None:
        raise ValueError(f"study {study_id} has no complete trial to confirm")
    configs = [spec.to_run_config(best["params"], seed=s) for s in spec.confirm_seeds]
    configs += [spec.baseline_config(seed=s) for s in spec.confirm_seeds]
    with session_scope(url) as session:
        sweep = queue.enqueue_sweep(
            session=session,
            name=f"confirm: {spec.name}",
            owner=row.owner_user,
            spec={
                "study_id": study_id,
                "best_trial": best["number"],
                "params": best["params"],
                "seeds": spec.confirm_seeds,
            },
            runs=queue_rows(configs),
            max_attempts=settings.max_attempts,
            source="study-confirm",
            software=software_versions(),
        )
        return best["params"], sweep.id


def confirmation_summary(*, session: Session, sweep_id: int, budget: int) -> dict[str, Any]:
    """Mean steps-to-target (censored at the budget) of the best setting vs the baseline."""
    from db.queries import results_of_sweep

    rows = results_of_sweep(session=session, sweep_id=sweep_id)
    half = len(rows) // 2
    groups = {"best": rows[:half], "baseline": rows[half:]}
    summary: dict[str, Any] = {}
    for name, group in groups.items():
        results = [_result_dict(res) for _, res in group]
        summary[name] = {
            "seeds": [run.config["seed"] for run, _ in group],
            "mean_steps_to_target": censored_mean_steps(results, budget),
            "reached": sum(1 for r in results if r and r["steps_to_target"] is not None),
            "mean_final_loss": _mean([r["final_loss"] for r in results if r]),
        }
    summary["speedup"] = (
        summary["baseline"]["mean_steps_to_target"] / summary["best"]["mean_steps_to_target"]
    )
    return summary


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None
