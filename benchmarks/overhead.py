"""The service path's overhead: a sweep through the dispatcher, Ray, leases, per-run writes,
diagnosis and the leaderboard, against the same runs trained in-process.

The same runs (the small digits MLP, 2 hidden layers of 32, Adam, `--steps` steps, about a
second each, evidence every 10 steps) four ways on 2 CPUs, packing off and on:

  in-process single   `workers.train.train` of each run's stored config in a pool of 2
                      processes x 1 thread, no database: what the runs cost to train;
  service single      a real Dispatcher on a local Ray instance (2 CPUs) and SQLite with
                      `pack_size=1`: a Ray task per run;
  in-process packed   `workers.packed.train.train_many` over each half of the runs in the
                      same pool (two packs, one per process), no database;
  service packed      the Dispatcher with `pack_size=16` (the default): two packs, each run
                      still started, leased, recorded and diagnosed on its own.

A service sweep's time runs from the dispatcher's first tick to the last run's
`finished_at` (benchmarks/dispatch.py's `sweep_seconds`); warm-up sweeps start Ray's
workers and import torch in the pool first. Sides interleave, their order rotating every
repeat. Prints each repeat, the medians, the overhead of the service over in-process with
packing off and with packing on (target: <= 5 % each), packed over single, and the machine.

    python benchmarks/overhead.py [--runs 32] [--steps 700] [--repeats 5]
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
from machine import CpuMeter, load, speed  # benchmarks/machine.py
from sqlalchemy import select

from db.migrate import upgrade
from db.models import Run
from db.session import session_scope
from service.raycluster import init_ray
from service.settings import Settings

SIDES = ("in-process single", "service single", "in-process packed", "service packed")


def _train(config: dict[str, Any]) -> str:
    import torch

    from workers.config import RunConfig
    from workers.train import train

    torch.set_num_threads(1)
    return train(RunConfig.model_validate(config)).outcome


def _train_pack(configs: list[dict[str, Any]]) -> list[str]:
    import torch

    from workers.config import RunConfig
    from workers.packed.train import train_many

    torch.set_num_threads(1)
    results = train_many([RunConfig.model_validate(c) for c in configs], threads=1)
    return [r.outcome if not isinstance(r, Exception) else repr(r) for r in results]


def in_process_seconds(pool: Any, url: str, sweep_id: int, *, packed: bool) -> float:
    with session_scope(url) as s:
        configs = s.scalars(select(Run.config).where(Run.sweep_id == sweep_id)).all()
    started = time.perf_counter()
    if packed:
        half = len(configs) // 2
        outcomes = sum(pool.map(_train_pack, [configs[:half], configs[half:]]), [])
    else:
        outcomes = pool.map(_train, configs, chunksize=1)
    took = time.perf_counter() - started
    if set(outcomes) != {"succeeded"}:
        raise SystemExit(f"in-process: not every run succeeded: {sorted(set(outcomes))}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="plateau-overhead-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'plateau.db'}"
        upgrade(url)
        base = dict(database_url=url, ray_address=None, ray_num_cpus=2, poll_seconds=0.5)
        settings = {
            "service single": Settings(**base, pack_size=1),
            "service packed": Settings(**base, pack_size=16),
        }
        init_ray(settings["service packed"], log_to_driver=False)
        print(f"machine: {machine()}", flush=True)
        print(
            f"{args.runs} runs x {args.steps} steps (digits MLP 2x32, Adam) on 2 CPUs; "
            f"median of {args.repeats} repeats",
            flush=True,
        )
        warm = enqueue(url, runs=4, steps=args.steps, name="warm-up")
        sweep_seconds(settings["service single"], warm, refill=True)
        warm = enqueue(url, runs=4, steps=args.steps, name="warm-up-packed")
        sweep_seconds(settings["service packed"], warm, refill=True)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(2) as pool:
            in_process_seconds(pool, url, warm, packed=False)  # torch imported in both
            in_process_seconds(pool, url, warm, packed=True)

            times: dict[str, list[float]] = {name: [] for name in SIDES}
            cpu: dict[str, list[dict[str, float]]] = {name: [] for name in SIDES}
            speeds: dict[str, list[float]] = {name: [] for name in SIDES}
            for repeat in range(args.repeats):
                order = SIDES[repeat % 3 :] + SIDES[: repeat % 3]
                for name in order:
                    sweep = enqueue(url, runs=args.runs, steps=args.steps, name=f"{name}-{repeat}")
                    speeds[name].append(speed())  # how fast the machine is just before
                    with CpuMeter() as meter:
                        if name.startswith("in-process"):
                            took = in_process_seconds(pool, url, sweep, packed="packed" in name)
                        else:
                            took = sweep_seconds(settings[name], sweep, refill=True)
                    times[name].append(took)
                    cpu[name].append(meter.used)
                    print(f"  {name}: {took:.2f} s; {profile(meter.used, took)}", flush=True)
                line = ", ".join(f"{name} {times[name][-1]:.2f} s" for name in SIDES)
                print(f"repeat {repeat + 1}: {line}; load {load()}", flush=True)

    median = {name: statistics.median(v) for name, v in times.items()}
    print(f"{'side':<20}{'median s':>10}{'runs/s':>8}{'spread':>8}")
    for name, seconds in median.items():
        spread = (max(times[name]) - min(times[name])) / seconds
        print(f"{name:<20}{seconds:>10.2f}{args.runs / seconds:>8.2f}{spread:>8.0%}")
    for mode in ("single", "packed"):
        over = median[f"service {mode}"] / median[f"in-process {mode}"] - 1
        print(f"service overhead, packing {'off' if mode == 'single' else 'on'}: {over:+.1%}")
    ratio = median["service single"] / median["service packed"]
    print(f"service packed / service single: {ratio:.2f}x the runs/s")
    print(f"load average after: {load()}")
    print("where the CPU went, medians per side (CPU seconds; calibration: a fixed piece of")
    print("Python work timed just before the side, slower when the machine is):")
    for name in SIDES:
        used = {k: statistics.median(u.get(k, 0.0) for u in cpu[name]) for k in cpu[name][0]}
        calibration = statistics.median(speeds[name])
        print(f"  {name:<18} {profile(used, median[name])}; calibration {calibration:.3f} s")


def profile(used: dict[str, float], wall: float) -> str:
    """One side's CPU seconds by role, and the share of the two cores they kept busy."""
    roles = ("pool", "ray workers", "driver", "ray system", "other", "machine steal")
    parts = [f"{role} {used[role]:.1f}" for role in roles if used.get(role, 0.0) >= 0.05]
    busy = used.get("machine busy", 0.0) / (2 * wall) if wall else 0.0
    return ", ".join(parts) + f"; cores busy {busy:.0%}"


if __name__ == "__main__":
    main()
