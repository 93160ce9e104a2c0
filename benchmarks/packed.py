"""Packed training against one-by-one: runs/s for a sweep of small MLPs, in-process.

64 runs of the reference small MLP (digits, 2 hidden layers of 64 ReLU units, batch 128,
500 steps, SGD with momentum 0.9; seeds 0-63, learning rates 0.02-0.1), every step's
evidence recorded (`log_every: 1`: loss, lr, global and per-layer gradient norms, update and
parameter norms, clip events; evaluation and activation statistics every 50 steps), the
rows kept in memory by each run's hooks. Measured in the same run, interleaved:

  single   one by one: 2 worker processes x 1 thread (`workers.train.train`, as the
           dispatcher runs them today), the pool started and warmed up before timing;
  packed   `workers.packed.train.train_packed`: one pack of 64 in this process with 2
           threads ("1x2"), and two packs of 32 in 2 worker processes x 1 thread ("2x1",
           a second warmed-up pool).

Prints the median wall time of each over the repeats, runs/s, the ratio packed / single
(target: >= 5x on 2 CPU cores), the CPU seconds each took and their ratio (the work, which
moves less than wall time when other jobs share the machine), the largest difference of a
run's final training loss between the two (float32: the same arithmetic, not bitwise), the
machine and its load.

    python benchmarks/packed.py [--repeats 5] [--runs 64] [--steps 500] [--quick]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import time
from typing import Any

import torch
from machine import cpu, load  # benchmarks/machine.py

from workers.config import RunConfig
from workers.train import TrainHooks, train

REFERENCE: dict[str, Any] = {
    "task": {"name": "digits"},
    "architecture": {"name": "mlp", "depth": 2, "width": 64, "activation": "relu"},
    "budget": {"batch_size": 128, "log_every": 1, "eval_every": 50},
    "device": "cpu",
    "threads": 1,
}


def configs(runs: int, steps: int) -> list[RunConfig]:
    return [
        RunConfig.model_validate(
            REFERENCE
            | {
                "seed": i,
                "optimizer": {"name": "sgd", "lr": 0.02 + 0.08 * (i % 8) / 7, "momentum": 0.9},
                "budget": REFERENCE["budget"] | {"steps": steps},
            }
        )
        for i in range(runs)
    ]


def _single(config: RunConfig) -> tuple[float | None, float]:
    """The run's final loss and the CPU seconds its process spent on it."""
    cpu = time.process_time()
    rows: list[dict[str, Any]] = []
    final = train(config, TrainHooks(on_metrics=rows.extend)).final_loss
    return final, time.process_time() - cpu


def _packed(pack: list[RunConfig], threads: int = 1) -> tuple[list[float | None], float]:
    """The runs' final losses and the CPU seconds (all threads) the pack took."""
    from workers.packed.train import train_packed

    cpu = time.process_time()
    hooks = [TrainHooks(on_metrics=[].extend) for _ in pack]
    results = train_packed(pack, hooks, threads=threads)
    finals = [r.final_loss if not isinstance(r, Exception) else None for r in results]
    return finals, time.process_time() - cpu


def _warm_single(_: int) -> None:
    _single(configs(1, 5)[0])


def _warm_packed(_: int) -> None:
    _packed(configs(2, 5))


def machine() -> str:
    return (
        f"{cpu()}, torch {torch.__version__}, "
        f"Python {platform.python_version()}; load average {load()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="16 runs of 100 steps, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.steps, args.repeats = 16, 100, 2
    runs = configs(args.runs, args.steps)
    half = len(runs) // 2
    print(f"machine: {machine()}", flush=True)
    print(f"{args.runs} runs x {args.steps} steps, median of {args.repeats} repeats")

    times: dict[str, list[float]] = {"single 2x1": [], "packed 1x2": [], "packed 2x1": []}
    cpu: dict[str, list[float]] = {k: [] for k in times}  # CPU seconds, all processes
    finals: dict[str, list[float | None]] = {}
    spawn = mp.get_context("spawn")
    # One pool per side, so that nothing the packed side sets in a process (threads, the
    # allocator: workers.packed.train.keep_freed_memory) reaches the single side.
    with spawn.Pool(2) as single_pool, spawn.Pool(2) as packed_pool:
        single_pool.map(_warm_single, range(2))  # imports, digits: not part of a run's cost
        packed_pool.map(_warm_packed, range(2))
        _packed(configs(2, 5), threads=2)
        for repeat in range(args.repeats):  # interleaved, so drift in the load hits all alike
            start = time.perf_counter()
            singles = single_pool.map(_single, runs, chunksize=1)
            times["single 2x1"].append(time.perf_counter() - start)
            finals["single 2x1"] = [final for final, _ in singles]
            cpu["single 2x1"].append(sum(seconds for _, seconds in singles))

            start = time.perf_counter()
            finals["packed 1x2"], seconds = _packed(runs, threads=2)
            times["packed 1x2"].append(time.perf_counter() - start)
            cpu["packed 1x2"].append(seconds)

            start = time.perf_counter()
            halves = packed_pool.map(_packed, [runs[:half], runs[half:]])
            times["packed 2x1"].append(time.perf_counter() - start)
            finals["packed 2x1"] = halves[0][0] + halves[1][0]
            cpu["packed 2x1"].append(halves[0][1] + halves[1][1])
            took = ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items())
            print(f"repeat {repeat + 1}: {took}; load {os.getloadavg()[0]:.2f}", flush=True)

    median = {k: statistics.median(v) for k, v in times.items()}
    median_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    base, base_cpu = median["single 2x1"], median_cpu["single 2x1"]
    # The CPU seconds say how much work each way takes; on a machine other jobs share, they
    # move less with the load than wall time does.
    print(
        f"{'execution':<12}{'median s':>10}{'runs/s':>8}{'ratio':>8}{'spread':>8}"
        f"{'CPU s':>8}{'CPU ratio':>11}"
    )
    for name, seconds in median.items():
        spread = (max(times[name]) - min(times[name])) / seconds
        print(
            f"{name:<12}{seconds:>10.2f}{args.runs / seconds:>8.1f}"
            f"{base / seconds:>7.2f}x{spread:>8.0%}"
            f"{median_cpu[name]:>8.1f}{base_cpu / median_cpu[name]:>10.2f}x"
        )
    reference = finals["single 2x1"]
    for name in ("packed 1x2", "packed 2x1"):
        diffs = [
            abs(a - b) / max(abs(a), 1e-12)
            for a, b in zip(reference, finals[name], strict=True)
            if a is not None and b is not None
        ]
        print(f"{name}: largest relative difference of a final loss from single: {max(diffs):.1e}")
    print(f"load average after: {load()}")
    print(
        json.dumps(
            {
                "runs_per_s": {k: args.runs / v for k, v in median.items()},
                "ratio": {k: base / v for k, v in median.items()},
                "cpu_ratio": {k: base_cpu / v for k, v in median_cpu.items()},
                "seconds": times,
                "cpu_seconds": cpu,
            }
        )
    )


if __name__ == "__main__":
    main()
