"""The run queue: enqueue, reserve, start with a lease, renew, complete (fenced), reap, cancel.

A run's way through the queue, and who moves it:

- queued: the API (or CLI) enqueued it.
- queued + reserved: a dispatcher reserved it (`reserve_runs`: `lease_owner` = the
  dispatcher, `lease_expires_at` = the reservation's end, renewed every tick) and handed it
  to Ray. A reservation costs no attempt: the run may wait in Ray's queue, or Ray may be
  down, and nothing is spent. An expired reservation (its dispatcher died) is free again.
- running: the Ray task itself, once it executes on a worker, starts the attempt
  (`start_run`: `attempts + 1`, a lease of its own, kept alive by the worker's heartbeat).
  So a lease covers a run that a worker has really started, and only then is an attempt
  spent. `claim_runs` does both steps at once, for callers that execute right away.
- succeeded | diverged | failed: the attempt recorded its outcome (`complete_run`); or
  cancelled (`cancel_sweep`). A lease that expires sends the run back to queued (`reap_expired`)
  until its attempts are used up.

Fencing: starting increments `run.attempts`, and the new value is the attempt's token. Every
write a worker makes names (run_id, attempt) and is accepted only while the run is still
`running` under that attempt. A reaped or cancelled attempt therefore cannot write a result,
so each run has exactly one recorded result however many times it executed.

Postgres claims with `FOR UPDATE SKIP LOCKED` inside a CTE that carries the LIMIT (a bare
`UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)` may be re-evaluated and
update more rows than asked). SQLite has no row locks: every transaction there begins with
`BEGIN IMMEDIATE` (db/session.py), which serializes claimers; the same statement is correct.
"""

from __future__ import annotations

import datetime as dt
import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, Result, delete, insert, or_, select, text, update
from sqlalchemy.orm import Session

from db.auth import legacy_user
from db.errors import LeaseLost, SweepCancelled
from db.leaderboard import COUNTED_OUTCOMES, refresh_configurations, refresh_rollup
from db.models import Probe, ResultRollup, Run, RunMetric, RunResult, Sweep, User, utcnow

QUEUE_LOCK = 7413  # first key of lock_queue's advisory locks (studies 7411, rollups 7412)


def _rowcount(result: Result[Any]) -> int:
    # Session.execute is typed to return a Result, but for an UPDATE/DELETE without RETURNING
    # it is a CursorResult, the kind with rowcount: SQLAlchemy documents this cast.
    return cast(CursorResult[Any], result).rowcount


@dataclass(frozen=True)
class Claim:
    """What a worker needs to execute one attempt of a run. Pickles without an engine."""

    run_id: int
    attempt: int
    config: dict[str, Any]
    lease_expires_at: dt.datetime
    study_id: int | None = None  # set for the runs of study trials
    trial_number: int | None = None
    queued_at: dt.datetime | None = None  # for the dispatcher's claim-lag metric


def enqueue_sweep(
    *,
    session: Session,
    name: str,
    owner: User | str,
    spec: dict[str, Any],
    runs: Sequence[tuple[dict[str, Any], str, str]],
    max_attempts: int = 3,
    source: str = "api",
    software: dict[str, Any] | None = None,
) -> Sweep:
    """Insert a sweep and its runs (config, config_hash, config_key) as queued, at once.

    `owner` is the submitting key's user; a name (single-user mode, the embedded CLI) stands
    for the legacy user of that name (db.auth.legacy_user)."""
    user = (
        legacy_user(session=session, name=owner)
        if isinstance(owner, str)
        else session.get_one(User, owner.id)  # the caller's may belong to another session
    )
    sweep = Sweep(
        name=name,
        owner_user=user,
        spec=spec,
        n_runs=len(runs),
        source=source,
        software=software or {},
    )
    session.add(sweep)
    session.flush()
    if runs:
        now = utcnow()
        session.execute(
            insert(Run),
            [
                {
                    "sweep_id": sweep.id,
                    "grid_index": i,
                    "config": config,
                    "config_hash": digest,
                    "config_key": key,
                    "task": config["task"]["name"],
                    "architecture": config["architecture"]["name"],
                    "status": "queued",
                    "attempts": 0,
                    "max_attempts": max_attempts,
                    "queued_at": now,
                }
                for i, (config, digest, key) in enumerate(runs)
            ],
        )
    return sweep


