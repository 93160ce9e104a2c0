"""The dispatcher's cadence: runs/s of a sweep of short runs, refilled on completion against
a fixed poll between ticks.

A real `service.dispatcher.Dispatcher` on a local Ray instance with 2 CPUs (capacity: its
CPUs), against a SQLite file migrated to head: every run is reserved, handed to Ray, started
with a lease, trained by `workers.runner.execute` and recorded, as `plateau run` does it.
32 runs of the small digits MLP (2 hidden layers of 32, Adam, 20 steps each) per sweep; one
sweep per side and repeat, the two sides interleaved (their order swapped every repeat):

  fixed    `Dispatcher(refill_on_finish=False)`: `poll_seconds` (0.5 s, the default) slept
           between ticks, the behaviour before issue 13;
  refill   the default: between ticks, wait on the tasks in flight (`ray.wait`, at most
           `poll_seconds`), so a finished run wakes the dispatcher at once.

The time of a sweep runs from handing the dispatcher its first tick to the last run's
`finished_at`. Before timing, a warm-up sweep starts Ray's 2 worker processes and imports the
training stack in them (a worker process is reused from one run to the next). Prints each
repeat, the medians, runs/s of each side and the ratio, the machine and its load average.

    python benchmarks/dispatch.py [--runs 32] [--steps 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import statistics
import tempfile
from pathlib import Path

from machine import cpu, load  # benchmarks/machine.py
from sqlalchemy import func, select

from db.migrate import upgrade
from db.models import Run, utcnow
from db.session import session_scope
from service.dispatcher import Dispatcher
from service.raycluster import init_ray
from service.settings import Settings
from service.spec import SweepSpec
from service.sweeps import submit_sweep

SIDES = {"fixed": False, "refill": True}  # name -> refill_on_finish


def enqueue(url: str, *, runs: int, steps: int, name: str) -> int:
    spec = SweepSpec.model_validate(
        {
            "name": name,
            "task": "digits",
            "architectures": [{"name": "mlp", "depth": 2, "width": 32}],
            "optimizers": [{"name": "adam", "lr": 0.003}],
            "seeds": list(range(runs)),
            "budget": {"steps": steps, "batch_size": 64, "log_every": 10, "eval_every": steps},
        }
    )
    with session_scope(url) as s:
        return submit_sweep(session=s, spec=spec, source="cli", max_attempts=1).id


def sweep_seconds(settings: Settings, sweep_id: int, *, refill: bool) -> float:
    """Dispatch the sweep to its end; seconds from the first tick to the last run recorded."""

    def unfinished() -> int:
        with session_scope(settings.database_url) as s:
            return s.scalar(
                select(func.count())
                .select_from(Run)
                .where(Run.sweep_id == sweep_id, Run.status.in_(["queued", "running"]))
            )

    dispatcher = Dispatcher(settings, refill_on_finish=refill)
    started_at = utcnow()
    # Until its tasks are gone too, so that the next sweep starts with every CPU free.
    dispatcher.run(until=lambda: unfinished() == 0 and not dispatcher.inflight, timeout=600)
    with session_scope(settings.database_url) as s:
        last: dt.datetime = s.scalar(
            select(func.max(Run.finished_at)).where(Run.sweep_id == sweep_id)
        )
        outcomes = s.scalars(select(Run.status).where(Run.sweep_id == sweep_id)).all()
    if set(outcomes) != {"succeeded"}:
        raise SystemExit(f"sweep {sweep_id}: not every run succeeded: {sorted(set(outcomes))}")
    return (last.replace(tzinfo=None) - started_at.replace(tzinfo=None)).total_seconds()


def machine() -> str:
    import ray

    return (
        f"{cpu()}, Python {platform.python_version()}, Ray {ray.__version__}; load average {load()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="plateau-dispatch-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'plateau.db'}"
        upgrade(url)
        settings = Settings(
            database_url=url, ray_address=None, ray_num_cpus=2, capacity=None, poll_seconds=0.5
        )
        init_ray(settings, log_to_driver=False)
        print(f"machine: {machine()}", flush=True)
        print(
            f"{args.runs} runs x {args.steps} steps through a Dispatcher on local Ray "
            f"(2 CPUs) and SQLite, poll_seconds {settings.poll_seconds}; "
            f"median of {args.repeats} repeats",
            flush=True,
        )
        sweep_seconds(settings, enqueue(url, runs=4, steps=args.steps, name="warm-up"), refill=True)

        times: dict[str, list[float]] = {name: [] for name in SIDES}
        for repeat in range(args.repeats):
            order = list(SIDES) if repeat % 2 == 0 else list(reversed(SIDES))
            for name in order:
                sweep = enqueue(url, runs=args.runs, steps=args.steps, name=f"{name}-{repeat}")
                times[name].append(sweep_seconds(settings, sweep, refill=SIDES[name]))
            took = ", ".join(f"{name} {times[name][-1]:.2f} s" for name in SIDES)
            print(f"repeat {repeat + 1}: {took}; load {os.getloadavg()[0]:.2f}", flush=True)

    median = {name: statistics.median(v) for name, v in times.items()}
    print(f"{'dispatcher':<12}{'median s':>10}{'runs/s':>8}{'spread':>8}")
    for name, seconds in median.items():
        spread = (max(times[name]) - min(times[name])) / seconds
        print(f"{name:<12}{seconds:>10.2f}{args.runs / seconds:>8.2f}{spread:>8.0%}")
    print(f"refill / fixed: {median['fixed'] / median['refill']:.2f}x the runs/s")
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
