"""Metric ingestion into PostgreSQL: the product's write path against COPY of the same rows.

The rows are a worker's real ones: the reference MLP (digits, 2 hidden layers of 64 ReLU,
batch 128, SGD with momentum) trained `--steps` steps with every step's evidence
(`log_every: 1`: loss, lr, global and per-layer gradient norms, update and parameter
norms, clip events; evaluation and activation statistics every 50 steps), in the batches
the training loop hands its `on_metrics` hook (256 rows). Two sides write them into
`run_metric` of a fresh database migrated to head, one transaction per batch as a worker
does, each repeat into a run of its own:

  product  `db.queue.write_metrics` in `db.session.session_scope`, as
           `workers.runner.Attempt` writes a batch (the attempt's fencing check included);
  COPY     psycopg's `COPY run_metric (...) FROM STDIN` of the same rows per batch, on one
           connection: the fastest way into the same table, the baseline.

Prints rows/s of each (a row is a logged step), the ratio product / COPY (target >= 0.8)
and the machine. Needs the server of `--url` (default: the local one, trust auth); creates
and drops the database `plateau_bench_ingest`.

    python benchmarks/ingestion.py [--steps 2560] [--repeats 5] [--url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import psycopg
from machine import cpu, load  # benchmarks/machine.py
from packed import configs  # benchmarks/packed.py: the reference runs
from sqlalchemy import create_engine, text

from db import queue
from db.migrate import upgrade
from db.models import RunMetric
from db.session import session_scope
from service.spec import SweepSpec
from service.sweeps import submit_sweep
from workers.train import TrainHooks, train

DATABASE = "plateau_bench_ingest"
COLUMNS = [c.name for c in RunMetric.__table__.columns]


def worker_batches(steps: int) -> list[list[dict[str, Any]]]:
    """The batches of rows `train` hands its on_metrics hook for one reference run."""
    batches: list[list[dict[str, Any]]] = []
    train(configs(1, steps)[0], TrainHooks(on_metrics=batches.append))
    return batches


def fresh_database(admin_url: str) -> str:
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {DATABASE}"))
        conn.execute(text(f"CREATE DATABASE {DATABASE}"))
    engine.dispose()
    url = admin_url.rsplit("/", 1)[0] + f"/{DATABASE}"
    upgrade(url)
    return url


def started_runs(url: str, n: int) -> list[tuple[int, int]]:
    """(run id, attempt) of n runs started as a worker starts them (fenced writes pass)."""
    spec = SweepSpec.model_validate(
        {"name": "ingest", "task": "digits", "architectures": ["mlp"],
         "optimizers": [{"name": "sgd", "lr": 0.1}], "seeds": list(range(n))}
    )  # fmt: skip
    with session_scope(url) as s:
        submit_sweep(session=s, spec=spec, source="cli", max_attempts=1)
    with session_scope(url) as s:
        claims = queue.claim_runs(session=s, worker_id="bench", limit=n, lease_seconds=3600)
    return [(c.run_id, c.attempt) for c in claims]


def product(url: str, run: tuple[int, int], batches: list[list[dict[str, Any]]]) -> float:
    run_id, attempt = run
    start = time.perf_counter()
    for rows in batches:
        with session_scope(url) as s:
            queue.write_metrics(session=s, run_id=run_id, attempt=attempt, rows=rows)
    return time.perf_counter() - start


def as_copied(value: Any) -> Any:
    """A value as COPY's text format takes it: JSON columns as their JSON text."""
    return json.dumps(value) if isinstance(value, dict | list) else value


def copy(conn: psycopg.Connection, run: tuple[int, int], batches: list[list[dict]]) -> float:
    run_id, attempt = run
    keys = {"run_id": run_id, "attempt": attempt}
    statement = f"COPY run_metric ({', '.join(COLUMNS)}) FROM STDIN"
    start = time.perf_counter()
    for rows in batches:
        with conn.cursor() as cur, cur.copy(statement) as out:
            for row in rows:
                values = {**row, **keys}
                out.write_row([as_copied(values.get(c)) for c in COLUMNS])
        conn.commit()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2560)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    batches = worker_batches(args.steps)
    n_rows = sum(len(b) for b in batches)
    url = fresh_database(args.url)
    try:
        runs = started_runs(url, 2 * args.repeats + 2)
        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            print(f"machine: {cpu()}, PostgreSQL {version}; load average {load()}")
            print(f"{n_rows} rows ({len(batches)} batches of <= 256, {len(COLUMNS)} columns)")
            product(url, runs.pop(), batches)  # warm-up: engine, connection pool, plans
            copy(conn, runs.pop(), batches)
            times: dict[str, list[float]] = {"product": [], "COPY": []}
            for repeat in range(args.repeats):
                sides = [("product", product, url), ("COPY", copy, conn)]
                for name, fn, target in sides if repeat % 2 == 0 else sides[::-1]:
                    times[name].append(fn(target, runs.pop(), batches))  # type: ignore[operator]
                line = ", ".join(f"{k} {n_rows / v[-1]:,.0f} rows/s" for k, v in times.items())
                print(f"repeat {repeat + 1}: {line}; load {load()}", flush=True)
    finally:
        engine = create_engine(args.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as c:
            c.execute(text(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        engine.dispose()
    rate = {k: n_rows / statistics.median(v) for k, v in times.items()}
    for name, per_s in rate.items():
        print(f"{name:<8}{per_s:>12,.0f} rows/s (= logged steps/s)")
    print(f"product / COPY: {rate['product'] / rate['COPY']:.2f}x")


if __name__ == "__main__":
    main()
