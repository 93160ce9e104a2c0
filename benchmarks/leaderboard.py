"""Leaderboard latency with 100,000 runs in PostgreSQL, against the naive way.

Creates a throwaway database on the server named by PLATEAU_BENCH_POSTGRES_URL (default
postgres@127.0.0.1:5432/postgres, the admin connection), migrates it to head with
db.migrate.upgrade, and seeds it in SQL (INSERT ... SELECT over generate_series, no
training): 1,000 sweeps of 100 runs from 8 owners over a year; 15,000 configurations of 5
seeds (a quarter repeated by a later sweep, so they pool across sweeps); half the runs on
`digits`, the rest on four other tasks; 85 % succeeded, 10 % diverged, 3 % failed, 2 %
still queued or running. Configs are real resolved RunConfig documents (~1.3 kB of JSON);
results carry diagnosis, plateau and environment JSON of the size the worker writes, and
the copies of their run's facts that db.queue.complete_run writes (config_key, task,
architecture, sweep_id, budget_steps, verdict). The result_rollup rows complete_run keeps
are built by db.leaderboard.rebuild_rollups (the same aggregate, every bucket in one
statement). Then VACUUM ANALYZE, as autovacuum would after a bulk load (it also sets the
visibility map the index-only scans rely on).

Then, in the same run, it measures p50 / p95 over --repeats calls of
  query     db.leaderboard.leaderboard (one page of 50) for several filter sets,
  http      GET /api/v1/leaderboard and /api/v1/leaderboard.csv through the ASGI app,
  baseline  the naive way, for the same filters: load the counted runs with their results
            as ORM objects, aggregate and rank them in Python (--baseline-repeats calls),
  refresh   db.leaderboard.refresh_rollup for one result's bucket, the work each recorded
            result adds to complete_run's transaction to keep result_rollup current,
checks that the query's pages equal the baseline's, prints the ranking query's plans, and
prints the ratios. The target is p95 < 100 ms. The database is dropped at the end.

    python benchmarks/leaderboard.py [--runs 100000] [--repeats 100] [--baseline-repeats 3]
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

from sqlalchemy import create_engine, event, select, text

from db.leaderboard import Filters, leaderboard, rebuild_rollups, refresh_rollup
from db.migrate import upgrade
from db.models import Run, RunResult, Sweep, User
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
        # owners are users (2026-12-02): user i is OWNERS[i - 1]; legacy ones, as from free
        # text, so the API stays in single-user mode for the timed requests
        conn.execute(
            text(
                """
                INSERT INTO app_user (id, name, role, origin, created_at)
                SELECT i, (CAST(:owners AS text[]))[i], 'viewer', 'legacy',
                       CAST(:start AS timestamptz)
                FROM generate_series(1, 8) AS i
                """
            ),
            params,
        )
        conn.execute(
            text(
                """
                INSERT INTO sweep (id, name, owner_id, source, spec, n_runs, software, created_at)
                SELECT g, 'bench-' || g, 1 + g % 8, 'api',
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
                    diagnosis, environment, seconds, device, torch_version, created_at,
                    config_key, task, architecture, sweep_id, budget_steps, verdict)
                SELECT r.id, 1, r.status, CASE WHEN r.status = 'diverged' THEN 40 ELSE 500 END,
                       CASE WHEN r.status = 'succeeded' THEN q.loss END,
                       CASE WHEN r.status = 'succeeded' THEN q.loss * 1.1 END,
                       CASE WHEN r.status = 'succeeded' THEN 1 - q.loss / 3 END,
                       q.reached, CASE WHEN q.reached THEN 50 + (q.u * 450)::int END,
                       q.u / 2, (q.u * 200)::int, CAST(:plateaus AS json), q.u / 10,
                       CASE WHEN r.status = 'diverged' THEN 40 END,
                       (CAST(:diagnosis AS jsonb)
                        || jsonb_build_object('verdict', v.verdict))::json,
                       json_build_object('torch', s.software->>'torch', 'device', q.device,
                                         'dtype', 'float32', 'threads', 1),
                       q.u * 10, q.device, s.software->>'torch',
                       s.created_at + interval '1 hour',
                       -- the copies complete_run writes: the run's facts, its config's
                       -- budget.steps and the diagnosis' verdict
                       r.config_key, r.task, r.architecture, r.sweep_id,
                       (r.config -> 'budget' ->> 'steps')::int, v.verdict
                FROM run r JOIN sweep s ON s.id = r.sweep_id
                CROSS JOIN LATERAL (
                    SELECT random() AS u, 0.02 + random() AS loss,
                           r.status = 'succeeded' AND random() < 0.6 AS reached,
                           CASE WHEN r.id % 4 = 0 THEN 'cuda' ELSE 'cpu' END AS device
                ) AS q
                CROSS JOIN LATERAL (
                    SELECT CASE WHEN r.status = 'diverged' THEN 'diverged'
                                WHEN q.reached THEN 'converged'
                                ELSE (ARRAY['plateau', 'saddle', 'local_minimum',
                                            'still_improving'])[1 + (q.u * 4)::int % 4]
                           END AS verdict
                ) AS v
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
    with session_scope(url) as session:
        rebuild_rollups(session=session)
    with get_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def naive(url: str, filters: Filters, metric: str, offset: int) -> list[dict[str, Any]]:
    """The baseline: every counted run as ORM objects, grouped and ranked in Python."""
    where = [
        RunResult.outcome.in_(("succeeded", "diverged")),
        RunResult.pruned_step.is_(None),
    ]
    if filters.task is not None:
        where.append(Run.task == filters.task)
    if filters.architecture is not None:
        where.append(Run.architecture == filters.architecture)
    if filters.since is not None:
        where.append(RunResult.created_at >= filters.since)
    if filters.owner is not None:
        where.append(Sweep.owner_id.in_(select(User.id).where(User.name == filters.owner)))
    if filters.device is not None:
        where.append(RunResult.device == filters.device)
    with session_scope(url) as session:
        rows = session.execute(
            select(Run, RunResult)
            .join(RunResult, RunResult.run_id == Run.id)
            .join(Sweep, Sweep.id == Run.sweep_id)
            .where(*where)
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
                    "final_loss": statistics.fmean(losses) if losses else math.inf,
                }
            )
        out.sort(key=lambda r: (r[metric], r["final_loss"], r["config_key"]))
        return out[offset : offset + 50]


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
        "p50": statistics.median(times),
        "p95": times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)],
    }


