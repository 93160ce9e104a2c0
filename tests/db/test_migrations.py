import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from db.errors import SchemaNotCurrent
from db.leaderboard import Filters, leaderboard, rebuild_rollups
from db.migrate import (
    VERSION_TABLE,
    current_revision,
    downgrade,
    ensure_current,
    head_revision,
    upgrade,
)
from db.models import Base, ConfigSummary, ResultRollup, UTCDateTime
from db.session import get_engine, session_scope
from workers.config import RunConfig, config_hash, key_document


def test_migrations_build_the_schema_from_empty(db_url):
    upgrade(db_url)
    tables = set(inspect(get_engine(db_url)).get_table_names())
    assert {"sweep", "run", "run_metric", "run_result", "probe"} <= tables
    assert current_revision(db_url) == head_revision()


def test_migrated_schema_matches_the_models(migrated_url):
    def ours(name, type_, parent_names):  # Optuna's tables share the database
        return type_ != "table" or name in Base.metadata.tables

    with get_engine(migrated_url).connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "include_name": ours}
        )
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_a_stale_schema_is_refused_with_the_command_to_run(db_url):
    with pytest.raises(SchemaNotCurrent, match="plateau db upgrade"):
        ensure_current(db_url, migrate=False)
    ensure_current(db_url, migrate=True)
    assert current_revision(db_url) == head_revision()


def test_the_leaderboard_migration_backfills_names_of_existing_runs(db_url):
    import json

    from sqlalchemy import text

    from workers.config import config_key

    upgrade(db_url, "2743bbdda4de")  # the initial schema
    config = '{"task": {"name": "digits"}, "architecture": {"name": "mlp"}}'
    with get_engine(db_url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO sweep (id, name, owner, source, spec, n_runs, software, "
                "created_at) VALUES (1, 's', 'o', 'api', '{}', 1, '{}', "
                "CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO run (id, sweep_id, grid_index, config, config_hash, "
                "status, attempts, max_attempts, queued_at) VALUES (1, 1, 0, "
                f"'{config}', 'h', 'queued', 0, 3, CURRENT_TIMESTAMP)"
            )
        )
    upgrade(db_url, "0b4611fa4e79")  # this migration; 9fe1f08cc129 re-keys (tested below)
    with get_engine(db_url).connect() as conn:
        row = conn.execute(text("SELECT task, architecture, config_key FROM run")).one()
    assert row == ("digits", "mlp", config_key(json.loads(config)))


# --- 9fe1f08cc129: config_key v2 -----------------------------------------------------------

BEFORE_ROLLUP = "d1742b5e3a17"  # results get their rollup from 5c0e9a2f71b4's own backfill
PREVIOUS_HEAD = "5c0e9a2f71b4"
DAY = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC)
FILLER_RUNS = 2100  # queued runs without results: the re-key reads configs 1,000 at a time


def old_config(
    *,
    seed: int = 0,
    init: str = "default",
    divergence_factor: float = 100.0,
    probes: dict[str, Any] | None = None,
    log_every: int = 1,
    eval_every: int = 50,
    threads: int = 1,
    window: int = 50,
) -> dict[str, Any]:
    """A config as workers.config stored it before 2026-12 (RunConfig.model_dump(mode="json")
    at e515dba^): no loss, divergence, full_batch, digits n_train or xavier gain; the
    divergence factor and escape factor among the plateau settings."""
    return {
        "task": {"name": "digits", "test_fraction": 0.2},
        "architecture": {"name": "mlp", "depth": 2, "width": 64, "activation": "relu"},
        "normalization": "none",
        "init": {"scale": 1.0, "zeros_bias": False, "name": init},
        "optimizer": {
            "lr": 0.1,
            "weight_decay": 0.0,
            "schedule": {"name": "constant"},
            "name": "sgd",
            "momentum": 0.0,
            "nesterov": False,
        },
        "grad_clip": None,
        "seed": seed,
        "budget": {
            "steps": 500,
            "batch_size": 128,
            "log_every": log_every,
            "eval_every": eval_every,
        },
        "target": {"loss": 0.1},
        "plateau": {
            "window": window,
            "rel_improvement": 0.01,
            "min_length": 100,
            "escape_factor": 0.5,
            "smoothing": 0.9,
            "divergence_factor": divergence_factor,
        },
        "probes": {
            "at": [],
            "every": None,
            "max_plateau_probes": 3,
            "k": 3,
            "lanczos_steps": 40,
            "hutchinson_vectors": 20,
            "slq_vectors": 4,
            "slq_steps": 30,
            "slice_points": 21,
            "max_samples": 2048,
            "mode": "eval",
        }
        | (probes or {}),
        "device": "auto",
        "threads": threads,
        "dtype": "float32",
    }


