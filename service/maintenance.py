"""Periodic upkeep a dispatcher does (every PLATEAU_MAINTENANCE_SECONDS) and
`plateau db prune-curves` does on demand: thin old runs' per-step curves (when
PLATEAU_CURVE_RETENTION_DAYS is set) and drop rate-limit windows that have ended. The
dispatcher's round also thins the curves of schedules' nights past keep_curves_nights."""

from __future__ import annotations

from dataclasses import dataclass

from db import ratelimit, retention
from db.session import session_scope
from service.settings import Settings


@dataclass(frozen=True)
class Pruned:
    runs: int
    rows: int


def prune_curves(database_url: str, days: float) -> Pruned:
    """Thin the curves of every run finished more than `days` ago, a batch of runs per
    transaction (db/retention.py says what is kept)."""
    cutoff = retention.retention_cutoff(days)
    runs = rows = 0
    while True:
        with session_scope(database_url) as session:
            batch, deleted = retention.prune_curves_batch(session=session, finished_before=cutoff)
        if batch == 0:
            return Pruned(runs, rows)
        runs, rows = runs + batch, rows + deleted


def maintain(settings: Settings) -> tuple[Pruned | None, int]:
    """One round of upkeep: (curves pruned, or None without a retention; windows purged)."""
    pruned = None
    if settings.curve_retention_days is not None:
        pruned = prune_curves(settings.database_url, settings.curve_retention_days)
    while True:  # schedules' nights past their keep_curves_nights, a batch per transaction
        with session_scope(settings.database_url) as session:
            if retention.prune_old_nights(session=session)[0] == 0:
                break
    with session_scope(settings.database_url) as session:
        purged = ratelimit.purge_expired(session=session)
    return pruned, purged