SINCE = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
# label -> (filters, metric, offset); the HTTP requests are the second case's. A `since` at
# midnight UTC reads whole days of the rollup; one inside a day also reads that day's results.
CASES: dict[str, tuple[Filters, str, int]] = {
    "no filter (all runs)": (Filters(), "steps", 0),
    "task=digits": (Filters(task="digits"), "steps", 0),
    "task=digits, architecture=mlp, metric=final_loss": (
        Filters(task="digits", architecture="mlp"),
        "final_loss",
        0,
    ),
    "task=digits, offset=5000": (Filters(task="digits"), "steps", 5000),
    "task=digits, owner=ana, since=2026-10-01": (
        Filters(task="digits", owner="ana", since=SINCE),
        "steps",
        0,
    ),
    "task=digits, since=2026-01-01 (every digits run)": (
        Filters(task="digits", since=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
        "steps",
        0,
    ),
    "since=2026-07-01 (all tasks)": (
        Filters(since=dt.datetime(2026, 7, 1, tzinfo=dt.UTC)),
        "steps",
        0,
    ),
    "since=2026-07-01T13:30 (all tasks, inside a day)": (
        Filters(since=dt.datetime(2026, 7, 1, 13, 30, tzinfo=dt.UTC)),
        "steps",
        0,
    ),
    "device=cuda (all tasks)": (Filters(device="cuda"), "steps", 0),
}


def page(url: str, filters: Filters, metric: str, offset: int) -> list[dict[str, Any]]:
    with session_scope(url) as session:
        rows, _ = leaderboard(
            session=session, filters=filters, metric=metric, offset=offset, limit=50
        )
        return rows


def check(url: str, label: str, case: tuple[Filters, str, int]) -> None:
    """The query's page is the baseline's: same configurations, order and ranking values."""
    filters, metric, offset = case
    got = page(url, filters, metric, offset)
    want = naive(url, filters, metric, offset)
    assert [r["config_key"] for r in got] == [r["config_key"] for r in want], label
    for g, w in zip(got, want, strict=True):
        assert math.isclose(g["steps_censored_mean"], w["steps"], rel_tol=1e-12), label
        assert math.isclose(g["final_loss_mean"] or math.inf, w["final_loss"], rel_tol=1e-12)


def ranking_plan(url: str, label: str) -> list[str]:
    """EXPLAIN ANALYZE of a case's ranking query: its scan and heap-fetch lines."""
    engine = get_engine(url)
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        page(url, *CASES[label])
    finally:
        event.remove(engine, "before_cursor_execute", record)
    statement, parameters = next((s, p) for s, p in seen if "OVER ()" in s)
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL jit = off"))
        plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters)
        lines = [line for (line,) in plan]
    keep = ("Scan", "Heap Fetches", "Execution Time")
    return [line.strip() for line in lines if any(k in line for k in keep)]


