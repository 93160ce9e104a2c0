"""config_key v2: re-key every run by what changes the training, rebuild the leaderboard sums

Revision ID: 9fe1f08cc129
Revises: 5c0e9a2f71b4
Create Date: 2026-12-01 23:30:00.000000

`workers.config.config_key` used to hash a run's whole resolved config without its seed, so
probe settings, log/eval cadence, threads, device and plateau thresholds split leaderboard
rows. From 2026-12 it hashes only `key_document`: what changes the training. This revision
recomputes `run.config_key` and `run_result.config_key` from each stored `run.config` with
a frozen copy of that rule, then rebuilds `result_rollup` and `config_summary` for the new
keys. No schema changes. docs/DECISIONS.md ("config_key v2") says why old runs get the
divergence stop and init version they do.

The rules are copied here, not imported: a migration is a snapshot, and `workers.config`
will move on (tests/db/test_migrations.py checks this copy against the current code).
"""

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "9fe1f08cc129"
down_revision: str | None = "5c0e9a2f71b4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000  # runs read (and their configs held) per statement

# --- workers/config.py as of 2026-12-01 (commit e515dba), frozen ------------------------

TASK_LOSS = {
    "digits": "cross_entropy",
    "teacher_student": "mse",
    "deep_linear": "mse",
    "parity": "cross_entropy",
    "spirals": "cross_entropy",
    "modular_addition": "cross_entropy",
}
KEY_FIELDS = (
    "task",
    "architecture",
    "normalization",
    "init",
    "optimizer",
    "grad_clip",
    "loss",
    "budget",
    "dtype",
    "divergence",
    "target",
)
KEY_BUDGET_FIELDS = ("steps", "batch_size", "full_batch")
GLOROT_INITS = ("xavier_uniform", "xavier_normal")  # version 2 from 2026-12, with a `gain`
LEGACY_DIVERGENCE_FACTOR = 100.0  # PlateauThresholds.divergence_factor's default until 2026-12
NEW_DIVERGENCE = {"factor": 10.0, "patience": 20}  # Divergence()'s defaults


