"""58aef8e72bb5 (2026-12-02, users and API keys) on a database built at the revision before
it, on SQLite and Postgres: free-text owners become legacy users, nothing becomes ownerless,
no run, curve, result or probe is lost (SQLite rebuilds `sweep`, which runs reference
ON DELETE CASCADE), and the downgrade gives the names back."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from db.leaderboard import Filters, leaderboard, rebuild_rollups
from db.migrate import downgrade, upgrade
from db.models import Probe, Run, RunMetric, RunResult, UTCDateTime
from db.session import get_engine, session_scope

BEFORE = "3b8d5c2a61f0"
THIS = "58aef8e72bb5"
DAY = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
CONFIG = {"task": {"name": "digits"}, "architecture": {"name": "mlp"}, "seed": 0}
# sweep id -> its free-text owner; study sweeps 4 and 5 (cora owns only a study)
OWNERS = {1: "ana", 2: "ben", 3: "ana", 4: "cora", 5: "ben"}
STUDIES = {1: (4, "cora"), 2: (5, "ben")}
CHILDREN = ("run", "run_metric", "run_result", "probe", "study")


def old_tables() -> tuple[sa.TableClause, sa.TableClause]:
    sweep = sa.table(
        "sweep",
        *(sa.column(c) for c in ("id", "name", "owner", "source", "n_runs")),
        sa.column("spec", sa.JSON),
        sa.column("software", sa.JSON),
        sa.column("created_at", UTCDateTime),
    )
    study = sa.table(
        "study",
        *(sa.column(c) for c in ("id", "name", "owner", "optuna_study_name", "sweep_id")),
        sa.column("state"),
        sa.column("spec", sa.JSON),
        sa.column("created_at", UTCDateTime),
    )
    return sweep, study


@pytest.fixture
def old_db(db_url: str) -> str:
    """Sweeps and studies of three owners, each sweep with two finished runs that have
    curves, results and a probe, at the revision before identities."""
    upgrade(db_url, BEFORE)
    sweep, study = old_tables()
    with get_engine(db_url).begin() as conn:
        conn.execute(
            sweep.insert(),
            [
                {"id": i, "name": f"s{i}", "owner": o, "source": "api", "n_runs": 2,
                 "spec": {}, "software": {}, "created_at": DAY}
                for i, o in OWNERS.items()
            ],
        )  # fmt: skip
        conn.execute(
            study.insert(),
            [
                {"id": i, "name": f"t{i}", "owner": o, "optuna_study_name": f"o{i}",
                 "sweep_id": sid, "state": "finished", "spec": {}, "created_at": DAY}
                for i, (sid, o) in STUDIES.items()
            ],
        )  # fmt: skip
        runs = [(10 * sid + k, sid) for sid in OWNERS for k in range(2)]
        conn.execute(
            Run.__table__.insert(),
            [
                {"id": rid, "sweep_id": sid, "grid_index": rid, "config": CONFIG,
                 "config_hash": f"h{rid}", "config_key": "key", "task": "digits",
                 "architecture": "mlp", "status": "succeeded", "attempts": 1,
                 "max_attempts": 3, "queued_at": DAY}
                for rid, sid in runs
            ],
        )  # fmt: skip
        conn.execute(
            RunMetric.__table__.insert(),
            [{"run_id": rid, "attempt": 1, "step": step, "loss": 1.0 / (step + 1)}
             for rid, _ in runs for step in range(3)],
        )  # fmt: skip
        conn.execute(
            RunResult.__table__.insert(),
            [
                {"run_id": rid, "attempt": 1, "outcome": "succeeded", "steps_done": 3,
                 "final_loss": 0.1 * sid, "reached_target": True, "steps_to_target": 2,
                 "config_key": "key", "task": "digits", "architecture": "mlp",
                 "sweep_id": sid, "budget_steps": 3, "device": "cpu",
                 "torch_version": "2.13.0", "created_at": DAY}
                for rid, sid in runs
            ],
        )  # fmt: skip
        conn.execute(
            Probe.__table__.insert(),
            [{"run_id": rid, "attempt": 1, "step": 3, "trigger": "end", "data": {},
              "created_at": DAY} for rid, _ in runs],
        )  # fmt: skip
    return db_url


def counts(url: str) -> dict[str, int]:
    with get_engine(url).connect() as conn:
        return {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in CHILDREN
        }


def test_owners_become_legacy_viewers_and_nothing_is_lost(old_db):
    before = counts(old_db)
    assert before == {"run": 10, "run_metric": 30, "run_result": 10, "probe": 10, "study": 2}
    upgrade(old_db)
    assert counts(old_db) == before
    with get_engine(old_db).connect() as conn:
        users = {
            name: (uid, role, origin)
            for uid, name, role, origin in conn.execute(
                sa.text("SELECT id, name, role, origin FROM app_user")
            )
        }
        assert {n: u[1:] for n, u in users.items()} == {
            n: ("viewer", "legacy") for n in ("ana", "ben", "cora")
        }
        sweeps = dict(conn.execute(sa.text("SELECT id, owner_id FROM sweep")).all())
        assert sweeps == {sid: users[o][0] for sid, o in OWNERS.items()}
        studies = dict(conn.execute(sa.text("SELECT id, owner_id FROM study")).all())
        assert studies == {i: users[o][0] for i, (_, o) in STUDIES.items()}
        events = conn.execute(
            sa.text("SELECT actor, action, target FROM audit_event ORDER BY target")
        ).all()
        assert events == [("migration", "user.create", f"user:{n}") for n in ("ana", "ben", "cora")]
        assert "owner" not in {c["name"] for c in sa.inspect(conn).get_columns("sweep")}

    # owners are users now: the leaderboard's owner filter goes through them
    with session_scope(old_db) as s:
        rebuild_rollups(session=s)
        rows, count = leaderboard(session=s, filters=Filters(owner="ana"), limit=10)
        assert count == 1 and rows[0]["n_runs"] == 4  # sweeps 1 and 3

    # and nothing can become ownerless
    sweep = sa.table("sweep", *(sa.column(c) for c in ("name", "source", "n_runs", "owner_id")),
                     sa.column("spec", sa.JSON), sa.column("software", sa.JSON),
                     sa.column("created_at", UTCDateTime))  # fmt: skip
    row = {"name": "x", "source": "api", "n_runs": 0, "spec": {}, "software": {},
           "created_at": DAY}  # fmt: skip
    for owner_id in (None, 999):
        with pytest.raises(IntegrityError), get_engine(old_db).begin() as conn:
            conn.execute(sweep.insert(), [row | {"owner_id": owner_id}])


def test_the_downgrade_gives_the_names_back(old_db):
    before = counts(old_db)
    upgrade(old_db, THIS)
    downgrade(old_db, BEFORE)
    assert counts(old_db) == before
    with get_engine(old_db).connect() as conn:
        assert dict(conn.execute(sa.text("SELECT id, owner FROM sweep")).all()) == OWNERS
        studies = dict(conn.execute(sa.text("SELECT id, owner FROM study")).all())
        assert studies == {i: o for i, (_, o) in STUDIES.items()}
        tables = set(sa.inspect(conn).get_table_names())
    assert not tables & {"app_user", "api_key", "web_session", "audit_event"}
    upgrade(old_db)  # and up again
    assert counts(old_db) == before


def test_an_empty_database_migrates_without_users(db_url):
    upgrade(db_url)
    with get_engine(db_url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM app_user")).scalar_one() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM audit_event")).scalar_one() == 0
