"""Execute one claimed attempt of a run against the database: train, stream evidence,
keep the lease alive, probe, and record the outcome. Runs inside a Ray task or in-process.

Every write names (run_id, attempt) and db/ rejects it once the attempt has lost the run,
so a worker that was presumed dead cannot overwrite anything.
"""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any

from db import queue
from db.errors import LeaseLost
from db.session import session_scope
from workers.config import RunConfig
from workers.diagnose import diagnose
from workers.errors import Stopped
from workers.train import ProbeContext, TrainHooks, train

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Renews the lease every lease/3 seconds; sets `lost` when the renewal is refused."""

    def __init__(self, db_url: str, run_id: int, attempt: int, lease_seconds: float) -> None:
        super().__init__(daemon=True, name=f"lease-{run_id}-{attempt}")
        self.db_url, self.run_id, self.attempt = db_url, run_id, attempt
        self.lease_seconds = lease_seconds
        self.lost = threading.Event()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.lease_seconds / 3):
            try:
                with session_scope(self.db_url) as session:
                    held = queue.renew_lease(
                        session=session,
                        run_id=self.run_id,
                        attempt=self.attempt,
                        lease_seconds=self.lease_seconds,
                    )
            except Exception:  # a database blip: try again next beat; the lease has slack
                log.exception("lease renewal of run %s failed", self.run_id)
                continue
            if not held:
                self.lost.set()
                return

    def stop(self) -> None:
        self._done.set()


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
    heartbeat = Heartbeat(db_url, run_id, attempt, lease_seconds)
    heartbeat.start()

    def on_metrics(rows: list[dict[str, Any]]) -> None:
        with session_scope(db_url) as session:
            queue.write_metrics(session=session, run_id=run_id, attempt=attempt, rows=rows)

    run_config = RunConfig.model_validate(config)
    probes: list[dict[str, Any]] = []

    def on_probe(context: ProbeContext) -> None:
        from workers.probing import probe_run

        record = probe_run(run_config, context)
        probes.append(record)
        with session_scope(db_url) as session:
            queue.write_probe(session=session, run_id=run_id, attempt=attempt, probe=record)

    hooks = TrainHooks(on_metrics=on_metrics, should_stop=heartbeat.lost.is_set, on_probe=on_probe)
    if trial is not None:
        from workers.trial import reporter

        hooks.on_report, hooks.report_every = reporter(db_url, trial), trial["report_every"]
    try:
        try:
            result = train(run_config, hooks)
            outcome, record, error = result.outcome, result.record(), None
            if result.outcome == "diverged":
                error = (
                    "loss diverged (non-finite or above the divergence bound) "
                    f"at step {result.diverged_step}"
                )
            end_probe = next((p for p in reversed(probes) if p["trigger"] == "end"), None)
            record["diagnosis"] = diagnose(result, run_config, end_probe)
        except (Stopped, LeaseLost):
            log.info("run %s attempt %s stopped: lease lost or cancelled", run_id, attempt)
            return "stopped"
        except Exception as exc:  # one broken run must not take the sweep down
            outcome, record = "failed", {}
            error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"
        with session_scope(db_url) as session:
            queue.complete_run(
                session=session,
                run_id=run_id,
                attempt=attempt,
                outcome=outcome,
                result=record,
                error=error,
            )
        return outcome
    except LeaseLost:
        log.info("run %s attempt %s lost its lease before recording", run_id, attempt)
        return "lost"
    finally:
        heartbeat.stop()