def enqueue_trial_run(
    *,
    session: Session,
    sweep_id: int,
    study_id: int,
    trial_number: int,
    config: dict[str, Any],
    config_hash: str,
    config_key: str,
    max_attempts: int,
) -> int:
    """Queue the run of one study trial in the study's sweep; returns the run id."""
    run = Run(
        sweep_id=sweep_id,
        grid_index=trial_number,
        config=config,
        config_hash=config_hash,
        config_key=config_key,
        task=config["task"]["name"],
        architecture=config["architecture"]["name"],
        status="queued",
        attempts=0,
        max_attempts=max_attempts,
        study_id=study_id,
        trial_number=trial_number,
    )
    session.add(run)
    session.execute(update(Sweep).where(Sweep.id == sweep_id).values(n_runs=Sweep.n_runs + 1))
    session.flush()
    return run.id


@dataclass(frozen=True)
class Reservation:
    """A queued run a dispatcher reserved and hands to Ray. Pickles without an engine."""

    run_id: int
    config: dict[str, Any]
    study_id: int | None = None
    trial_number: int | None = None
    queued_at: dt.datetime | None = None  # for the dispatcher's claim-lag metric


def _free_queued(limit: int, now: dt.datetime) -> Any:
    """The oldest `limit` queued runs nobody holds a live reservation of, locked (SKIP
    LOCKED on Postgres, inside the CTE that carries the LIMIT)."""
    return (
        select(Run.id)
        .where(
            Run.status == "queued",
            or_(Run.lease_expires_at.is_(None), Run.lease_expires_at < now),
        )
        .order_by(Run.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("picked")
    )


def reserve_runs(
    *, session: Session, dispatcher_id: str, limit: int, seconds: float
) -> list[Reservation]:
    """Reserve up to `limit` free queued runs (oldest first) for `dispatcher_id`, for
    `seconds`. The runs stay queued and no attempt is spent: the Ray task starts the attempt
    (`start_run`) when a worker executes it."""
    if limit <= 0:
        return []
    now = utcnow()
    picked = _free_queued(limit, now)
    rows = session.execute(
        update(Run)
        .where(Run.id.in_(select(picked.c.id)))
        .values(lease_owner=dispatcher_id, lease_expires_at=now + dt.timedelta(seconds=seconds))
        .returning(Run.id, Run.config, Run.study_id, Run.trial_number, Run.queued_at)
        .execution_options(synchronize_session=False)
    ).all()
    return sorted(
        (
            Reservation(
                run_id=r.id,
                config=r.config,
                study_id=r.study_id,
                trial_number=r.trial_number,
                queued_at=r.queued_at,
            )
            for r in rows
        ),
        key=lambda r: r.run_id,
    )


def renew_reservations(
    *, session: Session, dispatcher_id: str, run_ids: Sequence[int], seconds: float
) -> set[int]:
    """Extend this dispatcher's reservations of `run_ids`; returns the ones still reserved,
    i.e. handed to Ray and not started yet (the others started, or were cancelled)."""
    if not run_ids:
        return set()
    rows = session.execute(
        update(Run)
        .where(
            Run.id.in_(run_ids),
            Run.status == "queued",
            Run.lease_owner == dispatcher_id,
        )
        .values(lease_expires_at=utcnow() + dt.timedelta(seconds=seconds))
        .returning(Run.id)
        .execution_options(synchronize_session=False)
    ).all()
    return {r.id for r in rows}


def release_reservations(
    *, session: Session, dispatcher_id: str, run_ids: Sequence[int] | None = None
) -> int:
    """Give back this dispatcher's reservations of runs that did not start (all of them when
    `run_ids` is None), so any dispatcher may take them at once."""
    where = [Run.status == "queued", Run.lease_owner == dispatcher_id]
    if run_ids is not None:
        if not run_ids:
            return 0
        where.append(Run.id.in_(run_ids))
    return _rowcount(
        session.execute(
            update(Run)
            .where(*where)
            .values(lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )
    )


def start_run(
    *, session: Session, run_id: int, dispatcher_id: str, lease_seconds: float
) -> Claim | None:
    """Start an attempt of a run reserved by `dispatcher_id`: running, `attempts + 1`, under
    a fresh lease. Called by the worker that executes it. None when the reservation is gone
    (the run was cancelled, or another dispatcher took it after this one's reservation
    expired): this task then has nothing to do, and no attempt was spent."""
    now = utcnow()
    expires = now + dt.timedelta(seconds=lease_seconds)
    row = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "queued", Run.lease_owner == dispatcher_id)
        .values(
            status="running", attempts=Run.attempts + 1, lease_expires_at=expires, started_at=now
        )
        .returning(Run.attempts, Run.config, Run.study_id, Run.trial_number)
        .execution_options(synchronize_session=False)
    ).first()
    if row is None:
        return None
    return Claim(
        run_id=run_id,
        attempt=row.attempts,
        config=row.config,
        lease_expires_at=expires,
        study_id=row.study_id,
        trial_number=row.trial_number,
    )


