"""The function Ray ships to workers. Torch-free at import time: the dispatcher imports this
module without pulling the training stack into the API process.

Its arguments carry no secret: the worker reads the database URL from its own environment
(workers/settings.py); `database` is the dispatcher's URL with the password masked, which
the worker checks its own against.
"""

from __future__ import annotations

from typing import Any


def execute_run(
    run_id: int,
    dispatcher_id: str,
    lease_seconds: float,
    database: str,
    trial: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Start the attempt of a run reserved by `dispatcher_id`, execute it, and return a small
    summary for the dispatcher's log: `started` is False when the reservation was gone by the
    time a worker picked the task up (nothing spent, nothing to do).

    `trial` (Optuna study name, trial number, pruner) comes with study trials that may be
    pruned; the worker reports intermediate values to Optuna and stops when told to.
    """
    from workers.runner import execute, start_attempt
    from workers.settings import worker_database_url

    db_url = worker_database_url(expected=database)
    claim = start_attempt(
        db_url=db_url, run_id=run_id, dispatcher_id=dispatcher_id, lease_seconds=lease_seconds
    )
    if claim is None:
        return {"run_id": run_id, "started": False}
    outcome = execute(
        db_url=db_url,
        run_id=run_id,
        attempt=claim.attempt,
        config=claim.config,
        lease_seconds=lease_seconds,
        trial=trial,
    )
    return {"run_id": run_id, "started": True, "attempt": claim.attempt, "outcome": outcome}


def execute_pack(
    run_ids: list[int], dispatcher_id: str, lease_seconds: float, database: str
) -> dict[str, Any]:
    """Start the attempts of runs reserved by `dispatcher_id` and train them together in one
    task (`workers.runner.execute_pack`: packed where they pack). Runs whose reservation was
    gone are skipped; the summary lists each run's outcome."""
    from workers.runner import execute_pack as run_pack
    from workers.runner import start_attempt
    from workers.settings import worker_database_url

    db_url = worker_database_url(expected=database)
    claims = []
    for run_id in run_ids:
        claim = start_attempt(
            db_url=db_url, run_id=run_id, dispatcher_id=dispatcher_id, lease_seconds=lease_seconds
        )
        if claim is not None:
            claims.append(claim)
    outcomes = run_pack(db_url=db_url, claims=claims, lease_seconds=lease_seconds)
    return {
        "run_ids": run_ids,
        "started": bool(claims),
        "outcomes": {c.run_id: o for c, o in zip(claims, outcomes, strict=True)},
    }
