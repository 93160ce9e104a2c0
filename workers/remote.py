"""The function Ray ships to workers. Torch-free at import time: the dispatcher imports this
module without pulling the training stack into the API process."""

from __future__ import annotations

from typing import Any


def execute_run(
    db_url: str, run_id: int, attempt: int, config: dict[str, Any], lease_seconds: float
) -> dict[str, Any]:
    """Execute one claimed attempt; returns a small summary for the dispatcher's log."""
    from workers.runner import execute

    outcome = execute(
        db_url=db_url, run_id=run_id, attempt=attempt, config=config, lease_seconds=lease_seconds
    )
    return {"run_id": run_id, "attempt": attempt, "outcome": outcome}
