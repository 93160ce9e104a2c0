"""Reporting a study trial's intermediate values to Optuna from inside the train loop.

The pruner decides from the values of all trials at the same step (median, hyperband);
the intermediate value is the smoothed training loss, which every objective improves with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from db.optuna_storage import optuna_storage


def make_pruner(spec: dict[str, Any], budget_steps: int) -> optuna.pruners.BasePruner:
    if spec["name"] == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=spec["n_startup_trials"], n_warmup_steps=spec["n_warmup_steps"]
        )
    if spec["name"] == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, spec["n_warmup_steps"]), max_resource=budget_steps
        )
    return optuna.pruners.NopPruner()


def reporter(db_url: str, trial: dict[str, Any]) -> Callable[[int, float], bool]:
    """(step, value) -> should this trial stop now?"""
    storage = optuna_storage(db_url)
    study = optuna.load_study(
        study_name=trial["study_name"],
        storage=storage,
        pruner=make_pruner(trial["pruner"], trial["budget_steps"]),
    )
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, trial["number"])
    handle = optuna.trial.Trial(study, trial_id)

    def report(step: int, value: float) -> bool:
        handle.report(value, step)
        return handle.should_prune()

    return report
