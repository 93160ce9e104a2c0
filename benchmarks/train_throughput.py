"""Training throughput and the cost of recording evidence.

Measures, in one process on the same model, data and batches:
  bare      a plain PyTorch loop (forward, backward, optimizer step, loss.item()),
  recorded  workers.train.train with per-step evidence at log_every=1 (loss, lr, global
            and per-layer gradient norms, update norm, parameter norm, clip events) and
            at log_every=10,
and prints steps/s and the overhead ratio recorded/bare - 1. Target: under 15 %.

    python benchmarks/train_throughput.py [--steps 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from workers.config import RunConfig
from workers.tasks import loss_fn
from workers.train import build, train

REFERENCE = {
    "task": {"name": "digits"},
    "architecture": {"name": "mlp", "depth": 3, "width": 256, "activation": "relu"},
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "budget": {"batch_size": 128, "eval_every": 10**6},
    "device": "cpu",
    "threads": 1,
}


def bare_loop(cfg: RunConfig) -> float:
    """Seconds for cfg.budget.steps steps of the plainest loop on the same setup, counting
    the same set-up (data, model, init) that train() counts."""
    start = time.perf_counter()
    device = torch.device("cpu")
    torch.set_num_threads(cfg.threads)
    data, model = build(cfg, device)
    loss = loss_fn(data.loss)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optimizer.lr, momentum=cfg.optimizer.momentum)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(data.x_train)
    for _ in range(cfg.budget.steps):
        idx = torch.randint(0, n, (cfg.budget.batch_size,), generator=gen)
        value = loss(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        float(value.detach())
    return time.perf_counter() - start


def recorded(cfg: RunConfig) -> float:
    start = time.perf_counter()
    rows = []
    from workers.train import TrainHooks

    train(cfg, TrainHooks(on_metrics=rows.extend))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    def cfg(log_every: int) -> RunConfig:
        budget = REFERENCE["budget"] | {"steps": args.steps, "log_every": log_every}
        return RunConfig.model_validate(REFERENCE | {"budget": budget})

    bare_loop(cfg(1))  # warm-up: allocator, data loading, first-call overheads
    times: dict[str, list[float]] = {"bare": [], "log_every=1": [], "log_every=10": []}
    for _ in range(args.repeats):  # interleaved, so drift hits all three alike
        times["bare"].append(bare_loop(cfg(1)))
        times["log_every=1"].append(recorded(cfg(1)))
        times["log_every=10"].append(recorded(cfg(10)))
    best = {k: min(v) for k, v in times.items()}
    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, 1 thread; {args.steps} steps, best of {args.repeats}"
    )
    print(f"{'loop':<14}{'steps/s':>10}{'overhead':>10}{'spread':>10}")
    for name, seconds in best.items():
        overhead = seconds / best["bare"] - 1
        spread = (max(times[name]) - min(times[name])) / statistics.mean(times[name])
        print(f"{name:<14}{args.steps / seconds:>10.0f}{overhead:>+10.1%}{spread:>10.1%}")
    print(
        json.dumps(
            {
                "steps_per_s": {k: args.steps / v for k, v in best.items()},
                "overhead": {k: v / best["bare"] - 1 for k, v in best.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