def ratio(baseline: float, measured: float) -> str:
    x = baseline / measured
    return f"{x:.1f}×" if x < 10 else f"{x:,.0f}×"


def machine(url: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with get_engine(url).connect() as conn:
        version = conn.scalar(text("SHOW server_version"))
        shared_buffers = conn.scalar(text("SHOW shared_buffers"))
    return {
        "platform": platform.platform(),
        "cpu": f"{cpu}, {os.cpu_count()} logical CPUs",
        "python": platform.python_version(),
        "postgres": f"{version} (shared_buffers {shared_buffers})",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--baseline-repeats", type=int, default=3)
    args = parser.parse_args()

    name = f"plateau_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        measure(url, args.runs, args.repeats, args.baseline_repeats)
    finally:
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def measure(url: str, n_runs: int, repeats: int, baseline_repeats: int) -> None:
    from fastapi.testclient import TestClient

    from service.api.main import create_app
    from service.settings import Settings

    for key, value in machine(url).items():
        print(f"{key}: {value}")
    upgrade(url)
    start = time.perf_counter()
    seed(url, n_runs)
    print(f"seeded {n_runs:,} runs in {time.perf_counter() - start:.0f} s")
    with get_engine(url).connect() as conn:
        results = conn.scalar(text("SELECT count(*) FROM run_result"))
        digits = conn.scalar(text("SELECT count(*) FROM run WHERE task = 'digits'"))
    print(f"{results:,} results, {digits:,} runs on digits")

    for label, case in CASES.items():
        check(url, label, case)
    print("pages equal the baseline's for every case")
    for label in ("task=digits", "task=digits, since=2026-01-01 (every digits run)"):
        print(f"ranking query plan, {label}:", *ranking_plan(url, label), sep="\n  ")

    # (label, measured, baseline); the offset only slices the baseline's full ranking
    rows: list[tuple[str, dict[str, float], dict[str, float]]] = []
    baselines: dict[Filters, dict[str, float]] = {}
    for label, (filters, metric, offset) in CASES.items():
        if filters not in baselines:
            baselines[filters] = timed(
                lambda f=filters, m=metric, o=offset: naive(url, f, m, o),
                repeats=baseline_repeats,
                warmup=1,
            )
        query = timed(lambda f=filters, m=metric, o=offset: page(url, f, m, o), repeats)
        rows.append((f"query {label}", query, baselines[filters]))

    settings = Settings(database_url=url, auto_migrate=False)
    with TestClient(create_app(settings, dispatch=False)) as client:
        for path in ("/api/v1/leaderboard", "/api/v1/leaderboard.csv"):

            def get(path: str = path) -> None:
                response = client.get(path, params={"task": "digits", "limit": 50})
                assert response.status_code == 200, response.text

            rows.append(
                (
                    f"GET {path}?task=digits&limit=50",
                    timed(get, repeats),
                    baselines[Filters(task="digits")],
                )
            )

    print(f"\none page of 50, {repeats} calls after 3 warm-up calls; baseline: naive Python")
    print(f"aggregation of the same filters, {baseline_repeats} calls after 1 warm-up call\n")
    print("| request | p50 / p95 ms | baseline p50 / p95 ms | speedup p50 / p95 |")
    print("|---|---|---|---|")
    for label, m, b in rows:
        print(
            f"| {label} | {m['p50']:,.0f} / {m['p95']:,.0f} | {b['p50']:,.0f} / {b['p95']:,.0f} "
            f"| {ratio(b['p50'], m['p50'])} / {ratio(b['p95'], m['p95'])} |"
        )
    worst = max(m["p95"] for _, m, _ in rows)

    # The write side: what keeping result_rollup current adds to each recorded result.
    with session_scope(url) as session:
        ids = list(
            session.scalars(
                select(RunResult.run_id)
                .where(RunResult.outcome == "succeeded")
                .order_by(RunResult.run_id)
                .limit(repeats * 4 + 3)
            )
        )

    def refresh(ids: list[int] = ids) -> None:
        with session_scope(url) as session:
            result = session.get(RunResult, ids.pop())
            assert result is not None
            refresh_rollup(session=session, result=result)

    cost = timed(refresh, repeats=repeats * 4)
    print(
        f"\nrefresh_rollup (one result's bucket, in complete_run's transaction; with loading "
        f"the result): {cost['p50']:.1f} / {cost['p95']:.1f} ms p50 / p95"
    )
    print(
        f"\ntarget p95 < 100 ms: {'met' if worst < 100 else 'NOT met'} (worst p95 {worst:.0f} ms)"
    )


if __name__ == "__main__":
    main()