def claim_runs(
    *, session: Session, worker_id: str, limit: int, lease_seconds: float
) -> list[Claim]:
    """Reserve and start up to `limit` free queued runs (oldest first) at once, under a fresh
    lease: for a caller that executes them right away, in this process."""
    if limit <= 0:
        return []
    now = utcnow()
    expires = now + dt.timedelta(seconds=lease_seconds)
    picked = _free_queued(limit, now)
    rows = session.execute(
        update(Run)
        .where(Run.id.in_(select(picked.c.id)))
        .values(
            status="running",
            attempts=Run.attempts + 1,
            lease_owner=worker_id,
            lease_expires_at=expires,
            started_at=now,
        )
        .returning(Run.id, Run.attempts, Run.config, Run.study_id, Run.trial_number, Run.queued_at)
        .execution_options(synchronize_session=False)
    ).all()
    return sorted(
        (
            Claim(
                run_id=r.id,
                attempt=r.attempts,
                config=r.config,
                lease_expires_at=expires,
                study_id=r.study_id,
                trial_number=r.trial_number,
                queued_at=r.queued_at,
            )
            for r in rows
        ),
        key=lambda c: c.run_id,
    )


def renew_lease(*, session: Session, run_id: int, attempt: int, lease_seconds: float) -> bool:
    """Extend the lease; False when the attempt lost the run (reaped or cancelled)."""
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.attempts == attempt, Run.status == "running")
        .values(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def _assert_owner(session: Session, run_id: int, attempt: int) -> None:
    # FOR SHARE (Postgres) blocks a concurrent completion or reap of this row until we commit,
    # so no write slips in between the check and the insert.
    owner = session.execute(
        select(Run.id)
        .where(Run.id == run_id, Run.attempts == attempt, Run.status == "running")
        .with_for_update(read=True)
    ).first()
    if owner is None:
        raise LeaseLost(run_id, attempt)


METRIC_COLUMNS = tuple(c.name for c in RunMetric.__table__.columns)


def write_metrics(
    *, session: Session, run_id: int, attempt: int, rows: Iterable[dict[str, Any]]
) -> int:
    """Append a batch of per-step metric rows in the session's transaction, after the
    attempt's fencing check: on PostgreSQL by COPY (2.3x the rows/s of an executemany of
    the same rows: benchmarks/ingestion.py), elsewhere one executemany."""
    batch = [{**row, "run_id": run_id, "attempt": attempt} for row in rows]
    if not batch:
        return 0
    unknown = {k for row in batch for k in row} - set(METRIC_COLUMNS)
    if unknown:
        raise ValueError(f"metric rows with unknown fields: {sorted(unknown)}")
    _assert_owner(session, run_id, attempt)
    if session.get_bind().dialect.name == "postgresql":
        _copy_metrics(session, batch)
    else:
        session.execute(insert(RunMetric), batch)
    return len(batch)


def _copy_metrics(session: Session, batch: list[dict[str, Any]]) -> None:
    """COPY the rows into run_metric on the session's own connection and transaction (JSON
    fields as JSON text, as the ORM's JSON type writes them)."""
    raw = session.connection().connection.driver_connection
    assert raw is not None  # a live connection of this transaction
    statement = f"COPY run_metric ({', '.join(METRIC_COLUMNS)}) FROM STDIN"
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for row in batch:
            copy.write_row(
                [
                    json.dumps(v) if isinstance(v, dict | list) else v
                    for v in (row.get(c) for c in METRIC_COLUMNS)
                ]
            )


def write_probe(*, session: Session, run_id: int, attempt: int, probe: dict[str, Any]) -> int:
    """Store one probe result of a running attempt; returns the probe id."""
    _assert_owner(session, run_id, attempt)
    row = Probe(run_id=run_id, attempt=attempt, **probe)
    session.add(row)
    session.flush()
    return row.id


def complete_run(
    *,
    session: Session,
    run_id: int,
    attempt: int,
    outcome: str,
    result: dict[str, Any],
    error: str | None = None,
) -> None:
    """Record the attempt's outcome (succeeded | diverged | failed) and its one result row.

    Raises LeaseLost, writing nothing, when the attempt no longer owns the run.
    """
    if outcome not in ("succeeded", "diverged", "failed"):
        raise ValueError(f"unknown outcome {outcome!r}")
    now = utcnow()
    updated = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.attempts == attempt, Run.status == "running")
        # lease_owner stays: it names the dispatcher whose attempt produced the result.
        .values(status=outcome, finished_at=now, lease_expires_at=None, error=error)
        .returning(Run.config_key, Run.task, Run.architecture, Run.sweep_id, Run.config)
        .execution_options(synchronize_session=False)
    ).first()
    if updated is None:
        raise LeaseLost(run_id, attempt)
    # Curves and probes of attempts that lost their lease are not evidence for this result.
    session.execute(
        delete(RunMetric).where(RunMetric.run_id == run_id, RunMetric.attempt != attempt)
    )
    session.execute(delete(Probe).where(Probe.run_id == run_id, Probe.attempt != attempt))
    environment = result.get("environment") or {}
    recorded = RunResult(
        run_id=run_id,
        attempt=attempt,
        outcome=outcome,
        device=environment.get("device"),
        torch_version=environment.get("torch"),
        config_key=updated.config_key,
        task=updated.task,
        architecture=updated.architecture,
        sweep_id=updated.sweep_id,
        budget_steps=(updated.config.get("budget") or {}).get("steps"),
        verdict=(result.get("diagnosis") or {}).get("verdict"),
        created_at=now,
        **result,
    )
    session.add(recorded)
    if outcome in COUNTED_OUTCOMES and recorded.pruned_step is None:
        session.flush()
        refresh_rollup(session=session, result=recorded)


