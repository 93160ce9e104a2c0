"""Optuna's per-trial overhead: a study of tiny runs against a sweep of the same runs.

A 100-trial TPE study (`--trials`) with 4 trials in parallel, each trial a tiny run (the
digits MLP, 2 hidden layers of 32, 20 steps), driven by a real Dispatcher on a local Ray
instance with 4 CPUs and SQLite, as `plateau search` runs it: each trial asked of Optuna
(TPE over the init scheme, its scale and the learning rate), enqueued as a run, executed,
told back. Then the very runs its trials became (their stored configs) as one sweep through
the same dispatcher with the same parallelism (4 CPUs, a task per run as trials get):
everything but Optuna. The difference, per trial, is what the study costs on top of the
runs (target: <= 20 ms per trial).

Times: the study from its creation to its last trial told; the sweep from the dispatcher's
first tick to its last run's `finished_at`. Prints each
repeat, the medians, the per-trial overhead, and the machine.

    python benchmarks/optuna_overhead.py [--trials 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import statistics
import tempfile
import time
from pathlib import Path

from dispatch import machine, sweep_seconds  # benchmarks/dispatch.py
from sqlalchemy import select

from db import queue
from db.migrate import upgrade
from db.models import Run, Study
from db.session import session_scope
from service import studies
from service.dispatcher import Dispatcher
from service.raycluster import init_ray
from service.settings import Settings
from service.study_spec import StudySpec
from service.sweeps import queue_rows
from workers.config import RunConfig

PARALLEL = 4


def study_spec(trials: int, seed: int) -> StudySpec:
    return StudySpec.model_validate(
        {
            "name": f"overhead-{seed}",
            "task": "digits",
            "architecture": {"name": "mlp", "depth": 2, "width": 32},
            "fixed": {
                "optimizer": {"name": "adam", "lr": 0.003},
                "budget": {"steps": 20, "batch_size": 64, "log_every": 10, "eval_every": 20},
                "target": {"loss": 0.5},
            },
            "search_space": {
                "init": ["default", "orthogonal", "xavier_normal"],
                "init_scale": [0.25, 2.0],
                "lr": [0.0003, 0.01],
            },
            "objective": "final_loss",
            "n_trials": trials,
            "parallelism": PARALLEL,
            "sampler": {"name": "tpe", "seed": seed},
            "pruner": {"name": "none"},
        }
    )


def study_seconds(settings: Settings, spec: StudySpec) -> tuple[float, int]:
    """Run the study to its end; (seconds, the id of the sweep holding its trial runs)."""
    url = settings.database_url
    started = time.perf_counter()
    with session_scope(url) as s:
        study = studies.create_study(session=s, spec=spec, settings=settings)
        study_id, sweep_id = study.id, study.sweep_id

    def finished() -> bool:
        with session_scope(url) as s:
            return s.get(Study, study_id).state == "finished"

    Dispatcher(settings).run(until=finished, timeout=1800)
    return time.perf_counter() - started, sweep_id


def replay(url: str, trial_sweep: int, name: str) -> int:
    """The study's trial runs as a plain sweep: the same configs, queued at once."""
    with session_scope(url) as s:
        stored = s.scalars(select(Run.config).where(Run.sweep_id == trial_sweep)).all()
        configs = [RunConfig.model_validate(c) for c in stored]
        sweep = queue.enqueue_sweep(
            session=s, name=name, owner="bench", spec={}, runs=queue_rows(configs),
            max_attempts=1, source="cli",
        )  # fmt: skip
        return sweep.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="plateau-optuna-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'plateau.db'}"
        upgrade(url)
        settings = Settings(database_url=url, ray_num_cpus=PARALLEL, poll_seconds=0.5, pack_size=1)
        init_ray(settings, log_to_driver=False)
        print(f"machine: {machine()}", flush=True)
        print(
            f"{args.trials} trials (TPE, {PARALLEL} in parallel, 20-step digits MLPs) against "
            f"a sweep of the same runs; local Ray with {PARALLEL} CPUs, SQLite",
            flush=True,
        )
        study_seconds(settings, study_spec(8, seed=999))  # warm-up: Ray workers, imports
        times: dict[str, list[float]] = {"study": [], "sweep": []}
        for repeat in range(args.repeats):
            took, trial_sweep = study_seconds(settings, study_spec(args.trials, seed=repeat))
            sweep = replay(url, trial_sweep, f"replay-{repeat}")
            times["study"].append(took)
            times["sweep"].append(sweep_seconds(settings, sweep, refill=True))
            print(
                f"repeat {repeat + 1}: study {times['study'][-1]:.2f} s, "
                f"sweep {times['sweep'][-1]:.2f} s "
                f"({dt.datetime.now():%H:%M:%S})",
                flush=True,
            )
    median = {k: statistics.median(v) for k, v in times.items()}
    per_trial = (median["study"] - median["sweep"]) / args.trials
    print(f"study {median['study']:.2f} s, sweep {median['sweep']:.2f} s (medians)")
    print(f"Optuna's overhead: {1000 * per_trial:+.1f} ms per trial (target <= 20 ms)")
    print(f"study / sweep: {median['study'] / median['sweep']:.2f}x the time")


if __name__ == "__main__":
    main()
