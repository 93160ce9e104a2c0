"""Execute one attempt of a run against the database: train, stream evidence, keep the
lease alive, probe, and record the outcome. Runs inside a Ray task or in-process.

Every write names (run_id, attempt) and db/ rejects it once the attempt has lost the run,
so a worker that was presumed dead cannot overwrite anything.

A database outage shorter than the lease costs nothing: the heartbeat and every write retry
with a capped backoff, one log line each, until the lease this worker last renewed would
have run out. Past that the attempt gives up (as if its lease were lost) and the reaper
requeues the run once the database is back.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from db import queue
from db.errors import LeaseLost, database_unavailable
from db.session import session_scope
from workers.config import RunConfig
from workers.diagnose import diagnose
from workers.errors import Stopped
from workers.train import ProbeContext, TrainHooks, TrainResult, train

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 5.0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def retry_unavailable(fn: Callable[[], T], *, what: str, until: Callable[[], float]) -> T:
    """`fn()`, tried again while the database is unreachable and `time.monotonic()` is before
    `until()`; any other error, or the deadline, raises."""
    delay = RETRY_FIRST_SECONDS
    while True:
        try:
            return fn()
        except Exception as e:
            if not database_unavailable(e) or time.monotonic() + delay >= until():
                raise
            log.warning(
                "%s: database unavailable (%s); retry in %.1f s", what, _first_line(e), delay
            )
        time.sleep(delay)
        delay = min(2 * delay, RETRY_MAX_SECONDS)


def start_attempt(
    *, db_url: str, run_id: int, dispatcher_id: str, lease_seconds: float
) -> queue.Claim | None:
    """Start the attempt of a run this worker's dispatcher reserved (db.queue.start_run)."""

    def start() -> queue.Claim | None:
        with session_scope(db_url) as session:
            return queue.start_run(
                session=session,
                run_id=run_id,
                dispatcher_id=dispatcher_id,
                lease_seconds=lease_seconds,
            )

    deadline = time.monotonic() + lease_seconds
    claim = retry_unavailable(start, what=f"start of run {run_id}", until=lambda: deadline)
    if claim is None:
        log.info("run %s: its reservation is gone (cancelled or taken over); not started", run_id)
    return claim


class Heartbeat(threading.Thread):
    """Renews the lease every lease/3 seconds; sets `lost` when the renewal is refused.

    `held_until()` is when the lease this worker last renewed runs out (monotonic clock):
    writes that meet a database outage retry until then.
    """

    def __init__(self, db_url: str, run_id: int, attempt: int, lease_seconds: float) -> None:
        super().__init__(daemon=True, name=f"lease-{run_id}-{attempt}")
        self.db_url, self.run_id, self.attempt = db_url, run_id, attempt
        self.lease_seconds = lease_seconds
        self.lost = threading.Event()
        self._done = threading.Event()
        self._held_until = time.monotonic() + lease_seconds

    def held_until(self) -> float:
        return self._held_until

    def run(self) -> None:
        while not self._done.wait(self.lease_seconds / 3):
            asked_at = time.monotonic()
            try:
                with session_scope(self.db_url) as session:
                    held = queue.renew_lease(
                        session=session,
                        run_id=self.run_id,
                        attempt=self.attempt,
                        lease_seconds=self.lease_seconds,
                    )
            except Exception as e:  # try again next beat: the lease has slack
                if database_unavailable(e):
                    log.warning(
                        "lease renewal of run %s: database unavailable (%s)",
                        self.run_id,
                        _first_line(e),
                    )
                else:
                    log.exception("lease renewal of run %s failed", self.run_id)
                continue
            if not held:
                self.lost.set()
                return
            self._held_until = asked_at + self.lease_seconds

    def stop(self) -> None:
        self._done.set()


def _failure(exc: BaseException) -> str:
    """A failed run's error: the exception, then its traceback (at most 8 frames)."""
    return f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(exc, limit=8))


