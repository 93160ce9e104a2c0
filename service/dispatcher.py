"""The dispatcher: reserves queued runs as Ray has room and hands them to Ray tasks, a pack
of runs that train together per task where they pack, one run per task otherwise.

It holds no state that matters: the database is the truth about which run is being
executed (Ray's own job status can be wrong after head restarts, kuberay#2161). Several
dispatchers may run against one Postgres; reservations use FOR UPDATE SKIP LOCKED. Every
tick also reaps expired leases, so runs of a dead worker go back to the queue.

Capacity, and why a run never spends an attempt waiting (db/queue.py has the states):

- A dispatcher hands Ray no more runs than the cluster can start now: at most its free CPUs
  (`ray.available_resources`, asked with a timeout), at most `PLATEAU_CAPACITY` in flight,
  and nothing at all while a run it handed over has not started yet (so a stale view of the
  free CPUs, or another dispatcher that took them first, costs at most one round). The CPUs
  of its own tasks that it has just seen end count as free: Ray's view of the free CPUs
  lags a task's end by up to ~0.1 s, and a refill on completion would otherwise see none.
- The run stays `queued` (reserved, renewed every tick) until the Ray task starts it on a
  worker; only then is an attempt counted and a lease taken. Time in Ray's queue, a raylet
  that died, Ray being down: none of it costs an attempt. A task that ends without starting
  its run gives the reservation back.

Packs: each free CPU slot takes up to `PLATEAU_PACK_SIZE` runs (16 by default). Reserved
runs that share data, shapes, batch size and optimizer (`workers.packed.grouping`) are
split into near-equal packs, as many as there are free slots, and each pack is one Ray task
(`workers.remote.execute_pack`) that starts, leases, trains and records each of its runs on
its own; study trials, runs that ask for a GPU and runs that do not pack get a task each.
Reservations the free slots cannot take this tick are given back at once.

Between ticks the dispatcher waits on its Ray tasks, not on a clock: the first task to end
wakes it (at most `poll_seconds` later it ticks anyway, for new runs and the upkeep), so a
slot is refilled as soon as Ray reports it free. With nothing in flight, or after a failed
tick, it sleeps as before.

Outages: a tick that fails because the database or Ray is unreachable is retried after a
capped exponential backoff with jitter, one log line per try (a traceback only for errors
that are neither). A standalone dispatcher (`plateau dispatcher`) whose Ray cluster is lost
(its node died, or the cluster stopped answering) restarts its own process to reconnect:
a Ray driver cannot rejoin a restarted cluster.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from db import queue
from db.errors import database_unavailable
from db.models import utcnow
from db.session import masked_url, session_scope
from service.maintenance import maintain
from service.metrics import CLAIM_LAG, RUNS_FINISHED
from service.raycluster import ClusterState, cluster_state, init_ray
from service.settings import Settings

if TYPE_CHECKING:
    from workers.config import RunConfig

__all__ = [
    "Dispatcher",
    "RayUnavailable",
    "init_ray",
    "new_dispatcher_id",
    "retry_until_done",
    "start_in_thread",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
# Longest single wait on Ray between ticks: how soon a stop is seen while runs are in flight.
STOP_CHECK_SECONDS = 0.5
# The share of a GPU's memory a pack may fill with its runs: the rest is for the CUDA context,
# the allocator's slack, the task data and the probes (which take one run at a time).
GPU_MEMORY_SHARE = 0.8


class RayUnavailable(Exception):
    """The Ray cluster cannot start runs now. `lost`: it does not answer, or this driver's
    node died, so this process cannot use it again (a cluster with no CPUs is not lost)."""

    def __init__(self, message: str, *, lost: bool = True) -> None:
        super().__init__(message)
        self.lost = lost


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def backoff_seconds(failures: int, *, base: float, cap: float) -> float:
    """Capped exponential backoff with jitter: the n-th consecutive failure waits between
    half and all of min(cap, base * 2^(n-1))."""
    ceiling = min(cap, base * 2 ** max(0, failures - 1))
    return random.uniform(ceiling / 2, ceiling)


def new_dispatcher_id() -> str:
    """host:pid:random, the `lease_owner` of what this dispatcher reserves."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def retry_until_done(fn: Callable[[], T], *, what: str, settings: Settings) -> T:
    """`fn()`, tried again with backoff while the database or Ray cannot be reached (a process
    that starts during an outage waits for its end); other errors raise."""
    failures = 0
    while True:
        try:
            return fn()
        except Exception as e:
            if not (database_unavailable(e) or _ray_unreachable(e)):
                raise
            failures += 1
            wait = backoff_seconds(
                failures, base=settings.poll_seconds, cap=settings.backoff_max_seconds
            )
            cause = f" ({_first_line(e.__cause__)})" if e.__cause__ is not None else ""
            log.warning("%s: %s%s; next try in %.1f s", what, _first_line(e), cause, wait)
            time.sleep(wait)