def new_config(*, init: str = "default", **spec: Any) -> RunConfig:
    """The run `old_config` describes, as a spec submitted today resolves it."""
    return RunConfig.model_validate(
        {
            "task": {"name": "digits"},
            "architecture": {"name": "mlp"},
            "init": {"name": init},
            "optimizer": {"name": "sgd", "lr": 0.1},
            **spec,
        }
    )


def old_key(config: dict[str, Any]) -> str:
    """workers.config.config_key until 2026-12."""
    return config_hash({k: v for k, v in config.items() if k != "seed"})


# run id -> (config, sweep, result or None); outcome "succeeded" unless the result says
OLD_RUNS: dict[int, tuple[dict[str, Any], int, dict[str, Any] | None]] = {
    # One configuration measured three ways: other probes, log/eval cadence, plateau
    # detector, threads. Before: three keys; now one.
    1: (old_config(seed=0), 1, {"steps_to_target": 120, "final_loss": 0.08}),
    2: (
        old_config(
            seed=1,
            probes={"at": ["end", "plateau"], "k": 5, "lanczos_steps": 60},
            log_every=10,
            eval_every=25,
            threads=4,
            window=80,
        ),
        1,
        {"steps_to_target": 150, "final_loss": 0.09, "device": "cuda"},
    ),
    3: (
        old_config(seed=2, probes={"every": 100}, threads=8),
        2,
        {"outcome": "diverged", "final_loss": 40.0, "day": 1},
    ),
    4: (old_config(seed=3, threads=2), 1, {"outcome": "failed"}),  # never counted
    5: (old_config(init="orthogonal"), 1, {"steps_to_target": 200, "final_loss": 0.07}),
    6: (old_config(init="xavier_normal"), 1, {"final_loss": 0.3}),
    7: (old_config(init="xavier_normal", seed=1, threads=4), 2, {"final_loss": 0.25, "day": 1}),
    8: (old_config(divergence_factor=50.0), 1, {"steps_to_target": 300, "final_loss": 0.1}),
    # Still queued: today's workers will train it (as Glorot's init, with patience 20).
    10: (old_config(init="xavier_normal", seed=5), 1, None),
    # Enqueued by today's code before the database was migrated: keeps today's key.
    9: (
        new_config(init="xavier_normal").model_dump(mode="json"),
        2,
        {"steps_to_target": 90, "final_loss": 0.05},
    ),
}


def store_runs(url: str) -> None:
    """Runs and results as the code before 2026-12 wrote them (old configs, old keys),
    at the revision before the rollup, whose migration then backfills the rollup."""
    upgrade(url, BEFORE_ROLLUP)
    sweep = sa.table(
        "sweep",
        *(sa.column(c) for c in ("id", "name", "owner", "source", "n_runs")),
        sa.column("spec", sa.JSON),
        sa.column("software", sa.JSON),
        sa.column("created_at", UTCDateTime),
    )
    run = sa.table(
        "run",
        *(sa.column(c) for c in ("id", "sweep_id", "grid_index", "config_hash", "config_key")),
        *(sa.column(c) for c in ("task", "architecture", "status", "attempts", "max_attempts")),
        sa.column("config", sa.JSON),
        sa.column("queued_at", UTCDateTime),
    )
    result = sa.table(
        "run_result",
        *(sa.column(c) for c in ("run_id", "attempt", "outcome", "steps_done", "final_loss")),
        *(sa.column(c) for c in ("reached_target", "steps_to_target", "config_key", "task")),
        *(sa.column(c) for c in ("architecture", "sweep_id", "budget_steps", "device")),
        sa.column("torch_version"),
        sa.column("diagnosis", sa.JSON),
        sa.column("created_at", UTCDateTime),
    )
    runs = dict(OLD_RUNS)
    for i in range(FILLER_RUNS):
        runs[100 + i] = (old_config(seed=10 + i, threads=1 + i % 3), 1 + i % 2, None)
    with get_engine(url).begin() as conn:
        conn.execute(
            sweep.insert(),
            [
                {"id": i, "name": f"s{i}", "owner": o, "source": "api", "n_runs": 1}
                | {"spec": {}, "software": {}, "created_at": DAY}
                for i, o in ((1, "ana"), (2, "ben"))
            ],
        )
        conn.execute(
            run.insert(),
            [
                {
                    "id": run_id,
                    "sweep_id": sweep_id,
                    "grid_index": run_id,
                    "config": config,
                    "config_hash": config_hash(config),
                    "config_key": new_format_key(config) or old_key(config),
                    "task": "digits",
                    "architecture": "mlp",
                    "status": "queued" if plan is None else "succeeded",
                    "attempts": 0 if plan is None else 1,
                    "max_attempts": 3,
                    "queued_at": DAY,
                }
                for run_id, (config, sweep_id, plan) in runs.items()
            ],
        )
        conn.execute(
            result.insert(),
            [
                {
                    "run_id": run_id,
                    "attempt": 1,
                    "outcome": plan.get("outcome", "succeeded"),
                    "steps_done": 500,
                    "final_loss": plan.get("final_loss"),
                    "reached_target": "steps_to_target" in plan,
                    "steps_to_target": plan.get("steps_to_target"),
                    "config_key": new_format_key(config) or old_key(config),
                    "task": "digits",
                    "architecture": "mlp",
                    "sweep_id": sweep_id,
                    "budget_steps": 500,
                    "device": plan.get("device", "cpu"),
                    "torch_version": "2.9.0",
                    "diagnosis": {"verdict": "converged"},
                    "created_at": DAY + dt.timedelta(days=plan.get("day", 0), minutes=run_id),
                }
                for run_id, (config, sweep_id, plan) in runs.items()
                if plan is not None
            ],
        )
    upgrade(url, PREVIOUS_HEAD)


