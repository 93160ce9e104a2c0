"""Packed training against one-by-one on one GPU: runs/s of a sweep of small MLPs.

The runs of benchmarks/packed.py (digits, 2 hidden layers of 64 ReLU units, batch 128, SGD
with momentum, every step's evidence recorded) on one device: one by one in this process
(`workers.train.train`, as a task per run on a GPU node trains them), against one pack of
all of them (`workers.packed.train.train_packed`, what the dispatcher hands a GPU). Needs
only torch, pydantic and scikit-learn (the lent GPU machine has no Ray or database):

    python benchmarks/packed_gpu.py [--device cuda] [--runs 64] [--steps 500] [--repeats 3]

Prints the median wall time of each, runs/s, the ratio packed / one-by-one, the largest
relative difference of a final loss, the device and torch version. `--device cpu` runs the
same comparison on the CPU with 1 thread (a check of the script where no GPU is lent).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from packed import configs  # noqa: E402  (benchmarks/packed.py: the same runs)

from workers.config import RunConfig  # noqa: E402
from workers.packed.train import train_packed  # noqa: E402
from workers.train import TrainHooks, train  # noqa: E402


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def one_by_one(runs: list[RunConfig], device: str) -> tuple[float, list[float | None]]:
    synchronize(device)
    start = time.perf_counter()
    finals = [train(c, TrainHooks(on_metrics=[].extend)).final_loss for c in runs]
    synchronize(device)
    return time.perf_counter() - start, finals


def packed(runs: list[RunConfig], device: str) -> tuple[float, list[float | None]]:
    synchronize(device)
    start = time.perf_counter()
    results = train_packed(runs, [TrainHooks(on_metrics=[].extend) for _ in runs], threads=1)
    synchronize(device)
    finals = [None if isinstance(r, Exception) else r.final_loss for r in results]
    return time.perf_counter() - start, finals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--runs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu to check the script")
    torch.set_num_threads(1)
    runs = [c.model_copy(update={"device": args.device}) for c in configs(args.runs, args.steps)]
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (1 thread)"
    print(f"device: {name}, torch {torch.__version__}; {args.runs} runs x {args.steps} steps")
    one_by_one(runs[:2], args.device)  # warm-up: kernels, allocator, the digits data
    packed(runs[:2], args.device)
    times: dict[str, list[float]] = {"one-by-one": [], "packed": []}
    finals: dict[str, list[float | None]] = {}
    for repeat in range(args.repeats):
        for side, fn in (("one-by-one", one_by_one), ("packed", packed)):
            took, finals[side] = fn(runs, args.device)
            times[side].append(took)
        print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    median = {k: statistics.median(v) for k, v in times.items()}
    for side, seconds in median.items():
        print(f"{side:<12}{seconds:>8.2f} s{args.runs / seconds:>8.1f} runs/s")
    print(f"packed / one-by-one: {median['one-by-one'] / median['packed']:.2f}x the runs/s")
    diffs = [
        abs(a - b) / max(abs(a), 1e-12)
        for a, b in zip(finals["one-by-one"], finals["packed"], strict=True)
        if a is not None and b is not None
    ]
    print(f"largest relative difference of a final loss: {max(diffs):.1e}")


if __name__ == "__main__":
    main()