class Attempt:
    """One started attempt of a run: its heartbeat, the hooks that stream its evidence and
    probes to the database, and the recording of its end. `execute` drives one attempt
    through `train`; `execute_pack` (workers/remote.py) drives several through one packed
    computation, each with its own lease, writes and fencing."""

    def __init__(
        self,
        *,
        db_url: str,
        run_id: int,
        attempt: int,
        config: dict[str, Any],
        lease_seconds: float,
        trial: dict[str, Any] | None = None,
    ) -> None:
        self.db_url, self.run_id, self.attempt = db_url, run_id, attempt
        self.config = RunConfig.model_validate(config)
        self.heartbeat = Heartbeat(db_url, run_id, attempt, lease_seconds)
        self.probes: list[dict[str, Any]] = []
        self.hooks = TrainHooks(
            on_metrics=self._on_metrics,
            should_stop=self.heartbeat.lost.is_set,
            on_probe=self._on_probe,
        )
        if trial is not None:
            from workers.trial import reporter

            self.hooks.on_report, self.hooks.report_every = (
                reporter(db_url, trial),
                trial["report_every"],
            )
        self.heartbeat.start()

    def write(self, what: str, fn: Callable[[Any], T]) -> T:
        """One write of this attempt, retried through a database outage while the lease
        lasts; past the lease the attempt stops as if it had lost it."""

        def once() -> T:
            with session_scope(self.db_url) as session:
                return fn(session)

        try:
            return retry_unavailable(
                once, what=f"{what} of run {self.run_id}", until=self.heartbeat.held_until
            )
        except Exception as e:
            if database_unavailable(e):
                raise LeaseLost(self.run_id, self.attempt) from e
            raise

    def _on_metrics(self, rows: list[dict[str, Any]]) -> None:
        run_id, attempt = self.run_id, self.attempt
        self.write(
            "metrics",
            lambda s: queue.write_metrics(session=s, run_id=run_id, attempt=attempt, rows=rows),
        )

    def _on_probe(self, context: ProbeContext) -> None:
        from workers.probing import probe_run

        record = probe_run(self.config, context)
        self.probes.append(record)
        run_id, attempt = self.run_id, self.attempt
        self.write(
            "probe",
            lambda s: queue.write_probe(session=s, run_id=run_id, attempt=attempt, probe=record),
        )

    def finish(self, outcome: TrainResult | BaseException) -> str:
        """Record how the attempt ended (a result, or the exception that ended it) and stop
        its heartbeat; returns the recorded outcome, or 'lost' / 'stopped'."""
        run_id, attempt = self.run_id, self.attempt
        try:
            if isinstance(outcome, Stopped | LeaseLost):
                log.info("run %s attempt %s stopped: lease lost or cancelled", run_id, attempt)
                return "stopped"
            if isinstance(outcome, BaseException):  # one broken run must not take the sweep down
                status, record, error = "failed", {}, _failure(outcome)
            else:
                try:
                    status, record, error = self._result(outcome)
                except Exception as exc:
                    status, record, error = "failed", {}, _failure(exc)
            self.write(
                "result",
                lambda s: queue.complete_run(
                    session=s,
                    run_id=run_id,
                    attempt=attempt,
                    outcome=status,
                    result=record,
                    error=error,
                ),
            )
            return status
        except LeaseLost:
            log.info("run %s attempt %s lost its lease before recording", run_id, attempt)
            return "lost"
        finally:
            self.heartbeat.stop()

    def _result(self, result: TrainResult) -> tuple[str, dict[str, Any], str | None]:
        record, error = result.record(), None
        if result.outcome == "diverged":
            error = (
                "loss diverged (non-finite or above the divergence bound) "
                f"at step {result.diverged_step}"
            )
        end_probe = next((p for p in reversed(self.probes) if p["trigger"] == "end"), None)
        record["diagnosis"] = diagnose(result, self.config, end_probe)
        return result.outcome, record, error


def execute(
    *,
    db_url: str,
    run_id: int,
    attempt: int,
    config: dict[str, Any],
    lease_seconds: float,
    trial: dict[str, Any] | None = None,
) -> str:
    """Run one attempt to its end; returns the recorded outcome, or 'lost' / 'stopped'."""
    run = Attempt(
        db_url=db_url,
        run_id=run_id,
        attempt=attempt,
        config=config,
        lease_seconds=lease_seconds,
        trial=trial,
    )
    try:
        result: TrainResult | BaseException = train(run.config, run.hooks)
    except Exception as exc:
        result = exc
    return run.finish(result)


def execute_pack(*, db_url: str, claims: list[queue.Claim], lease_seconds: float) -> list[str]:
    """Run started attempts together: packed where their configs pack
    (`workers.packed.train_many`), one by one otherwise; each attempt keeps its own lease,
    writes and fencing, and a run that fails, diverges or loses its lease ends alone. An
    error of the batched computation itself ends each attempt of that pack as failed; a run
    whose attempt cannot be set up (its config does not load here) is left to its lease, as
    a one-run task that raises is, and counts as "task_error". Returns the outcomes, in order."""
    from workers.packed.train import train_many

    runs: dict[int, Attempt] = {}  # claim index -> its attempt
    for i, c in enumerate(claims):
        try:
            runs[i] = Attempt(
                db_url=db_url,
                run_id=c.run_id,
                attempt=c.attempt,
                config=c.config,
                lease_seconds=lease_seconds,
            )
        except Exception:  # as a one-run task that raises: its lease runs out, it is requeued
            log.exception("run %s attempt %s could not be set up", c.run_id, c.attempt)
    started = list(runs.values())
    try:
        outcomes: list[TrainResult | BaseException] = list(
            train_many([r.config for r in started], [r.hooks for r in started])
        )
    except Exception as exc:
        outcomes = [exc] * len(started)
    recorded = {i: run.finish(o) for (i, run), o in zip(runs.items(), outcomes, strict=True)}
    return [recorded.get(i, "task_error") for i in range(len(claims))]