def config_hash(document: dict[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def in_new_format(config: dict[str, Any], *, trained: bool) -> dict[str, Any]:
    """A stored config with the fields the 2026-12 RunConfig adds filled in as the run trains.
    A config already in the new format comes back unchanged.

    - `loss`: the task's own (TASK_LOSS); a plugin task's stays null, as RunConfig leaves it.
    - `budget.full_batch`: false; digits' `task.n_train`: null (all of the split).
    - A run that trained under the old code (`trained`) keeps what it trained under: the
      divergence stop `plateau.divergence_factor` (100 unless set) with patience 1 (it
      stopped at the first step above it), and xavier_* without a gain (version 1).
    - A queued run will train under the new code, which reads its old config
      (RunConfig._resolve) as that factor with the default patience (20) and xavier_* with
      Glorot's gain 1 (version 2): its key says so.
    """
    doc = dict(config)
    # JSON as stored: `task` is a dict with a `name` whenever RunConfig wrote it.
    task: Any = doc.get("task")
    task_name: Any = task.get("name") if isinstance(task, dict) else ""
    if task_name == "digits" and "n_train" not in task:
        doc["task"] = {**task, "n_train": None}
    if doc.get("loss") is None:
        doc["loss"] = TASK_LOSS.get(task_name)
    doc["budget"] = {"full_batch": False, **(doc.get("budget") or {})}
    if "divergence" not in doc:
        plateau = doc.get("plateau") or {}
        if trained:
            factor = plateau.get("divergence_factor", LEGACY_DIVERGENCE_FACTOR)
            doc["divergence"] = {"factor": float(factor), "patience": 1}
        else:
            factor = plateau.get("divergence_factor", NEW_DIVERGENCE["factor"])
            doc["divergence"] = {**NEW_DIVERGENCE, "factor": float(factor)}
    init = doc.get("init")
    if not trained and isinstance(init, dict) and init.get("name") in GLOROT_INITS:
        doc["init"] = {"gain": 1.0, **init}
    return doc


def init_version(init: dict[str, Any]) -> int:
    """Version 1: every init before 2026-12 (xavier_* multiplied by the activation's gain).
    Version 2: xavier_* as Glorot & Bengio define it, which only configs read by the new
    code have; they, and only they, carry its `gain`."""
    return 2 if init.get("name") in GLOROT_INITS and "gain" in init else 1


def config_key_v2(config: dict[str, Any], status: str) -> str:
    """workers.config.config_key(key_document(...)) of 2026-12-01, on a stored config."""
    resolved = in_new_format(config, trained=status != "queued")
    doc = {k: resolved[k] for k in KEY_FIELDS if k in resolved}
    budget = {k: doc["budget"][k] for k in KEY_BUDGET_FIELDS if k in doc["budget"]}
    if budget.get("full_batch"):
        budget.pop("batch_size", None)
    doc["budget"] = budget
    init = dict(doc.get("init") or {"name": "default"})
    init["version"] = init_version(init)
    doc["init"] = init
    return config_hash(doc)


def config_key_v1(config: dict[str, Any], status: str) -> str:
    """workers.config.config_key until 2026-12: the whole resolved config without its seed."""
    return config_hash({k: v for k, v in config.items() if k != "seed"})


# --- the migration -----------------------------------------------------------------------

COUNTS = ("n_runs", "n_reached", "n_diverged", "steps_n", "final_loss_n")
SUMS = ("steps_sum", "steps_sumsq", "final_loss_sum", "final_loss_sumsq")
ADDED: tuple[str, ...] = (*COUNTS, *SUMS, "test_accuracy_n", "test_accuracy_sum")
ADDED += ("plateau_fraction_n", "plateau_fraction_sum")


def rekey(key_of: Callable[[dict[str, Any], str], str]) -> None:
    """Set every run's config_key to key_of(its config, its status), its result's to the
    same, and rebuild the leaderboard's sums from the results."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # Claims and completions wait until the new keys commit (readers go on): a result
        # recorded meanwhile would copy its run's old key and refresh an old bucket.
        op.execute("LOCK TABLE run, run_result, result_rollup, config_summary IN EXCLUSIVE MODE")
    run = sa.table(
        "run",
        sa.column("id", sa.Integer),
        sa.column("config", sa.JSON),
        sa.column("config_key", sa.String),
        sa.column("status", sa.String),
    )
    update = (
        run.update()
        .where(run.c.id == sa.bindparam("run_id"))
        .values(config_key=sa.bindparam("new_key"))
    )
    last = None
    while True:
        query = sa.select(run.c.id, run.c.config, run.c.config_key, run.c.status).order_by(run.c.id)
        if last is not None:
            query = query.where(run.c.id > last)
        rows = bind.execute(query.limit(BATCH)).all()
        if not rows:
            break
        last = rows[-1].id
        changed = [
            {"run_id": r.id, "new_key": key}
            for r in rows
            if (key := key_of(r.config, r.status)) != r.config_key
        ]
        if changed:
            bind.execute(update, changed)

    op.execute(
        "UPDATE run_result SET config_key = "
        "(SELECT run.config_key FROM run WHERE run.id = run_result.run_id)"
    )
    rebuild_sums()


def rebuild_sums() -> None:
    """db.leaderboard.rebuild_rollups as of 2026-12-01 (2026_11_28_result_rollup's backfill)."""
    if op.get_bind().dialect.name == "postgresql":
        day = "CAST(timezone('UTC', created_at) AS DATE)"
    else:  # SQLite keeps naive UTC text
        day = "date(created_at)"
    steps = "CAST(steps_to_target AS FLOAT)"
    op.execute("DELETE FROM config_summary")
    op.execute("DELETE FROM result_rollup")
    op.execute(
        f"""
        INSERT INTO result_rollup (config_key, sweep_id, device, torch_version, day, task,
            architecture, n_runs, n_reached, n_diverged, steps_n, steps_sum, steps_sumsq,
            final_loss_n, final_loss_sum, final_loss_sumsq, test_accuracy_n,
            test_accuracy_sum, plateau_fraction_n, plateau_fraction_sum, last_result_at,
            budget_steps)
        SELECT config_key, COALESCE(sweep_id, 0), COALESCE(device, ''),
               COALESCE(torch_version, ''), {day}, min(task), min(architecture), count(*),
               sum(CASE WHEN reached_target THEN 1 ELSE 0 END),
               sum(CASE WHEN outcome = 'diverged' THEN 1 ELSE 0 END),
               count({steps}), COALESCE(sum({steps}), 0.0),
               COALESCE(sum({steps} * {steps}), 0.0),
               count(final_loss), COALESCE(sum(final_loss), 0.0),
               COALESCE(sum(final_loss * final_loss), 0.0),
               count(test_accuracy), COALESCE(sum(test_accuracy), 0.0),
               count(plateau_fraction), COALESCE(sum(plateau_fraction), 0.0),
               max(created_at), max(budget_steps)
        FROM run_result
        WHERE outcome IN ('succeeded', 'diverged') AND pruned_step IS NULL
        GROUP BY config_key, COALESCE(sweep_id, 0), COALESCE(device, ''),
                 COALESCE(torch_version, ''), {day}
        """
    )
    op.execute(
        f"""
        INSERT INTO config_summary (config_key, task, architecture, {", ".join(ADDED)},
            last_result_at, budget_steps)
        SELECT config_key, min(task), min(architecture), {", ".join(f"sum({c})" for c in ADDED)},
               max(last_result_at), max(budget_steps)
        FROM result_rollup
        GROUP BY config_key
        """
    )


def upgrade() -> None:
    rekey(config_key_v2)


def downgrade() -> None:
    # The old rule is a function of the stored config alone, so the old keys come back
    # exactly (a run enqueued after the upgrade gets the old rule's hash of its new config).
    rekey(config_key_v1)
