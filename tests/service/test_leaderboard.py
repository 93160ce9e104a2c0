"""The leaderboard on SQLite and Postgres: JSON and CSV agree with each other and with a
ranking recomputed here, in Python, from the raw runs; filters, paging, bad parameters,
the pages' server side, and the CLI (`plateau leaderboard`, `plateau plot`)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import os
import statistics
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from db import queue
from db.leaderboard import rebuild_rollups
from db.models import ConfigSummary, ResultRollup, Run, RunResult, Sweep, utcnow
from db.session import session_scope
from tests.conftest import ROOT, plateau_cmd
from workers.config import RunConfig

BUDGET = 300
METRICS = {  # the ranking metrics and their better direction
    "steps": "asc",
    "steps_reached": "asc",
    "reached_rate": "desc",
    "final_loss": "asc",
    "test_accuracy": "desc",
    "plateau_fraction": "asc",
    "divergence_rate": "asc",
    "n_runs": "desc",
}


def config(task: str = "digits", seed: int = 0, **optimizer: Any) -> dict[str, Any]:
    arch = {"name": "mlp", "depth": 1, "width": 8}
    return RunConfig.model_validate(
        {
            "task": {"name": task},
            "architecture": arch,
            "optimizer": optimizer or {"name": "sgd", "lr": 0.1},
            "seed": seed,
            "budget": {"steps": BUDGET},
        }
    ).model_dump(mode="json")


def enqueue(url: str, owner: str, configs: list[dict[str, Any]]) -> list[int]:
    runs = [
        (c, RunConfig.model_validate(c).config_hash(), RunConfig.model_validate(c).config_key())
        for c in configs
    ]
    with session_scope(url) as s:
        sweep = queue.enqueue_sweep(session=s, name=f"by-{owner}", owner=owner, spec={}, runs=runs)
        s.flush()
        return list(s.scalars(select(Run.id).where(Run.sweep_id == sweep.id).order_by(Run.id)))


def finish(url: str, plan: dict[int, dict[str, Any]]) -> None:
    """Claim every queued run and record the planned outcome of each (the real write path)."""
    with session_scope(url) as s:
        claims = queue.claim_runs(session=s, worker_id="t", limit=1000, lease_seconds=60)
    for c in claims:
        p = dict(plan[c.run_id])
        outcome = p.pop("outcome", "succeeded")
        verdict = p.pop("verdict", "converged" if p.get("steps_to_target") else "plateau")
        result = {
            "steps_done": BUDGET if outcome == "succeeded" else 7,
            "reached_target": p.get("steps_to_target") is not None,
            "diagnosis": {"verdict": verdict, "evidence": {}, "thresholds": {}},
            "environment": {"device": p.pop("device", "cpu"), "torch": p.pop("torch", "2.13.0")},
            **p,
        }
        if outcome == "failed":
            result = {}
        with session_scope(url) as s:
            queue.complete_run(
                session=s, run_id=c.run_id, attempt=c.attempt, outcome=outcome, result=result
            )


def backdate(url: str, when: dict[int, dt.datetime]) -> None:
    """Move results to other instants: a rewrite of history the service never does, so the
    leaderboard's rollup is rebuilt after it, as an operator would."""
    with session_scope(url) as s:
        for run_id, at in when.items():
            s.execute(update(RunResult).where(RunResult.run_id == run_id).values(created_at=at))
        rebuild_rollups(session=s)


