"""The service path's overhead: a sweep through the dispatcher, Ray, leases, per-run writes,
diagnosis and the leaderboard, against the same runs trained in-process.

Three sides on the same runs (the small digits MLP, 2 hidden layers of 32, Adam, `--steps`
steps, evidence every 10 steps), on 2 CPUs:

  in-process  `workers.train.train` of each run's stored config in a pool of 2 processes
              (torch imported and one run trained in each before timing), no database:
              what the runs cost to train;
  one-by-one  a real Dispatcher on a local Ray instance (2 CPUs) and SQLite with
              `pack_size=1`: a Ray task per run, the behaviour before packs;
  packed      the same with `pack_size=16` (the default): runs of one shape packed, each
              still started, leased, recorded and diagnosed on its own.

A service sweep's time runs from the dispatcher's first tick to the last run's
`finished_at` (benchmarks/dispatch.py's `sweep_seconds`); a warm-up sweep starts Ray's
workers first. Sides interleave, their order rotating every repeat. Prints each repeat,
the medians, each side's time over in-process (the overhead factor) and packed over
one-by-one, with the machine and its load.

    python benchmarks/overhead.py [--runs 32] [--steps 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from dispatch import enqueue, machine, sweep_seconds  # benchmarks/dispatch.py
from machine import load  # benchmarks/machine.py
from sqlalchemy import select

from db.migrate import upgrade
from db.models import Run
from db.session import session_scope
from service.raycluster import init_ray
from service.settings import Settings

SIDES = ("in-process", "one-by-one", "packed")


def _train(config: dict[str, Any]) -> str:
    import torch

    from workers.config import RunConfig
    from workers.train import train

    torch.set_num_threads(1)
    return train(RunConfig.model_validate(config)).outcome


def in_process_seconds(pool: Any, url: str, sweep_id: int) -> float:
    with session_scope(url) as s:
        configs = s.scalars(select(Run.config).where(Run.sweep_id == sweep_id)).all()
    started = time.perf_counter()
    outcomes = pool.map(_train, configs, chunksize=1)
    took = time.perf_counter() - started
    if set(outcomes) != {"succeeded"}:
        raise SystemExit(f"in-process: not every run succeeded: {sorted(set(outcomes))}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="plateau-overhead-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'plateau.db'}"
        upgrade(url)
        base = dict(database_url=url, ray_address=None, ray_num_cpus=2, poll_seconds=0.5)
        settings = {
            "one-by-one": Settings(**base, pack_size=1),
            "packed": Settings(**base, pack_size=16),
        }
        init_ray(settings["packed"], log_to_driver=False)
        print(f"machine: {machine()}", flush=True)
        print(
            f"{args.runs} runs x {args.steps} steps (digits MLP 2x32, Adam) on 2 CPUs; "
            f"median of {args.repeats} repeats",
            flush=True,
        )
        warm = enqueue(url, runs=4, steps=args.steps, name="warm-up")
        sweep_seconds(settings["one-by-one"], warm, refill=True)
        warm = enqueue(url, runs=4, steps=args.steps, name="warm-up-packed")
        sweep_seconds(settings["packed"], warm, refill=True)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(2) as pool:
            in_process_seconds(pool, url, warm)  # imports torch in both processes

            times: dict[str, list[float]] = {name: [] for name in SIDES}
            for repeat in range(args.repeats):
                order = SIDES[repeat % 3 :] + SIDES[: repeat % 3]
                for name in order:
                    sweep = enqueue(url, runs=args.runs, steps=args.steps, name=f"{name}-{repeat}")
                    if name == "in-process":
                        took = in_process_seconds(pool, url, sweep)
                    else:
                        took = sweep_seconds(settings[name], sweep, refill=True)
                    times[name].append(took)
                line = ", ".join(f"{name} {times[name][-1]:.2f} s" for name in SIDES)
                print(f"repeat {repeat + 1}: {line}; load {load()}", flush=True)

    median = {name: statistics.median(v) for name, v in times.items()}
    print(f"{'side':<12}{'median s':>10}{'runs/s':>8}{'/ in-process':>14}")
    for name, seconds in median.items():
        ratio = seconds / median["in-process"]
        print(f"{name:<12}{seconds:>10.2f}{args.runs / seconds:>8.2f}{ratio:>13.2f}x")
    print(f"packed / one-by-one: {median['one-by-one'] / median['packed']:.2f}x the runs/s")
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
