"""Leaderboard latency with 100,000 runs in PostgreSQL.

Creates a throwaway database on the server named by PLATEAU_BENCH_POSTGRES_URL (default
postgres@127.0.0.1:5432/postgres, the admin connection), migrates it with Alembic, and
seeds it in SQL (generate_series, no training): 1,000 sweeps of 100 runs from 8 owners over
a year; configurations of 5 seeds each, 15,000 distinct ones (some repeated by a later sweep,
so they pool across sweeps); half the runs on `digits`, the rest on four other tasks; 85 %
succeeded, 10 % diverged, 3 % failed, 2 % still queued or running. Configs are real resolved
RunConfig documents (about 1.3 kB of JSON), results carry diagnosis and plateau JSON of the
size the worker writes.

Then it measures, in the same run:
  query     db.leaderboard.leaderboard (one page of 50) for several filter sets,
  http      GET /api/v1/leaderboard and /api/v1/leaderboard.csv through the ASGI app,
  baseline  the naive way: load the filtered runs with their results as ORM objects and
            aggregate them in Python,
and prints p50 / p95 latency and the speedup over the baseline. Target: p95 < 100 ms.
The database is dropped at the end.

    python benchmarks/leaderboard.py [--runs 100000] [--repeats 40]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, select, text

from db.leaderboard import Filters, leaderboard
from db.migrate import upgrade
from db.models import Run, RunResult
from db.session import dispose_engines, get_engine, session_scope
from workers.config import RunConfig

ADMIN_URL = os.environ.get(
    "PLATEAU_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TASKS = ["digits", "teacher_student", "parity", "spirals", "deep_linear"]
ARCHS = ["mlp", "resmlp", "deep_linear"]
OWNERS = ["ana", "ben", "chen", "dara", "eli", "fatou", "goran", "hana"]
SEEDS = 5
RUNS_PER_SWEEP = 100


def base_config() -> dict[str, Any]:
    return RunConfig.model_validate(
        {
            "task": {"name": "digits"},
            "architecture": {"name": "mlp", "depth": 3, "width": 64},
            "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
            "grad_clip": {"mode": "norm", "threshold": 1.0},
            "probes": {"at": ["end"]},
        }
    ).model_dump(mode="json")


DIAGNOSIS = {
    "evidence": {
        "final_loss": 0.12,
        "steps_to_target": 310,
        "recent_improvement": 0.004,
        "plateau_fraction": 0.2,
        "longest_plateau": 120,
        "diverged_step": None,
        "grad_norm": 0.03,
        "lambda_max": 12.5,
        "lambda_min": -0.02,
        "lambda_min_residual": 0.001,
        "probe_step": 500,
        "negative_mass": 0.01,
        "trace": 40.2,
    },
    "thresholds": {"grad_tol": 0.01, "neg_tol": 0.001, "flat_tol": 0.01, "target": 0.1},
}
PLATEAUS = {
    "segments": [
        {"start": 20, "end": 180, "level": 2.3, "mean_grad_norm": 0.01, "escaped": True}
    ],
    "plateau_fraction": 0.32,
    "longest_plateau": 160,
    "escaped": True,
}


def seed(url: str, n_runs: int) -> None:
    """Insert the sweeps, runs and results in three INSERT ... SELECT statements."""
    n_sweeps = n_runs // RUNS_PER_SWEEP
    n_configs = max(1, int(0.75 * n_runs) // SEEDS)
    params = {
        "n_runs": n_runs,
        "n_sweeps": n_sweeps,
        "n_configs": n_configs,
        "base": json.dumps(base_config()),
        "diagnosis": json.dumps(DIAGNOSIS),
        "plateaus": json.dumps(PLATEAUS),
        "tasks": TASKS,
        "archs": ARCHS,
        "owners": OWNERS,
        "start": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    }
    with get_engine(url).begin() as conn:
        conn.execute(text("SELECT setseed(0.42)"))
        conn.execute(
            text(
                """
                INSERT INTO sweep (id, name, owner, source, spec, n_runs, software, created_at)
                SELECT g, 'bench-' || g, (CAST(:owners AS text[]))[1 + g % 8], 'api', '{}'::json, 100,
                       json_build_object('python', '3.11.7', 'torch',
                                         CASE WHEN g % 3 = 0 THEN '2.12.0' ELSE '2.13.0' END),
                       CAST(:start AS timestamptz) + (g * interval '8 hours')
                FROM generate_series(1, :n_sweeps) AS g
                """
            ),
            params,
        )
        # run i: configuration c = (i / SEEDS) mod n_configs, seed i mod SEEDS; the sweep of
        # 100 consecutive runs. c decides task (half digits), architecture and lr.
        conn.execute(
            text(
                f"""
                INSERT INTO run (id, sweep_id, grid_index, config, config_hash, config_key,
                                 task, architecture, status, attempts, max_attempts,
                                 queued_at, started_at, finished_at)
                SELECT i + 1, 1 + i / {RUNS_PER_SWEEP}, i % {RUNS_PER_SWEEP},
                       cfg::json,
                       encode(sha256(convert_to(cfg::text, 'UTF8')), 'hex'),
                       encode(sha256(convert_to((cfg - 'seed')::text, 'UTF8')), 'hex'),
                       task, arch, status, 1, 3, now(), now(), now()
                FROM (
                    SELECT i, task, arch,
                           jsonb_set(jsonb_set(jsonb_set(jsonb_set(CAST(:base AS jsonb),
                               '{{task,name}}', to_jsonb(task)),
                               '{{architecture,name}}', to_jsonb(arch)),
                               '{{optimizer,lr}}', to_jsonb(0.0001 * (1 + c))),
                               '{{seed}}', to_jsonb(i % {SEEDS})) AS cfg,
                           CASE WHEN u < 0.85 THEN 'succeeded' WHEN u < 0.95 THEN 'diverged'
                                WHEN u < 0.98 THEN 'failed'
                                WHEN u < 0.99 THEN 'running' ELSE 'queued' END AS status
                    FROM (
                        SELECT i, (i / {SEEDS}) % :n_configs AS c, random() AS u,
                               CASE WHEN ((i / {SEEDS}) % :n_configs) % 2 = 0 THEN 'digits'
                                    ELSE (CAST(:tasks AS text[]))[2 + ((i / {SEEDS}) % :n_configs / 2) % 4]
                               END AS task,
                               (CAST(:archs AS text[]))[1 + ((i / {SEEDS}) % :n_configs / 8) % 3] AS arch
                        FROM generate_series(0, :n_runs - 1) AS i
                    ) AS grid
                ) AS runs
                """
            ),
            params,
        )
        conn.execute(
            text(
                """
                INSERT INTO run_result (run_id, attempt, outcome, steps_done, final_loss,
                    test_loss, test_accuracy, reached_target, steps_to_target,
                    plateau_fraction, longest_plateau, plateaus, clip_fraction, diverged_step,
                    diagnosis, environment, seconds, device, torch_version, created_at)
                SELECT r.id, 1, r.status, CASE WHEN r.status = 'diverged' THEN 40 ELSE 500 END,
                       CASE WHEN r.status = 'succeeded' THEN q.loss END,
                       CASE WHEN r.status = 'succeeded' THEN q.loss * 1.1 END,
                       CASE WHEN r.status = 'succeeded' THEN 1 - q.loss / 3 END,
                       q.reached, CASE WHEN q.reached THEN 50 + (q.u * 450)::int END,
                       q.u / 2, (q.u * 200)::int, CAST(:plateaus AS json), q.u / 10,
                       CASE WHEN r.status = 'diverged' THEN 40 END,
                       (CAST(:diagnosis AS jsonb) || jsonb_build_object('verdict',
                           CASE WHEN r.status = 'diverged' THEN 'diverged'
                                WHEN q.reached THEN 'converged'
                                ELSE (ARRAY['plateau', 'saddle', 'local_minimum',
                                            'still_improving'])[1 + (q.u * 4)::int % 4]
                           END))::json,
                       json_build_object('torch', s.software->>'torch', 'device', q.device,
                                         'dtype', 'float32', 'threads', 1),
                       q.u * 10, q.device, s.software->>'torch',
                       s.created_at + interval '1 hour'
                FROM run r JOIN sweep s ON s.id = r.sweep_id
                CROSS JOIN LATERAL (
                    SELECT random() AS u, 0.02 + random() AS loss,
                           r.status = 'succeeded' AND random() < 0.6 AS reached,
                           CASE WHEN r.id % 4 = 0 THEN 'cuda' ELSE 'cpu' END AS device
                ) AS q
                WHERE r.status IN ('succeeded', 'diverged', 'failed')
                """
            ),
            params,
        )
        for table in ("sweep", "run"):
            conn.execute(
                text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}")
            )
    with get_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def naive(url: str, filters: Filters) -> list[dict[str, Any]]:
    """The baseline: every counted run as ORM objects, grouped and ranked in Python."""
    with session_scope(url) as session:
        rows = session.execute(
            select(Run, RunResult)
            .join(RunResult, RunResult.run_id == Run.id)
            .where(
                Run.task == filters.task,
                RunResult.outcome.in_(("succeeded", "diverged")),
                RunResult.pruned_step.is_(None),
            )
        ).all()
        groups: dict[str, list[tuple[Run, RunResult]]] = defaultdict(list)
        for run, result in rows:
            groups[run.config_key].append((run, result))
        out = []
        for key, members in groups.items():
            budget = members[0][0].config["budget"]["steps"]
            steps = [r.steps_to_target if r.reached_target else budget for _, r in members]
            losses = [r.final_loss for _, r in members if r.final_loss is not None]
            out.append(
                {
                    "config_key": key,
                    "steps": statistics.fmean(steps),
                    "final_loss": statistics.fmean(losses) if losses else float("inf"),
                }
            )
        out.sort(key=lambda r: (r["steps"], r["final_loss"], r["config_key"]))
        return out[:50]


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    times.sort()
    return {
        "p50_ms": statistics.median(times),
        "p95_ms": times[min(len(times) - 1, round(0.95 * (len(times) - 1)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()

    name = f"plateau_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        report = measure(url, args.runs, args.repeats)
    finally:
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    print(json.dumps(report, indent=2))


def measure(url: str, n_runs: int, repeats: int) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from service.api.main import create_app
    from service.settings import Settings

    upgrade(url)
    start = time.perf_counter()
    seed(url, n_runs)
    seconds = time.perf_counter() - start
    with get_engine(url).connect() as conn:
        counted = conn.scalar(text("SELECT count(*) FROM run_result"))
        digits = conn.scalar(text("SELECT count(*) FROM run WHERE task = 'digits'"))
        version = conn.scalar(text("SHOW server_version"))

    since = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    cases = {
        "task=digits": (Filters(task="digits"), "steps", 0),
        "no filter": (Filters(), "steps", 0),
        "task=digits&architecture=mlp&metric=final_loss": (
            Filters(task="digits", architecture="mlp"),
            "final_loss",
            0,
        ),
        "task=digits&owner=ana&since=2026-10-01": (
            Filters(task="digits", owner="ana", since=since),
            "steps",
            0,
        ),
        "task=digits&offset=5000": (Filters(task="digits"), "steps", 5000),
    }
    results: dict[str, Any] = {}
    for label, (filters, metric, offset) in cases.items():

        def query(filters: Filters = filters, metric: str = metric, offset: int = offset) -> None:
            with session_scope(url) as session:
                leaderboard(
                    session=session, filters=filters, metric=metric, offset=offset, limit=50
                )

        results[f"query {label}"] = timed(query, repeats)

    settings = Settings(database_url=url, auto_migrate=False)
    with TestClient(create_app(settings, dispatch=False)) as client:
        for path in ("/api/v1/leaderboard", "/api/v1/leaderboard.csv"):

            def get(path: str = path) -> None:
                response = client.get(path, params={"task": "digits", "limit": 50})
                assert response.status_code == 200, response.text

            results[f"http GET {path}?task=digits&limit=50"] = timed(get, repeats)

    baseline = timed(lambda: naive(url, Filters(task="digits")), repeats=5, warmup=1)
    results["baseline naive Python aggregation task=digits"] = baseline
    query_p50 = results["query task=digits"]["p50_ms"]
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "postgres": version,
        "runs": n_runs,
        "results_counted_or_failed": counted,
        "runs_on_digits": digits,
        "seed_seconds": round(seconds, 1),
        "latency": {k: {m: round(v, 1) for m, v in r.items()} for k, r in results.items()},
        "speedup_vs_baseline_p50": round(baseline["p50_ms"] / query_p50, 1),
        "target_p95_ms": 100,
    }


if __name__ == "__main__":
    main()