@pytest.fixture
def board(migrated_url: str) -> dict[str, Any]:
    """Two owners' sweeps over four configurations, three seeds, every kind of outcome."""
    url = migrated_url
    sgd = {"name": "sgd", "lr": 0.1}
    adam = {"name": "adam", "lr": 0.01}
    wild = {"name": "sgd", "lr": 50.0}
    a = enqueue(
        url,
        "ana",
        [config(seed=s, **sgd) for s in range(3)]
        + [config(seed=s, **adam) for s in range(3)]
        + [config(seed=s, **wild) for s in range(3)]
        + [config("parity", seed=s) for s in range(2)]
        + [config(seed=9, **sgd), config(seed=8, **adam)],  # failed, pruned: never counted
    )
    b = enqueue(url, "ben", [config(seed=0, **sgd), config(seed=1, **sgd), config(seed=3, **adam)])
    cuda = {"device": "cuda", "torch": "2.12.0"}
    plan = {
        a[0]: {
            "steps_to_target": 120,
            "final_loss": 0.08,
            "test_accuracy": 0.95,
            "plateau_fraction": 0.1,
        },
        a[1]: {
            "steps_to_target": 150,
            "final_loss": 0.09,
            "test_accuracy": 0.94,
            "plateau_fraction": 0.2,
        },
        a[2]: {"final_loss": 0.4, "test_accuracy": 0.8, "plateau_fraction": 0.5},  # censored
        a[3]: {
            "steps_to_target": 90,
            "final_loss": 0.05,
            "test_accuracy": 0.96,
            "plateau_fraction": 0.0,
        },
        a[4]: {
            "steps_to_target": 200,
            "final_loss": 0.07,
            "test_accuracy": 0.95,
            "plateau_fraction": 0.05,
        },
        a[5]: {
            "steps_to_target": 95,
            "final_loss": 0.06,
            "test_accuracy": 0.97,
            "plateau_fraction": 0.02,
        },
        a[6]: {"outcome": "diverged", "diverged_step": 7, "verdict": "diverged"},
        a[7]: {"outcome": "diverged", "diverged_step": 5, "verdict": "diverged"},
        a[8]: {
            "final_loss": 2.3,
            "test_accuracy": 0.1,
            "plateau_fraction": 1.0,
            "verdict": "saddle",
        },
        a[9]: {
            "steps_to_target": 250,
            "final_loss": 0.2,
            "test_accuracy": 0.9,
            "plateau_fraction": 0.6,
        },
        a[10]: {"final_loss": 0.69, "test_accuracy": 0.5, "plateau_fraction": 0.9},
        a[11]: {"outcome": "failed"},
        a[12]: {"steps_to_target": 10, "final_loss": 0.01, "pruned_step": 50},
        b[0]: {
            "steps_to_target": 110,
            "final_loss": 0.085,
            "test_accuracy": 0.95,
            "plateau_fraction": 0.1,
            **cuda,
        },
        b[1]: {
            "final_loss": 0.3,
            "test_accuracy": 0.85,
            "plateau_fraction": 0.4,
            "verdict": "local_minimum",
            **cuda,
        },
        b[2]: {
            "steps_to_target": 100,
            "final_loss": 0.065,
            "test_accuracy": 0.96,
            "plateau_fraction": 0.01,
            **cuda,
        },
    }
    finish(url, plan)
    # ana's results were recorded ten days ago; a third sweep is still queued.
    ten_days_ago = utcnow() - dt.timedelta(days=10)
    backdate(url, dict.fromkeys(a, ten_days_ago))
    enqueue(url, "cleo", [config(seed=5, **sgd)])
    return {"url": url, "ana": a, "ben": b}


def raw_runs(url: str) -> list[dict[str, Any]]:
    with session_scope(url) as s:
        rows = s.execute(
            select(Run, RunResult, Sweep)
            .join(RunResult, RunResult.run_id == Run.id)
            .join(Sweep, Sweep.id == Run.sweep_id)
        ).all()
        return [
            {
                "id": run.id,
                "key": run.config_key,
                "hash": run.config_hash,
                "task": run.task,
                "architecture": run.architecture,
                "sweep": run.sweep_id,
                "owner": sweep.owner,
                "budget": run.config["budget"]["steps"],
                "outcome": res.outcome,
                "pruned": res.pruned_step,
                "reached": res.reached_target,
                "steps": res.steps_to_target,
                "loss": res.final_loss,
                "acc": res.test_accuracy,
                "plateau": res.plateau_fraction,
                "created": res.created_at,
                "device": res.device,
                "torch": res.torch_version,
                "verdict": (res.diagnosis or {}).get("verdict"),
            }
            for run, res, sweep in rows
        ]