def new_format_key(config: dict[str, Any]) -> str | None:
    """Today's key of a config today's code wrote (it has `divergence`), else None."""
    return RunConfig.model_validate(config).config_key() if "divergence" in config else None


def keys(url: str) -> dict[int, tuple[str, str | None]]:
    """run id -> (run.config_key, run_result.config_key or None)."""
    with get_engine(url).connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT run.id, run.config_key, run_result.config_key FROM run "
                "LEFT JOIN run_result ON run_result.run_id = run.id"
            )
        )
        return {run_id: (key, result_key) for run_id, key, result_key in rows}


def sums(url: str) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    """Every row of result_rollup and config_summary, by table and primary key."""
    out: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
    with session_scope(url) as s:
        for model in (ResultRollup, ConfigSummary):
            pk = [c.name for c in model.__table__.primary_key.columns]
            out[model.__tablename__] = {
                tuple(row[n] for n in pk): dict(row)
                for row in s.execute(sa.select(model.__table__)).mappings()
            }
    return out


def assert_same_sums(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Equal rows; sums of floats up to their order of addition."""
    assert {t: set(rows) for t, rows in got.items()} == {t: set(rows) for t, rows in want.items()}
    for table, rows in want.items():
        for pk, row in rows.items():
            for name, value in row.items():
                if isinstance(value, float):
                    assert got[table][pk][name] == pytest.approx(value, rel=1e-12), (table, name)
                else:
                    assert got[table][pk][name] == value, (table, name)


@pytest.fixture
def old_db(db_url: str) -> str:
    """A database at the revision before config_key v2 holding runs the old code stored."""
    store_runs(db_url)
    return db_url


def test_config_key_v2_pools_runs_that_differ_only_in_how_they_were_measured(old_db):
    before = keys(old_db)
    assert len({before[i][0] for i in (1, 2, 3, 4)}) == 4  # the old rule split them
    upgrade(old_db)
    after = keys(old_db)

    assert current_revision(old_db) == head_revision()
    assert all(result in (key, None) for key, result in after.values())
    assert {after[i][0] for i in (1, 2, 3, 4)} == {after[1][0]}
    queued = {after[i][0] for i in range(100, 100 + FILLER_RUNS)}  # read in three batches
    assert queued == {RunConfig.model_validate(old_config()).config_key()}
    with session_scope(old_db) as s:
        # config_summary answers the first, result_rollup the second
        by_summary, _ = leaderboard(session=s, filters=Filters(task="digits"))
        by_rollup, _ = leaderboard(session=s, filters=Filters(task="digits", torch_version="2.9.0"))
    for page in (by_summary, by_rollup):
        rows = {row["config_key"]: row for row in page}
        assert len(page) == 5  # 1-4, 5, 6-7, 8, 9
        pooled = rows[after[1][0]]
        assert (pooled["n_runs"], pooled["n_reached"], pooled["n_diverged"]) == (3, 2, 1)
        assert pooled["n_sweeps"] == 2
        assert sorted(pooled["run_ids"]) == [1, 2, 3]
        assert pooled["final_loss_mean"] == pytest.approx((0.08 + 0.09 + 40.0) / 3)
        assert rows[after[6][0]]["run_ids"] == [7, 6]


def test_config_key_v2_of_old_runs_is_what_todays_code_gives_the_stop_they_trained_under(old_db):
    upgrade(old_db)
    after = keys(old_db)
    old_stop = {"divergence": {"factor": 100.0, "patience": 1}}

    assert after[5][0] == new_config(init="orthogonal", **old_stop).config_key()
    assert after[1][0] == new_config(**old_stop).config_key()
    assert after[8][0] == new_config(divergence={"factor": 50.0, "patience": 1}).config_key()
    # ...and not a new run's default stop: those trained differently
    assert after[5][0] != new_config(init="orthogonal").config_key()
    assert after[9][0] == new_config(init="xavier_normal").config_key()


def test_config_key_v2_of_a_queued_old_run_is_how_todays_code_will_train_it(old_db):
    upgrade(old_db)
    after = keys(old_db)
    today = {"divergence": {"factor": 100.0, "patience": 20}}  # RunConfig's reading

    assert after[10] == (RunConfig.model_validate(OLD_RUNS[10][0]).config_key(), None)
    assert after[10][0] == new_config(init="xavier_normal", **today).config_key()
    assert after[100][0] == new_config(**today).config_key() != after[1][0]


def test_config_key_v2_never_pools_an_old_xavier_run_with_a_new_one(old_db):
    upgrade(old_db)
    after = keys(old_db)

    old_stop = {"divergence": {"factor": 100.0, "patience": 1}}
    assert after[6][0] == after[7][0]  # two old xavier_normal runs do pool
    for stop in ({}, old_stop):
        assert after[6][0] != new_config(init="xavier_normal", **stop).config_key()
    assert after[6][0] != after[9][0]
    # What it is instead: today's key document of those settings at version 1 of the init,
    # without the gain version 1 never had (docs/DECISIONS.md, config_key v2).
    doc = key_document(new_config(init="xavier_normal", **old_stop).model_dump(mode="json"))
    doc["init"] = {k: v for k, v in doc["init"].items() if k != "gain"} | {"version": 1}
    assert after[6][0] == config_hash(doc)


def test_config_key_v2_rebuilds_the_leaderboard_sums_for_the_new_keys(old_db):
    old_sums = sums(old_db)
    old_keys = {key for key, _ in keys(old_db).values()}
    assert {k for k, *_ in old_sums["result_rollup"]} <= old_keys

    upgrade(old_db)
    migrated = sums(old_db)
    with session_scope(old_db) as s:
        rebuild_rollups(session=s)
    assert_same_sums(migrated, sums(old_db))
    new_keys = {key for key, _ in keys(old_db).values()}
    assert {k for k, *_ in migrated["result_rollup"]} <= new_keys
    assert {k for (k,) in migrated["config_summary"]} == {
        keys(old_db)[i][0] for i in (1, 5, 6, 8, 9)
    }
    # buckets: the pooled configuration's (sweep 1 on cpu and cuda, sweep 2 the next day),
    # xavier's (one per sweep and day), and one each for orthogonal, factor 50 and run 9
    assert len(migrated["result_rollup"]) == 3 + 2 + 1 + 1 + 1


def test_config_key_v2_downgrades_to_the_old_keys_and_sums(old_db):
    before, old_sums = keys(old_db), sums(old_db)
    upgrade(old_db)
    # through db.migrate: on SQLite with foreign keys on, rebuilding `sweep` (2026-12-02's
    # downgrade) would cascade to every run
    downgrade(old_db, PREVIOUS_HEAD)

    after = keys(old_db)
    # Run 9 was enqueued with today's key: it gets the old rule's, like every other run.
    key_9 = old_key(OLD_RUNS[9][0])
    assert after == before | {9: (key_9, key_9)}
    want = {
        table: {
            (key_9 if pk[0] == before[9][0] else pk[0], *pk[1:]): row for pk, row in rows.items()
        }
        for table, rows in old_sums.items()
    }
    for rows in want.values():
        for pk, row in rows.items():
            row["config_key"] = pk[0]
    assert_same_sums(sums(old_db), want)