def reap_expired(*, session: Session) -> tuple[int, int]:
    """Requeue running runs whose lease expired; fail those out of attempts.

    Returns (requeued, failed). The database lease is the truth about liveness, not Ray.
    """
    now = utcnow()
    expired = (Run.status == "running", Run.lease_expires_at < now)
    requeued = _rowcount(
        session.execute(
            update(Run)
            .where(*expired, Run.attempts < Run.max_attempts)
            .values(status="queued", lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )
    )
    failed = _rowcount(
        session.execute(
            update(Run)
            .where(*expired, Run.attempts >= Run.max_attempts)
            .values(
                status="failed",
                lease_owner=None,
                lease_expires_at=None,
                finished_at=now,
                error="lease expired on the last allowed attempt (worker lost)",
            )
            .execution_options(synchronize_session=False)
        )
    )
    return requeued, failed


def cancel_sweep(*, session: Session, sweep_id: int) -> int:
    """Cancel a sweep's queued and running runs; running attempts see it at their next renew."""
    now = utcnow()
    session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.cancelled_at.is_(None))
        .values(cancelled_at=now)
    )
    return _rowcount(
        session.execute(
            update(Run)
            .where(Run.sweep_id == sweep_id, Run.status.in_(("queued", "running")))
            .values(status="cancelled", finished_at=now, lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )
    )


def lock_queue(*, session: Session, team: str | None) -> None:
    """Make one team's submissions take turns until this transaction ends, so the count of
    unfinished runs each checks against its limit includes the ones before it (Postgres;
    SQLite's write transactions already take turns)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:space, :key)"),
            {"space": QUEUE_LOCK, "key": zlib.crc32((team or "").encode()) - 2**31},
        )


def _lock_sweep(session: Session, sweep_id: int) -> Sweep | None:
    # FOR UPDATE: a cancel (which updates this row first), a retry and a delete of one sweep
    # take turns (Postgres; SQLite's writers already do).
    return session.scalars(select(Sweep).where(Sweep.id == sweep_id).with_for_update()).first()


@dataclass(frozen=True)
class Deleted:
    runs: int
    configurations: int  # leaderboard configurations whose sums were recomputed


def delete_sweep(*, session: Session, sweep_id: int) -> Deleted | None:
    """Delete a sweep with its runs and their curves, probes and results (the foreign keys
    cascade), then recompute the leaderboard sums of the configurations it had results in.
    None when there is no such sweep.

    A worker still running one of its runs loses its lease: its next write finds no run and
    raises LeaseLost, so it stops. The runs are locked first, so a result being recorded
    concurrently either commits before (and its configuration is recomputed) or finds its
    run gone."""
    if _lock_sweep(session, sweep_id) is None:
        return None
    run_ids = select(Run.id).where(Run.sweep_id == sweep_id)
    n_runs = len(session.scalars(run_ids.with_for_update()).all())
    keys = set(session.scalars(select(RunResult.config_key).where(RunResult.run_id.in_(run_ids))))
    keys.update(
        session.scalars(select(ResultRollup.config_key).where(ResultRollup.sweep_id == sweep_id))
    )
    session.execute(delete(Sweep).where(Sweep.id == sweep_id))
    refresh_configurations(session=session, config_keys=keys)
    return Deleted(runs=n_runs, configurations=len(keys))


def retry_failed_runs(*, session: Session, sweep_id: int, extra_attempts: int) -> int:
    """Queue a sweep's failed runs again, each allowed `extra_attempts` more claims; returns
    how many. Attempt numbers go on from where they were (they fence writes, so they never
    repeat), and the failed attempt's result, curves and probes are deleted (a failed result
    is not counted on the leaderboard, so its sums stay as they are).

    Raises SweepCancelled for a cancelled sweep: retrying would undo the cancel."""
    sweep = _lock_sweep(session, sweep_id)
    if sweep is None:
        return 0
    if sweep.cancelled_at is not None:
        raise SweepCancelled(sweep_id)
    failed = select(Run.id).where(Run.sweep_id == sweep_id, Run.status == "failed")
    ids = session.scalars(failed.with_for_update()).all()
    if not ids:
        return 0
    session.execute(delete(RunResult).where(RunResult.run_id.in_(ids)))
    session.execute(delete(RunMetric).where(RunMetric.run_id.in_(ids)))
    session.execute(delete(Probe).where(Probe.run_id.in_(ids)))
    session.execute(
        update(Run)
        .where(Run.id.in_(ids))
        .values(
            status="queued",
            max_attempts=Run.attempts + extra_attempts,
            queued_at=utcnow(),
            started_at=None,
            finished_at=None,
            lease_owner=None,
            lease_expires_at=None,
            error=None,
        )
        .execution_options(synchronize_session=False)
    )
    return len(ids)