def expected(runs: list[dict[str, Any]], params: dict[str, Any]) -> list[dict[str, Any]]:
    """The leaderboard recomputed from the raw runs, independently of db/leaderboard.py."""

    def keep(r: dict[str, Any]) -> bool:
        checks = {
            "task": r["task"],
            "architecture": r["architecture"],
            "sweep": r["sweep"],
            "owner": r["owner"],
            "device": r["device"],
            "torch_version": r["torch"],
        }
        if r["outcome"] not in ("succeeded", "diverged") or r["pruned"] is not None:
            return False
        if "since" in params:
            since = dt.datetime.fromisoformat(params["since"])
            if r["created"] < (since if since.tzinfo else since.replace(tzinfo=dt.UTC)):
                return False
        return all(params.get(k) in (None, v) for k, v in checks.items())

    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in filter(keep, runs):
        groups[r["key"]].append(r)

    def mean(xs: list[float]) -> float | None:
        return statistics.fmean(xs) if xs else None

    def std(xs: list[float]) -> float | None:
        return statistics.stdev(xs) if len(xs) > 1 else None

    rows = []
    for key, members in groups.items():
        n = len(members)
        reached = [m["steps"] for m in members if m["reached"]]
        losses = [m["loss"] for m in members if m["loss"] is not None]
        budget = members[0]["budget"]
        verdicts: dict[str, int] = defaultdict(int)
        for m in members:
            verdicts[m["verdict"]] += 1
        best = sorted(
            members,
            key=lambda m: (
                not m["reached"],
                m["steps"] if m["reached"] else math.inf,
                m["loss"] if m["loss"] is not None else math.inf,
                m["id"],
            ),
        )
        rows.append(
            {
                "config_key": key,
                "n_runs": n,
                "n_seeds": len({m["hash"] for m in members}),
                "n_sweeps": len({m["sweep"] for m in members}),
                "n_reached": len(reached),
                "n_censored": n - len(reached),
                "n_diverged": sum(m["outcome"] == "diverged" for m in members),
                "budget_steps": budget,
                "steps_censored_mean": (sum(reached) + (n - len(reached)) * budget) / n,
                "steps_reached_mean": mean(reached),
                "steps_reached_std": std(reached),
                "reached_rate": len(reached) / n,
                "final_loss_mean": mean(losses),
                "final_loss_std": std(losses),
                "test_accuracy_mean": mean([m["acc"] for m in members if m["acc"] is not None]),
                "plateau_fraction_mean": mean(
                    [m["plateau"] for m in members if m["plateau"] is not None]
                ),
                "divergence_rate": sum(m["outcome"] == "diverged" for m in members) / n,
                "last_result_at": max(m["created"] for m in members),
                "verdicts": dict(verdicts),
                "best_run_id": best[0]["id"],
                "run_ids": [m["id"] for m in best],
            }
        )
    metric = params.get("metric", "steps")
    column = {
        "steps": "steps_censored_mean",
        "steps_reached": "steps_reached_mean",
        "final_loss": "final_loss_mean",
        "test_accuracy": "test_accuracy_mean",
        "plateau_fraction": "plateau_fraction_mean",
    }.get(metric, metric)
    sign = 1 if params.get("order", METRICS[metric]) == "asc" else -1

    def rank_key(row: dict[str, Any]) -> tuple[Any, ...]:
        value, loss = row[column], row["final_loss_mean"]
        return (value is None, sign * (value or 0), loss is None, loss or 0, row["config_key"])

    rows.sort(key=rank_key)
    for i, row in enumerate(rows, 1):
        row["rank"] = i
    offset = int(params.get("offset", 0))
    return rows[offset : offset + int(params.get("limit", 50))]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def check(client: Any, url: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """GET the JSON and the CSV with params; both must match the recomputed ranking."""
    response = client.get("/api/v1/leaderboard", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    want = expected(raw_runs(url), params)
    everything = expected(raw_runs(url), {**params, "offset": 0, "limit": 10**6})
    assert body["count"] == len(everything)
    assert [r["config_key"] for r in body["data"]] == [r["config_key"] for r in want], params
    for got, exp in zip(body["data"], want, strict=True):
        for field, value in exp.items():
            if field == "last_result_at":
                assert dt.datetime.fromisoformat(got[field]) == value, (params, got[field], value)
            else:
                assert same(got[field], value), (params, field, got[field], value)

    table = client.get("/api/v1/leaderboard.csv", params=params)
    assert table.status_code == 200 and table.headers["content-type"].startswith("text/csv")
    lines = csv_rows(table.text)
    assert len(lines) == len(body["data"])  # the same page when limit/offset are given
    for line, row in zip(lines, body["data"], strict=True):
        for field, cell in line.items():
            value = row.get(field, row["summary"].get(field))
            if field == "architecture_detail":
                assert cell == row["summary"]["architecture"]
            elif field == "grad_clip":
                assert cell == (value or "none")
            elif field == "verdicts":
                assert cell == ";".join(f"{k}={v}" for k, v in sorted(value.items()))
            elif field == "last_result_at":
                assert dt.datetime.fromisoformat(cell) == dt.datetime.fromisoformat(value)
            elif value is None:
                assert cell == "", (field, cell)
            elif isinstance(value, float):
                assert float(cell) == value, (field, cell, value)  # repr round-trips exactly
            else:
                assert cell == str(value), (field, cell, value)
    return body["data"]


QUERIES = [
    {},
    {"task": "digits"},
    {"task": "digits", "metric": "final_loss"},
    {"task": "digits", "metric": "test_accuracy"},
    {"task": "digits", "metric": "steps", "order": "desc"},
    {"metric": "steps_reached"},
    {"metric": "reached_rate"},
    {"metric": "divergence_rate"},
    {"metric": "plateau_fraction", "order": "desc"},
    {"metric": "n_runs"},
    {"task": "digits", "owner": "ben"},
    {"device": "cuda"},
    {"torch_version": "2.13.0"},
    {"architecture": "mlp", "task": "parity"},
    {"task": "digits", "limit": 2, "offset": 1},
    {"offset": 40},
    {"device": "cpu", "offset": 40},  # past the last page, through the rollup
    {"since": "9999-12-31T12:00:00+00:00"},  # inside the last representable day
]


@pytest.mark.parametrize(
    "params", QUERIES, ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items())
)
def test_json_and_csv_agree_with_a_ranking_recomputed_from_the_runs(client, board, params):
    check(client, board["url"], params)


def test_filters_by_date_and_sweep(client, board):
    since = (utcnow() - dt.timedelta(days=2)).isoformat()
    recent = check(client, board["url"], {"since": since})
    assert {r["n_runs"] for r in recent} == {1, 2} and sum(r["n_runs"] for r in recent) == 3
    with session_scope(board["url"]) as s:
        sweep_b = s.scalar(select(Run.sweep_id).where(Run.id == board["ben"][0]))
    assert check(client, board["url"], {"sweep": sweep_b}) == recent
    day = (utcnow() - dt.timedelta(days=2)).date().isoformat()  # a plain date counts as UTC
    assert check(client, board["url"], {"since": day}) == recent


def test_seeds_pool_across_sweeps_and_failed_pruned_queued_runs_do_not_count(client, board):
    rows = client.get("/api/v1/leaderboard", params={"task": "digits"}).json()["data"]
    by_optimizer = {r["summary"]["optimizer"]: r for r in rows}
    sgd = by_optimizer["sgd(lr=0.1)"]
    # ana: seeds 0,1,2 (+ failed seed 9); ben: seeds 0,1 again; cleo: seed 5 still queued
    assert (sgd["n_runs"], sgd["n_seeds"], sgd["n_sweeps"]) == (5, 3, 2)
    assert (sgd["n_reached"], sgd["n_censored"]) == (3, 2)
    assert sgd["steps_censored_mean"] == (120 + 150 + 110 + 2 * BUDGET) / 5
    assert sgd["verdicts"] == {"converged": 3, "plateau": 1, "local_minimum": 1}
    assert sgd["best_run_id"] == board["ben"][0]  # 110 steps beats ana's 120
    assert sgd["devices"] == "cpu … cuda" and sgd["torch_versions"] == "2.12.0 … 2.13.0"
    adam = by_optimizer["adam(lr=0.01,beta1=0.9,beta2=0.999,eps=1e-08)"]
    assert adam["n_runs"] == 4  # the pruned seed 8 is left out
    wild = by_optimizer["sgd(lr=50.0)"]
    assert wild["divergence_rate"] == 2 / 3 and wild["final_loss_mean"] == 2.3
    assert "seed" not in sgd["config"] and sgd["config"]["budget"]["steps"] == BUDGET
    assert [r["rank"] for r in rows] == [1, 2, 3]


def test_runs_that_differ_only_in_what_was_measured_share_a_row_and_count_one_seed(
    client, migrated_url
):
    plain = config(seed=0)
    probed = plain | {"probes": {**plain["probes"], "at": ["end"], "k": 5}, "threads": 2}
    logged = plain | {"budget": {**plain["budget"], "log_every": 10, "eval_every": 7}}
    runs = enqueue(migrated_url, "ana", [plain, probed, logged, config(seed=1)])
    finish(migrated_url, {r: {"steps_to_target": 100 + r, "final_loss": 0.1} for r in runs})
    (row,) = client.get("/api/v1/leaderboard", params={"task": "digits"}).json()["data"]
    assert (row["n_runs"], row["n_seeds"], row["n_reached"]) == (4, 2, 4)


def test_a_since_inside_a_day_takes_that_day_from_the_results(client, board):
    """The rollup's buckets are whole UTC days: a `since` within one counts the rest of that
    day's results one by one. ben's three results move to 09:00, 15:00 and 23:59 of a day."""
    url = board["url"]
    day = dt.datetime(2026, 3, 5, tzinfo=dt.UTC)
    hours = (9, 15, 23.99)
    backdate(
        url, {r: day + dt.timedelta(hours=h) for r, h in zip(board["ben"], hours, strict=True)}
    )
    n_runs = {}
    for since in (
        "2026-03-05T12:00:00+00:00",
        "2026-03-05T14:00:00+02:00",  # 12:00 UTC again
        "2026-03-05T09:00:00+00:00",  # at a result: it counts
        "2026-03-05T09:00:01+00:00",
        "2026-03-05",  # midnight: the whole day from the rollup
        "2026-03-06",
    ):
        n_runs[since] = sum(r["n_runs"] for r in check(client, url, {"since": since}))
    assert n_runs["2026-03-05T12:00:00+00:00"] == n_runs["2026-03-05T14:00:00+02:00"] == 11 + 2
    assert n_runs["2026-03-05"] == n_runs["2026-03-05T09:00:00+00:00"] == 11 + 3
    assert (n_runs["2026-03-05T09:00:01+00:00"], n_runs["2026-03-06"]) == (11 + 2, 11)


def buckets(url: str) -> set[tuple[Any, ...]]:
    """The rollup's keys, from the raw runs: (config, sweep, device, torch, UTC day)."""
    return {
        (r["key"], r["sweep"], r["device"], r["torch"], r["created"].astimezone(dt.UTC).date())
        for r in raw_runs(url)
        if r["outcome"] in ("succeeded", "diverged") and r["pruned"] is None
    }


def rollup(url: str, table: Any = ResultRollup) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The rows of result_rollup (or config_summary) by primary key."""
    keys = [c.name for c in table.__table__.primary_key.columns]
    with session_scope(url) as s:
        return {
            tuple(getattr(row, k) for k in keys): {
                c.name: getattr(row, c.name) for c in table.__table__.columns
            }
            for row in s.scalars(select(table))
        }


def test_the_migration_backfills_the_rollup_of_recorded_results(board):
    """Down to the revision before result_rollup and up again: the backfill (SQL of its own)
    rebuilds exactly the rollup and summary rows complete_run and rebuild_rollups wrote."""
    from db.migrate import downgrade, upgrade

    url = board["url"]
    written = {table: rollup(url, table) for table in (ResultRollup, ConfigSummary)}
    assert written[ResultRollup].keys() == buckets(url)
    assert {key for key, *_ in buckets(url)} == {key for (key,) in written[ConfigSummary]}
    for rows in written.values():
        assert sum(row["n_runs"] for row in rows.values()) == 14
    # db.migrate's, which keep SQLite's foreign keys off while batch mode rebuilds tables
    downgrade(url, "d1742b5e3a17")
    upgrade(url)
    for table, rows in written.items():
        rebuilt = rollup(url, table)
        assert rebuilt.keys() == rows.keys()
        for key, row in rows.items():
            for column, value in row.items():
                assert same(rebuilt[key][column], value), (table, column, rebuilt[key], value)


def test_rebuild_repairs_the_leaderboard_after_results_deleted_by_hand(client, board, tmp_path):
    """One of ben's results and every parity result deleted in SQL: until the rebuild the sums
    still count them, and the parity configuration, with no runs left to link, is left out."""
    url = board["url"]
    parity = board["ana"][9:11]
    with session_scope(url) as s:
        s.execute(delete(RunResult).where(RunResult.run_id.in_([board["ben"][0], *parity])))
    for params in ({}, {"device": "cuda"}):  # config_summary, result_rollup
        stale = client.get("/api/v1/leaderboard", params=params)
        assert stale.status_code == 200, stale.text
        assert {r["task"] for r in stale.json()["data"]} == {"digits"}
    assert sum(r["n_runs"] for r in client.get("/api/v1/leaderboard").json()["data"]) == 12
    out = plateau("db", "rebuild-leaderboard", url=url, tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"{len(buckets(url))} rollup rows" in out.stdout
    assert sum(r["n_runs"] for r in check(client, url, {})) == 11


def test_an_empty_database_has_an_empty_leaderboard(client):
    assert client.get("/api/v1/leaderboard").json() == {"data": [], "count": 0}
    table = client.get("/api/v1/leaderboard.csv")
    assert table.text.splitlines()[0].startswith("rank,config_key,task")
    assert len(table.text.splitlines()) == 1


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"metric": "fastest"}, "metric"),
        ({"order": "up"}, "order"),
        ({"since": "last tuesday"}, "since"),
        ({"sweep": 0}, "sweep"),
        ({"sweep": "one"}, "sweep"),
        ({"limit": 0}, "limit"),
        ({"limit": 5000}, "limit"),
        ({"offset": -1}, "offset"),
        ({"arch": "mlp"}, "arch"),  # a misspelt filter is refused, not silently ignored
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/leaderboard", "/api/v1/leaderboard.csv"])
def test_bad_query_params_answer_422_naming_the_parameter(client, path, params, name):
    if path.endswith(".csv") and name == "limit" and params["limit"] == 5000:
        params = {"limit": 200_000}
    response = client.get(path, params=params)
    assert response.status_code == 422, response.text
    problems = response.json()["detail"]
    assert any(p["loc"][-1] == name for p in problems), problems
    if name == "metric":
        assert "steps" in problems[0]["msg"] and "final_loss" in problems[0]["msg"]


def test_the_pages_render_on_the_server(client, board):
    page = client.get("/", params={"task": "digits", "metric": "final_loss"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    ranked = client.get("/api/v1/leaderboard", params={"task": "digits", "metric": "final_loss"})
    keys = [r["config_key"] for r in ranked.json()["data"]]
    positions = [page.text.index(f'data-config-key="{k}"') for k in keys]
    assert positions == sorted(positions)
    bad = client.get("/", params={"metric": "fastest"})
    assert bad.status_code == 422 and "metric" in bad.text and "<table" not in bad.text
    run_id = board["ana"][0]
    run = client.get(f"/runs/{run_id}")
    assert run.status_code == 200 and 'id="plot-loss"' in run.text and "ana" in run.text
    with session_scope(board["url"]) as s:
        sweep_id = s.scalar(select(Run.sweep_id).where(Run.id == run_id))
    sweep = client.get(f"/sweeps/{sweep_id}")
    assert sweep.status_code == 200 and "submitted by" in sweep.text and "ana" in sweep.text
    assert client.get("/runs/999999").status_code == 404
    assert client.get("/sweeps/999999").status_code == 404
    assert client.get("/compare", params={"runs": f"{run_id},{board['ben'][0]}"}).status_code == 200
    assert client.get("/compare", params={"runs": "1,x"}).status_code == 422
    assert client.get("/compare", params={"runs": "999999"}).status_code == 404
    for asset in ("pages.js", "run.js", "vendor/vega/vega-embed.min.js", "plateau.css"):
        assert client.get(f"/static/{asset}").status_code == 200


def plateau(*args: str, url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run(
        plateau_cmd(*args), cwd=ROOT, capture_output=True, text=True, env=env, timeout=180
    )


def test_the_cli_prints_the_same_ranking(board, tmp_path):
    out = plateau(
        "leaderboard",
        "--task",
        "digits",
        "--metric",
        "final_loss",
        url=board["url"],
        tmp_path=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    want = expected(raw_runs(board["url"]), {"task": "digits", "metric": "final_loss"})
    best = [str(r["best_run_id"]) for r in want]
    lines = [line for line in out.stdout.splitlines() if line.startswith("│")]
    rows = [line for line in lines if line.split("│")[1].strip().isdigit()]
    assert [row.split("│")[-2].strip() for row in rows] == best
    bad = plateau("leaderboard", "--metric", "fastest", url=board["url"], tmp_path=tmp_path)
    assert bad.returncode == 2 and "metric" in bad.stderr


def test_plot_writes_the_figures_of_a_run(migrated_url, tmp_path):
    """`plateau plot` on a run with curves, plateau segments and a probe."""
    url = migrated_url
    (run_id,) = enqueue(url, "dora", [config(seed=1, name="sgd", lr=0.3)])
    grid = [x / 5 for x in range(-5, 6)]
    with session_scope(url) as s:
        (claim,) = queue.claim_runs(session=s, worker_id="t", limit=1, lease_seconds=60)
        queue.write_metrics(
            session=s,
            run_id=run_id,
            attempt=claim.attempt,
            rows=[
                {
                    "step": t,
                    "loss": 2.3 * math.exp(-t / 40),
                    "lr": 0.3,
                    "grad_norm": 1 / (1 + t),
                    "clipped": t % 10 == 0,
                    "eval_loss": 2.0 if t % 20 == 0 else None,
                    "layer_grad_norms": {"0": 0.5 / (1 + t), "2": 0.2 / (1 + t)},
                }
                for t in range(0, 100, 2)
            ],
        )
        slices = {
            "random_1d": {"alphas": grid, "values": [x * x for x in grid]},
            "random_2d": {
                "alphas": grid,
                "betas": grid,
                "values": [[a * a - b * b for b in grid] for a in grid],
            },
            "interpolation": {"ts": grid, "values": [2 + x for x in grid]},
        }
        queue.write_probe(
            session=s,
            run_id=run_id,
            attempt=claim.attempt,
            probe={
                "step": 100,
                "trigger": "end",
                "lambda_max": 3.0,
                "lambda_min": -0.1,
                "grad_norm": 0.01,
                "data": {
                    "density": {"grid": grid, "values": [1 + x * x for x in grid]},
                    "slices": slices,
                },
            },
        )
        segment = {"start": 10, "end": 40, "level": 1.0, "mean_grad_norm": 0.01, "escaped": True}
        queue.complete_run(
            session=s,
            run_id=run_id,
            attempt=claim.attempt,
            outcome="succeeded",
            result={"final_loss": 0.1, "steps_done": 100, "plateaus": {"segments": [segment]}},
        )
    out = plateau("plot", str(run_id), "-o", str(tmp_path / "figs"), url=url, tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    names = sorted(p.name for p in (tmp_path / "figs").iterdir())
    stems = [
        "density",
        "grad_norm",
        "hessian",
        "interpolation",
        "loss",
        "lr_clip",
        "slices_1d",
        "surface_2d",
        "test",
    ]
    assert names == sorted(f"run{run_id}_{stem}.svg" for stem in stems)
    for name in names:
        assert (tmp_path / "figs" / name).read_text().count("<path") > 5, name
    missing = plateau("plot", "999999", "-o", str(tmp_path), url=url, tmp_path=tmp_path)
    assert missing.returncode == 2 and "run 999999 not found" in missing.stderr

    # The other pages' charts, from the same specs their figure endpoints serve.
    with session_scope(url) as s:
        sweep_id = s.get(Run, run_id).sweep_id
    pages = tmp_path / "pages"
    for args in (("--sweep", str(sweep_id), "--by", "seed"), ("--compare", f"{run_id}")):
        out = plateau(
            "plot", *args, "-o", str(pages), "--format", "png", url=url, tmp_path=tmp_path
        )
        assert out.returncode == 0, out.stderr
    names = sorted(p.name for p in pages.iterdir())
    assert f"compare{run_id}_curves.png" in names, names
    assert {f"sweep{sweep_id}_{n}.png" for n in ("loss", "plateau", "verdicts")} <= set(names), (
        names
    )
    for args, message in (
        (("--study", "999999"), "study 999999 not found"),
        ((str(run_id), "--sweep", str(sweep_id)), "give one of RUN_ID, --sweep"),
        (("--sweep", str(sweep_id), "--by", "optimiser"), "did you mean 'optimizer'"),
    ):
        bad = plateau("plot", *args, "-o", str(pages), url=url, tmp_path=tmp_path)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)
