"""The report's sections: each gathers its claim's evidence from stored runs (never from a
stored report, so a report regenerated from the same runs recomputes the same numbers and
verdict) and hands it to its rule (rules.py).

So far: section 2, "noise escapes saddles", from sweeps of examples/saddle_escape.yaml's
kind (a net placed on a strict saddle by init `saddle`, the target loss half the saddle's,
so a run's steps to target are its steps to leave the saddle): one full-batch sweep and one
sweep per minibatch size.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Run, RunResult
from service.report.rules import NOISE_ESCAPES_SADDLES, Rule, Verdict


@dataclass
class Section:
    rule: Rule
    verdict: Verdict
    numbers: dict[str, Any] = field(default_factory=dict)


def _steps_to_leave(session: Session, sweep_id: int) -> list[int | None]:
    """Each run's steps to target (None: censored, it never left), in seed order."""
    rows = session.execute(
        select(Run.config["seed"].as_integer(), RunResult.steps_to_target, RunResult.reached_target)
        .join(RunResult, RunResult.run_id == Run.id)
        .where(Run.sweep_id == sweep_id)
        .order_by(Run.config["seed"].as_integer())
    ).all()
    return [steps if reached else None for _, steps, reached in rows]


def noise_escapes_saddles(
    session: Session, *, full_batch_sweep: int, minibatch_sweeps: dict[int, int]
) -> Section:
    """Section 2 from its sweeps: `minibatch_sweeps` maps a batch size to its sweep."""
    full = _steps_to_leave(session, full_batch_sweep)
    by_batch = {b: _steps_to_leave(session, s) for b, s in sorted(minibatch_sweeps.items())}

    def summary(steps: list[int | None]) -> dict[str, Any]:
        left = [s for s in steps if s is not None]
        return {
            "seeds": len(steps),
            "left": len(left),
            "median_steps": statistics.median(left) if len(left) == len(steps) and left else None,
            "steps": steps,
        }

    verdict = NOISE_ESCAPES_SADDLES.decide(full_batch_steps=full, minibatch_steps=by_batch)
    numbers = {"full batch": summary(full)} | {
        f"batch {b}": summary(s) for b, s in by_batch.items()
    }
    return Section(NOISE_ESCAPES_SADDLES, verdict, numbers)
