"""Reporting a study trial's progress from inside the train loop, and deciding to prune it.

The train loop calls the reporter every `report_every` steps with (step, smoothed training
loss, the plateau the run sits on now or None) until the run reaches its target, never
after: a trial that reached the target completes with its steps-to-target. Two kinds of
pruner decide:

- median, hyperband (Optuna's): from the intermediate values (the smoothed loss, which every
  objective improves with) of all trials at the same step.
- plateau (ours): stop a trial that has sat on ONE plateau for longer than the best
  complete trial took to reach the target,

      prune at step t  when  L > slack * S_best,

  where L is the length of the plateau the run sits on at t (it began at t - L + 1), S_best
  the smallest steps_to_target over the study's complete trials that reached the target,
  and slack >= 1 (default 1). No complete trial has reached the target yet: no pruning.

  Why it is sound for the objective steps_to_target: the reporter is only called while the
  run has not reached its target, so at step t its steps-to-target is at least t + 1, and
  t + 1 >= L (the plateau began at step 0 or later): steps-to-target >= L > slack * S_best
  >= S_best. The pruned trial is strictly worse than the best one, had it run to the end
  (and a run that never reaches the target scores worse still). Pruning never loses the
  best setting; it saves the steps a trial would have spent proving that it is worse. A
  run that is slow without sitting on a plateau is not pruned: the rule is about plateaus
  and names the one that decided. (Pruning every run at t + 1 > S_best would be sound too
  and save more; the plateau rule stops only runs that are stuck, with a reason a person can
  check on the loss curve, and lets a run that is slow but still descending finish with a
  value the sampler learns from.)
  It bounds nothing else. A run that sits on plateaus can still end with the lowest final
  loss (deep_linear, 3000 steps: orthogonal scale 0.2 ends at 6e-7 after three plateaus,
  scale 0.5, the fastest to the target, at 1.6e-3), and a plateau's length says nothing
  about how a plateau fraction compares with the best's steps-to-target; so the study spec
  refuses pruner `plateau` with any other objective.

  The decision is recorded on the Optuna trial as the user attribute `pruned_by`: the step,
  the plateau (start, length, level), the best trial's number and steps-to-target, the slack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

from db.optuna_storage import optuna_storage

if TYPE_CHECKING:
    from workers.plateau import OnPlateau

PRUNED_BY = "pruned_by"  # Optuna trial user attribute: why the plateau pruner stopped it
STEPS_TO_TARGET = "steps_to_target"  # Optuna trial user attribute, set when a trial is told

Reporter = Callable[[int, float, "OnPlateau | None"], bool]


def make_pruner(spec: dict[str, Any], budget_steps: int) -> optuna.pruners.BasePruner:
    """Optuna's pruner for the spec; the plateau pruner is not Optuna's (`plateau_verdict`)."""
    if spec["name"] == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=spec["n_startup_trials"], n_warmup_steps=spec["n_warmup_steps"]
        )
    if spec["name"] == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, spec["n_warmup_steps"]), max_resource=budget_steps
        )
    return optuna.pruners.NopPruner()


@dataclass(frozen=True)
class Best:
    """The complete trial that reached the target in the fewest steps."""

    number: int
    steps_to_target: int


def best_reached(study: optuna.Study) -> Best | None:
    """The study's best complete trial by steps-to-target, or None when none reached it."""
    reached = [
        Best(t.number, int(t.user_attrs[STEPS_TO_TARGET]))
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.user_attrs.get(STEPS_TO_TARGET) is not None
    ]
    return min(reached, key=lambda b: (b.steps_to_target, b.number), default=None)


def plateau_verdict(
    step: int, plateau: OnPlateau | None, best: Best | None, slack: float
) -> dict[str, Any] | None:
    """Why to prune at `step` (the `pruned_by` record), or None to go on.

    >>> from workers.plateau import OnPlateau
    >>> plateau = OnPlateau(start=0, length=501, level=10.4)
    >>> plateau_verdict(500, plateau, Best(number=0, steps_to_target=478), 1.0)["best_trial"]
    0
    >>> plateau_verdict(500, plateau, Best(number=0, steps_to_target=478), 1.5) is None
    True
    """
    if plateau is None or best is None or plateau.length <= slack * best.steps_to_target:
        return None
    return {
        "pruner": "plateau",
        "step": step,
        "plateau": {"start": plateau.start, "length": plateau.length, "level": plateau.level},
        "best_trial": best.number,
        "best_steps_to_target": best.steps_to_target,
        "slack": slack,
    }


def reporter(db_url: str, trial: dict[str, Any]) -> Reporter:
    """(step, smoothed loss, current plateau) -> should this trial stop now?

    The smoothed loss goes to Optuna as the intermediate value every `value_every` steps
    (and at the step a trial is pruned); the plateau pruner, which needs finer steps than
    the intermediate values, reads the study's best only while the run sits on a plateau.
    """
    storage = optuna_storage(db_url)
    pruner = trial["pruner"]
    study = optuna.load_study(
        study_name=trial["study_name"],
        storage=storage,
        pruner=make_pruner(pruner, trial["budget_steps"]),
    )
    study_id = storage.get_study_id_from_name(trial["study_name"])
    handle = optuna.trial.Trial(
        study, storage.get_trial_id_from_study_id_trial_number(study_id, trial["number"])
    )
    value_every = trial.get("value_every", trial["report_every"])

    if pruner["name"] != "plateau":

        def report(step: int, value: float, plateau: OnPlateau | None) -> bool:
            handle.report(value, step)
            return handle.should_prune()

        return report

    def report_plateau(step: int, value: float, plateau: OnPlateau | None) -> bool:
        verdict = None
        if plateau is not None:
            verdict = plateau_verdict(step, plateau, best_reached(study), pruner["slack"])
        if verdict is not None or step % value_every == 0:
            handle.report(value, step)
        if verdict is not None:
            handle.set_user_attr(PRUNED_BY, verdict)
        return verdict is not None

    return report_plateau
