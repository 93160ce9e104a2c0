"""Leaderboard latency with 100,000 runs in PostgreSQL, on today's schema and on the one
proposed in benchmarks/README.md (copies of the run's grouping columns on run_result, and a
covering index).

Creates a throwaway database on the server named by PLATEAU_BENCH_POSTGRES_URL (default
postgres@127.0.0.1:5432/postgres, the admin connection), migrates it with Alembic, and
seeds it in SQL (INSERT ... SELECT over generate_series, no training): 1,000 sweeps of 100
runs from 8 owners over a year; 15,000 configurations of 5 seeds (a quarter repeated by a
later sweep, so they pool across sweeps); half the runs on `digits`, the rest on four other
tasks; 85 % succeeded, 10 % diverged, 3 % failed, 2 % still queued or running. Configs are
real resolved RunConfig documents (~1.3 kB of JSON); results carry diagnosis, plateau and
environment JSON of the size the worker writes.

Then, in the same run, it measures p50 / p95 over --repeats calls of
  query     db.leaderboard.leaderboard (one page of 50) for several filter sets,
  http      GET /api/v1/leaderboard and /api/v1/leaderboard.csv through the ASGI app,
  baseline  the naive way: load the runs of the task with their results as ORM objects and
            aggregate and rank them in Python,
first on the schema as it is, then after applying PROPOSED_DDL (what the proposed migration
does) and adding its columns to the table metadata (what its model change does), after
checking that both layouts give the same rows. The target is p95 < 100 ms. The database
is dropped at the end.

    python benchmarks/leaderboard.py [--runs 100000] [--repeats 40]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from sqlalchemy import Column, Integer, String, create_engine, select, text

from db.leaderboard import Filters, _facts, leaderboard
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
    "segments": [{"start": 20, "end": 180, "level": 2.3, "mean_grad_norm": 0.01, "escaped": True}],
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
                SELECT g, 'bench-' || g, (CAST(:owners AS text[]))[1 + g % 8], 'api',
                       '{}'::json, 100,
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
                                    ELSE (CAST(:tasks AS text[]))
                                         [2 + ((i / {SEEDS}) % :n_configs / 2) % 4]
                               END AS task,
                               (CAST(:archs AS text[]))
                               [1 + ((i / {SEEDS}) % :n_configs / 8) % 3] AS arch
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
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
                )
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


# What the proposed migration adds: copies of the run's grouping columns on run_result (set
# with the result; the run's own values never change) and one covering index per access path,
# so the ranking is an index-only scan of one table instead of a join of two wide ones.
PROPOSED_COLUMNS = [
    Column("config_key", String(64)),
    Column("task", String(64)),
    Column("architecture", String(64)),
    Column("sweep_id", Integer),
    Column("budget_steps", Integer),
    Column("verdict", String(32)),
]
COVERED = (
    "architecture, sweep_id, outcome, pruned_step, reached_target, steps_to_target, "
    "final_loss, test_accuracy, plateau_fraction, budget_steps, created_at, device, "
    "torch_version, run_id"
)
PROPOSED_DDL = [
    "ALTER TABLE run_result ADD COLUMN config_key varchar(64) NOT NULL DEFAULT '', "
    "ADD COLUMN task varchar(64) NOT NULL DEFAULT '', "
    "ADD COLUMN architecture varchar(64) NOT NULL DEFAULT '', "
    "ADD COLUMN sweep_id integer, ADD COLUMN budget_steps integer, "
    "ADD COLUMN verdict varchar(32)",
    # the backfill; new results get them from complete_run
    "UPDATE run_result rr SET config_key = r.config_key, task = r.task, "
    "architecture = r.architecture, sweep_id = r.sweep_id, "
    "budget_steps = (r.config -> 'budget' ->> 'steps')::int, "
    "verdict = rr.diagnosis ->> 'verdict' FROM run r WHERE r.id = rr.run_id",
    f"CREATE INDEX ix_run_result_leaderboard_task ON run_result (task, config_key) "
    f"INCLUDE ({COVERED})",
    f"CREATE INDEX ix_run_result_leaderboard ON run_result (config_key) INCLUDE (task, {COVERED})",
]


def apply_proposed_schema(url: str) -> None:
    with get_engine(url).begin() as conn:
        for statement in PROPOSED_DDL:
            conn.execute(text(statement))
    with get_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE run_result"))
    table = RunResult.__table__
    for column in PROPOSED_COLUMNS:
        table.append_column(column)
    assert _facts().join is False  # db.leaderboard now reads run_result alone


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12)  # summation order may differ
    return bool(a == b)


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
        "p95_ms": times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)],
    }


SINCE = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
CASES: dict[str, tuple[Filters, str, int]] = {
    "task=digits": (Filters(task="digits"), "steps", 0),
    "task=digits&architecture=mlp&metric=final_loss": (
        Filters(task="digits", architecture="mlp"),
        "final_loss",
        0,
    ),
    "task=digits&owner=ana&since=2026-10-01": (
        Filters(task="digits", owner="ana", since=SINCE),
        "steps",
        0,
    ),
    "task=digits&offset=5000": (Filters(task="digits"), "steps", 5000),
    "no filter (all runs)": (Filters(), "steps", 0),
}


def page(url: str, filters: Filters, metric: str, offset: int) -> list[dict[str, Any]]:
    with session_scope(url) as session:
        rows, _ = leaderboard(
            session=session, filters=filters, metric=metric, offset=offset, limit=50
        )
        return rows


def measure_layout(url: str, repeats: int) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from service.api.main import create_app
    from service.settings import Settings

    results: dict[str, Any] = {}
    for label, (filters, metric, offset) in CASES.items():
        results[f"query {label}"] = timed(
            lambda f=filters, m=metric, o=offset: page(url, f, m, o), repeats
        )
    settings = Settings(database_url=url, auto_migrate=False)
    with TestClient(create_app(settings, dispatch=False)) as client:
        for path in ("/api/v1/leaderboard", "/api/v1/leaderboard.csv"):

            def get(path: str = path) -> None:
                response = client.get(path, params={"task": "digits", "limit": 50})
                assert response.status_code == 200, response.text

            results[f"http GET {path}?task=digits&limit=50"] = timed(get, repeats)
    return {k: {m: round(v, 1) for m, v in r.items()} for k, r in results.items()}


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
    upgrade(url)
    start = time.perf_counter()
    seed(url, n_runs)
    seconds = time.perf_counter() - start
    with get_engine(url).connect() as conn:
        counted = conn.scalar(text("SELECT count(*) FROM run_result"))
        digits = conn.scalar(text("SELECT count(*) FROM run WHERE task = 'digits'"))
        version = conn.scalar(text("SHOW server_version"))

    baseline = timed(lambda: naive(url, Filters(task="digits")), repeats=5, warmup=1)
    current = measure_layout(url, repeats)
    before = {label: page(url, *case) for label, case in CASES.items()}
    apply_proposed_schema(url)
    after = {label: page(url, *case) for label, case in CASES.items()}
    for label in CASES:
        for a, b in zip(before[label], after[label], strict=True):
            diff = {k: (a[k], b[k]) for k in a if not same(a[k], b[k])}
            assert not diff, f"the two layouts disagree on {label}: {diff}"
    proposed = measure_layout(url, repeats)

    def speedup(layout: dict[str, Any]) -> float:
        return round(baseline["p50_ms"] / layout["query task=digits"]["p50_ms"], 1)

    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "postgres": version,
        "runs": n_runs,
        "results (counted or failed)": counted,
        "runs on digits": digits,
        "seed_seconds": round(seconds, 1),
        "baseline naive Python aggregation task=digits": {
            m: round(v, 1) for m, v in baseline.items()
        },
        "current schema": current,
        "proposed schema": proposed,
        "speedup over baseline, p50, task=digits": {
            "current schema": speedup(current),
            "proposed schema": speedup(proposed),
        },
        "target": "p95 < 100 ms",
    }


if __name__ == "__main__":
    main()