def _ray_unreachable(exc: BaseException) -> bool:
    # ray.init raises ConnectionError (a builtin) when the cluster does not answer, its cause
    # (e.g. a refused token) as __cause__.
    return isinstance(exc, ConnectionError | TimeoutError)


def wants_gpu(config: dict[str, Any], cluster_gpus: float) -> bool:
    """Whether a run trains on a GPU: `device: cuda`, or `auto` in a cluster with GPUs
    (workers.train.resolve_device then takes the GPU Ray gave the task, and only that)."""
    device = config.get("device", "auto")
    return device == "cuda" or (device == "auto" and cluster_gpus > 0)


class Dispatcher:
    """Reserve -> hand to Ray -> collect, one `tick` at a time."""

    def __init__(
        self,
        settings: Settings,
        *,
        capacity: int | None = None,
        worker_id: str | None = None,
        on_ray_lost: Callable[[RayUnavailable], None] | None = None,
        refill_on_finish: bool = True,
    ) -> None:
        self.settings = settings
        # False: a fixed `poll_seconds` between ticks, the behaviour before issue 13, kept as
        # the baseline of benchmarks/dispatch.py.
        self._refill_on_finish = refill_on_finish
        self.db_url = settings.database_url
        self.worker_id = worker_id or new_dispatcher_id()
        self._capacity = capacity if capacity is not None else settings.capacity
        self.inflight: dict[Any, list[int]] = {}  # Ray ObjectRef -> the run ids of its task
        self._remote: Any = None
        self._remote_pack: Any = None
        self._on_ray_lost = on_ray_lost
        self._next_maintenance = 0.0  # time.monotonic() of the next upkeep: the first tick

    def _submit(self, reservation: queue.Reservation, gpus: float) -> Any:
        import ray

        from workers.remote import execute_run

        if self._remote is None:
            # No Ray-level retries: a lost task is retried through the lease and the queue,
            # which count attempts and fence stale writes.
            self._remote = ray.remote(execute_run).options(num_cpus=1, max_retries=0)
        options = self.options_for([reservation], gpus)
        remote = self._remote.options(**options) if options else self._remote
        trial = None
        if reservation.study_id is not None:
            from service.studies import trial_context

            trial = trial_context(self.db_url, reservation.study_id)
            if trial is not None:
                trial["number"] = reservation.trial_number
        # No database URL among the arguments: the worker has its own (workers/settings.py),
        # and checks it names the same database as this masked one.
        return remote.remote(
            reservation.run_id,
            self.worker_id,
            self.settings.lease_seconds,
            masked_url(self.db_url),
            trial,
        )

    def options_for(self, task: list[queue.Reservation], gpus: float) -> dict[str, Any]:
        """Ray options of a task beyond its one CPU: a GPU share for runs that train on a GPU
        (`device: cuda`, or `auto` in a cluster that has GPUs): a whole GPU for a pack, the
        `gpu_per_run` share for a run alone, so that several small runs share a device. A
        GPU is asked for only where the cluster has one: otherwise the task would wait
        forever, whereas without it a cuda run fails at once and says why."""
        if gpus <= 0 or not wants_gpu(task[0].config, gpus):
            return {}
        return {"num_gpus": 1 if len(task) > 1 else self.settings.gpu_per_run}

    def _submit_pack(self, reservations: list[queue.Reservation], gpus: float) -> Any:
        import ray

        from workers.remote import execute_pack

        if self._remote_pack is None:
            self._remote_pack = ray.remote(execute_pack).options(num_cpus=1, max_retries=0)
        options = self.options_for(reservations, gpus)
        remote = self._remote_pack.options(**options) if options else self._remote_pack
        return remote.remote(
            [r.run_id for r in reservations],
            self.worker_id,
            self.settings.lease_seconds,
            masked_url(self.db_url),
        )

    def _plan(
        self,
        reservations: list[queue.Reservation],
        slots: int,
        gpus: float = 0.0,
        free_gpus: float = 0.0,
        gpu_memory_mib: int | None = None,
    ) -> list[list[queue.Reservation]]:
        """The reserved runs as Ray tasks, at most `slots` of them, oldest runs first: packs
        of runs that train together, a task each for the rest (study trials, runs the packer
        refuses). CPU packs are near-equal, at most `pack_size` each, as many as the slots
        the other tasks leave; GPU packs (runs that train on a GPU) one per free GPU, at
        most `gpu_pack_size` (`gpu_memory_mib`: the smallest GPU's memory) each."""
        from workers.config import RunConfig
        from workers.packed.grouping import pack_refusal, packable

        alone: list[queue.Reservation] = []
        packing: dict[bool, tuple[list[queue.Reservation], list[RunConfig]]] = {
            False: ([], []),
            True: ([], []),
        }
        for r in reservations:
            if r.study_id is not None:  # trials report to Optuna, one by one for now
                alone.append(r)
                continue
            try:
                config = RunConfig.model_validate(r.config)
            except Exception:  # e.g. a plugin this process lacks: its worker will say why
                alone.append(r)
                continue
            if pack_refusal(config) is not None:
                alone.append(r)
                continue
            runs, configs = packing[wants_gpu(r.config, gpus)]
            runs.append(r)
            configs.append(config)
        tasks = [[r] for r in alone]

        def split(on_gpu: bool, packs: int, most: int) -> None:
            """The runs of one kind as `packs` near-equal packs of at most `most` runs."""
            runs, configs = packing[on_gpu]
            if runs:
                size = min(most, -(-len(runs) // max(1, packs)))
                # Full packs for the free slots; the runs past them wait for the next tick.
                runs, configs = runs[: max(1, packs) * size], configs[: max(1, packs) * size]
                packed = packable(configs, max_size=size)
                tasks.extend([runs[i] for i in pack] for pack in packed.packs)
                tasks.extend([runs[i]] for i in packed.single)

        # One pack per free GPU, as large as fits the smallest GPU's memory.
        split(True, math.floor(free_gpus), self.gpu_pack_size(packing[True][1], gpu_memory_mib))
        # As many CPU packs as the slots the other tasks leave, each at most pack_size.
        split(False, slots - len(tasks), self.settings.pack_size)
        tasks.sort(key=lambda task: min(r.run_id for r in task))
        return tasks[:slots]

    def gpu_pack_size(self, configs: list[RunConfig], gpu_memory_mib: int | None) -> int:
        """The most runs of `configs` one GPU pack takes: `gpu_pack_size`, fewer where their
        estimated memory (workers.packed.grouping.pack_run_bytes) would not fit in
        `GPU_MEMORY_SHARE` of the GPU's memory (the node's label, else `gpu_memory_gib`)."""
        from workers.packed.grouping import pack_run_bytes

        memory = (
            gpu_memory_mib * 2**20
            if gpu_memory_mib
            else (self.settings.gpu_memory_gib or 0) * 2**30
        )
        if not memory or not configs:
            return self.settings.gpu_pack_size
        fit = int(GPU_MEMORY_SHARE * memory // max(pack_run_bytes(c) for c in configs))
        return max(1, min(self.settings.gpu_pack_size, fit))

    def _collect(self) -> int:
        """Log finished tasks; give back the reservations of runs they did not start.
        Returns the number of tasks that ended (each held one CPU)."""
        import ray

        if not self.inflight:
            return 0
        done, _ = ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=0)
        finished: list[int] = []
        lost: RayUnavailable | None = None
        for ref in done:
            run_ids = self.inflight.pop(ref)
            finished.extend(run_ids)
            runs = f"run {run_ids[0]}" if len(run_ids) == 1 else f"runs {run_ids}"
            try:
                summary = ray.get(ref)
                log.info("%s: %s", runs, summary)
                if "outcomes" in summary:  # a pack: one outcome per started run
                    for outcome in summary["outcomes"].values():
                        RUNS_FINISHED.labels(outcome=outcome).inc()
                elif summary.get("started"):  # a reservation gone before it started: no run
                    RUNS_FINISHED.labels(outcome=summary.get("outcome", "unknown")).inc()
            except (ray.exceptions.LocalRayletDiedError, ray.exceptions.RaySystemError) as e:
                RUNS_FINISHED.labels(outcome="task_error").inc(len(run_ids))
                lost = RayUnavailable(f"the task of {runs} was lost: {_first_line(e)}")
            except ray.exceptions.RayTaskError as e:  # the task raised (e.g. its worker's config)
                RUNS_FINISHED.labels(outcome="task_error").inc(len(run_ids))
                log.error("Ray task of %s failed: %s", runs, _first_line(e.cause or e))
            except Exception as e:  # worker process died; the lease (if any) requeues the run
                RUNS_FINISHED.labels(outcome="task_error").inc(len(run_ids))
                log.warning("Ray task of %s ended abnormally: %s", runs, _first_line(e))
        with session_scope(self.db_url) as session:
            # Only runs still queued under our reservation: a started run keeps its lease.
            queue.release_reservations(
                session=session, dispatcher_id=self.worker_id, run_ids=finished
            )
        if lost is not None:
            raise lost
        return len(done)

    def _room(self, ended: int = 0) -> tuple[int, ClusterState]:
        """(tasks to hand Ray now, the cluster as Ray sees it). `ended`: tasks of ours just
        seen to end, whose CPUs Ray's view may still count as taken."""
        waiting: set[int] = set()
        if self.inflight:
            with session_scope(self.db_url) as session:
                waiting = queue.renew_reservations(
                    session=session,
                    dispatcher_id=self.worker_id,
                    run_ids=[i for ids in self.inflight.values() for i in ids],
                    seconds=self.settings.lease_seconds,
                )
        state = cluster_state(self.settings.ray_timeout_seconds)
        if not state.ok:
            raise RayUnavailable(state.error or "the Ray cluster is unavailable", lost=state.lost)
        if waiting:  # Ray has not started everything we gave it: it cannot start more now
            return 0, state
        capacity = self._capacity if self._capacity is not None else max(1, int(state.cpus))
        free = math.floor(state.free_cpus) + ended
        return max(0, min(capacity - len(self.inflight), free)), state

    def tick(self) -> int:
        """Reap, advance studies, collect, upkeep when due, reserve what the cluster can
        start, hand it to Ray. Returns the number of runs handed over."""
        from service.studies import advance_all

        with session_scope(self.db_url) as session:
            requeued, failed = queue.reap_expired(session=session)
        if requeued or failed:
            log.warning("reaped expired leases: %d requeued, %d failed", requeued, failed)
            RUNS_FINISHED.labels(outcome="expired").inc(failed)
        advance_all(self.settings)  # tell Optuna about finished trials, enqueue new ones
        ended = self._collect()
        self.maintain_if_due()  # curve retention, rate-limit counters
        room, state = self._room(ended)
        if room <= 0:
            return 0
        gpu_room = math.floor(state.free_gpus) * self.settings.gpu_pack_size
        with session_scope(self.db_url) as session:
            reservations = queue.reserve_runs(
                session=session,
                dispatcher_id=self.worker_id,
                limit=room * self.settings.pack_size + gpu_room,
                seconds=self.settings.lease_seconds,
            )
        tasks = self._plan(reservations, room, state.gpus, state.free_gpus, state.gpu_memory_mib)
        handed = {r.run_id for task in tasks for r in task}
        left = [r.run_id for r in reservations if r.run_id not in handed]
        if left:  # more than the free slots take this tick: back to the queue at once
            with session_scope(self.db_url) as session:
                queue.release_reservations(
                    session=session, dispatcher_id=self.worker_id, run_ids=left
                )
        handed_at = utcnow()
        for task in tasks:
            for reservation in task:
                if reservation.queued_at is not None:
                    CLAIM_LAG.observe((handed_at - reservation.queued_at).total_seconds())
            if len(task) == 1:
                ref = self._submit(task[0], state.gpus)
            else:
                ref = self._submit_pack(task, state.gpus)
            self.inflight[ref] = [r.run_id for r in task]
        return len(handed)

    def release(self) -> int:
        """Give back every reservation this dispatcher id holds (at start and at stop)."""
        with session_scope(self.db_url) as session:
            return queue.release_reservations(session=session, dispatcher_id=self.worker_id)

    def maintain_if_due(self) -> None:
        """Curve retention and rate-limit upkeep, every `maintenance_seconds`."""
        now = time.monotonic()
        if now < self._next_maintenance:
            return
        self._next_maintenance = now + self.settings.maintenance_seconds
        pruned, purged = maintain(self.settings)
        if pruned is not None and pruned.runs:
            log.info("curves of %d old runs thinned (%d rows)", pruned.runs, pruned.rows)

    def wait_for_room(self, stop: threading.Event, seconds: float) -> None:
        """Wait `seconds`, or until one of the tasks in flight ends (its slot is free) or
        `stop` is set."""
        if not self.inflight or not self._refill_on_finish:
            stop.wait(seconds)
            return
        import ray

        deadline = time.monotonic() + seconds
        refs = list(self.inflight)
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                done, _ = ray.wait(refs, num_returns=1, timeout=min(left, STOP_CHECK_SECONDS))
            except Exception as e:  # the next tick asks Ray how it is, and says so
                log.debug("waiting on the tasks in flight failed: %s", _first_line(e))
                stop.wait(max(0.0, deadline - time.monotonic()))
                return
            if done:
                return

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
        failures, outage_since = 0, 0.0
        while not stop.is_set():
            try:
                self.tick()
                if on_tick is not None:
                    on_tick()
                if until is not None and until():
                    return
                if failures:
                    log.warning(
                        "dispatcher recovered after %d failed tries (%.0f s)",
                        failures,
                        time.monotonic() - outage_since,
                    )
                failures, wait = 0, self.settings.poll_seconds
            except Exception as e:
                if failures == 0:
                    outage_since = time.monotonic()
                failures += 1
                wait = backoff_seconds(
                    failures, base=self.settings.poll_seconds, cap=self.settings.backoff_max_seconds
                )
                if isinstance(e, RayUnavailable):
                    if e.lost and self._on_ray_lost is not None:
                        self._on_ray_lost(e)
                    log.warning("Ray unavailable (%s); next try in %.1f s", e, wait)
                elif database_unavailable(e):
                    log.warning(
                        "database unavailable (%s); next try in %.1f s", _first_line(e), wait
                    )
                elif failures == 1:
                    log.exception("dispatcher tick failed; next try in %.1f s", wait)
                else:
                    log.warning(
                        "dispatcher tick failed again (%s); next try in %.1f s",
                        _first_line(e),
                        wait,
                    )
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("dispatcher did not finish before its timeout")
            if failures:  # back off: nothing is refilled while the database or Ray is out
                stop.wait(wait)
            else:
                self.wait_for_room(stop, wait)


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
