"""The dispatcher: claims queued runs as Ray has room and submits one Ray task per run.

It holds no state that matters: the database lease is the truth about which run is being
executed (Ray's own job status can be wrong after head restarts, kuberay#2161). Several
dispatchers may run against one Postgres; claims use FOR UPDATE SKIP LOCKED. Every tick
also reaps expired leases, so runs of a dead worker or dispatcher go back to the queue.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from db import queue
from db.models import utcnow
from db.session import session_scope
from service.maintenance import maintain
from service.metrics import CLAIM_LAG, RUNS_FINISHED
from service.settings import Settings

log = logging.getLogger(__name__)


def init_ray(settings: Settings, *, log_to_driver: bool = True) -> None:
    """Connect to RAY_ADDRESS, or start a local Ray instance (the embedded default)."""
    import ray

    if ray.is_initialized():
        return
    if settings.ray_address:
        ray.init(address=settings.ray_address, log_to_driver=log_to_driver)
    else:
        ray.init(
            num_cpus=settings.ray_num_cpus or os.cpu_count() or 1,
            include_dashboard=False,
            log_to_driver=log_to_driver,
        )


class Dispatcher:
    """Claim -> submit -> collect, one `tick` at a time."""

    def __init__(
        self, settings: Settings, *, capacity: int | None = None, worker_id: str | None = None
    ) -> None:
        self.settings = settings
        self.db_url = settings.database_url
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._capacity = capacity if capacity is not None else settings.capacity
        self.inflight: dict[Any, int] = {}  # Ray ObjectRef -> run id
        self._remote: Any = None
        self._next_maintenance = 0.0  # time.monotonic() of the next upkeep: the first tick

    def capacity(self) -> int:
        """Concurrent runs: the cluster's CPUs (one CPU per run), unless fixed."""
        if self._capacity is not None:
            return self._capacity
        import ray

        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def _cluster_gpus(self) -> float:
        import ray

        return float(ray.cluster_resources().get("GPU", 0))

    def _submit(self, claim: queue.Claim) -> Any:
        import ray

        from workers.remote import execute_run

        if self._remote is None:
            # No Ray-level retries: a lost task is retried through the lease and the queue,
            # which count attempts and fence stale writes.
            self._remote = ray.remote(execute_run).options(num_cpus=1, max_retries=0)
        options: dict[str, Any] = {}
        # Ask Ray for a GPU only where the cluster has one: otherwise the task would wait
        # forever, whereas without it the run fails at once and says why.
        if claim.config.get("device") == "cuda" and self._cluster_gpus() > 0:
            options["num_gpus"] = 1
        remote = self._remote.options(**options) if options else self._remote
        trial = None
        if claim.study_id is not None:
            from service.studies import trial_context

            trial = trial_context(self.db_url, claim.study_id)
            if trial is not None:
                trial["number"] = claim.trial_number
        return remote.remote(
            self.db_url,
            claim.run_id,
            claim.attempt,
            claim.config,
            self.settings.lease_seconds,
            trial,
        )

    def tick(self) -> int:
        """Reap, claim what fits, submit, collect finished tasks. Returns runs submitted."""
        import ray

        from service.studies import advance_all

        with session_scope(self.db_url) as session:
            requeued, failed = queue.reap_expired(session=session)
        if requeued or failed:
            log.warning("reaped expired leases: %d requeued, %d failed", requeued, failed)
            RUNS_FINISHED.labels(outcome="expired").inc(failed)
        advance_all(self.settings)  # tell Optuna about finished trials, enqueue new ones
        free = self.capacity() - len(self.inflight)
        claims: list[queue.Claim] = []
        if free > 0:
            with session_scope(self.db_url) as session:
                claims = queue.claim_runs(
                    session=session,
                    worker_id=self.worker_id,
                    limit=free,
                    lease_seconds=self.settings.lease_seconds,
                )
        claimed_at = utcnow()
        for claim in claims:
            if claim.queued_at is not None:
                CLAIM_LAG.observe((claimed_at - claim.queued_at).total_seconds())
            self.inflight[self._submit(claim)] = claim.run_id
        if self.inflight:
            done, _ = ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=0)
            for ref in done:
                run_id = self.inflight.pop(ref)
                try:
                    summary = ray.get(ref)
                    log.info("run %s: %s", run_id, summary)
                    RUNS_FINISHED.labels(outcome=summary.get("outcome", "unknown")).inc()
                except Exception:  # the worker died; the lease expiry requeues the run
                    log.exception("Ray task of run %s failed", run_id)
                    RUNS_FINISHED.labels(outcome="task_error").inc()
        return len(claims)

    def maintain_if_due(self) -> None:
        """Curve retention and rate-limit upkeep, every `maintenance_seconds`."""
        now = time.monotonic()
        if now < self._next_maintenance:
            return
        self._next_maintenance = now + self.settings.maintenance_seconds
        pruned, purged = maintain(self.settings)
        if pruned is not None and pruned.runs:
            log.info("curves of %d old runs thinned (%d rows)", pruned.runs, pruned.rows)

    def run(
        self,
        *,
        stop: threading.Event | None = None,
        until: Callable[[], bool] | None = None,
        on_tick: Callable[[], None] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Tick until `stop` is set or `until()` is true (checked after each tick)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                self.tick()
                self.maintain_if_due()
            except Exception:  # keep dispatching through database or Ray blips
                log.exception("dispatcher tick failed")
            if on_tick is not None:
                on_tick()
            if until is not None and until():
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("dispatcher did not finish before its timeout")
            stop.wait(self.settings.poll_seconds)


def start_in_thread(settings: Settings) -> tuple[threading.Thread, threading.Event]:
    """The embedded mode: a dispatcher thread inside `plateau serve`."""
    init_ray(settings)
    stop = threading.Event()
    dispatcher = Dispatcher(settings)
    thread = threading.Thread(
        target=dispatcher.run, kwargs={"stop": stop}, daemon=True, name="dispatcher"
    )
    thread.start()
    return thread, stop
