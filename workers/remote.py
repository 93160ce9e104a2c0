"""The function Ray ships to workers. Torch-free at import time: the dispatcher imports this
module without pulling the training stack into the API process."""

from __future__ import annotations

from typing import Any


def execute_run(
    db_url: str,
    run_id: int,
    attempt: int,
    config: dict[str, Any],
    lease_seconds: float,
    trial: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Execute one claimed attempt; returns a small summary for the dispatcher's log.

    `trial` (Optuna study name, trial number, pruner) comes with study trials that may be
    pruned; the worker reports intermediate values to Optuna and stops when told to.
    """
    from workers.runner import execute

    outcome = execute(
        db_url=db_url,
        run_id=run_id,
        attempt=attempt,
        config=config,
        lease_seconds=lease_seconds,
        trial=trial,
    )
    return {"run_id": run_id, "attempt": attempt, "outcome": outcome}
