"""The queue's contract on both backends: claims, leases, fencing, reaping, cancelling."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select, update

from db import queue
from db.errors import LeaseLost
from db.models import ConfigSummary, ResultRollup, Run, RunMetric, RunResult
from db.session import session_scope


def enqueue(url: str, n: int, max_attempts: int = 3) -> int:
    with session_scope(url) as s:
        sweep = queue.enqueue_sweep(
            session=s,
            name="t",
            owner="me",
            spec={},
            runs=[
                ({"i": i, "task": {"name": "t"}, "architecture": {"name": "a"}}, f"h{i}", f"k{i}")
                for i in range(n)
            ],
            max_attempts=max_attempts,
        )
        return sweep.id


def claim(url: str, limit: int, worker: str = "w", lease: float = 60) -> list[queue.Claim]:
    with session_scope(url) as s:
        return queue.claim_runs(session=s, worker_id=worker, limit=limit, lease_seconds=lease)


def expire_leases(url: str) -> None:
    with session_scope(url) as s:
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        s.execute(update(Run).where(Run.status == "running").values(lease_expires_at=past))


def complete(url: str, c: queue.Claim, outcome: str = "succeeded") -> None:
    with session_scope(url) as s:
        queue.complete_run(
            session=s,
            run_id=c.run_id,
            attempt=c.attempt,
            outcome=outcome,
            result={"steps_done": 1, "final_loss": 0.5},
        )


def test_claims_take_the_oldest_runs_once(migrated_url):
    enqueue(migrated_url, 5)
    first, second = claim(migrated_url, 3), claim(migrated_url, 3)
    assert [c.config["i"] for c in first] == [0, 1, 2]
    assert [c.config["i"] for c in second] == [3, 4]
    assert all(c.attempt == 1 for c in first + second)
    assert claim(migrated_url, 3) == []


def test_completion_is_recorded_once_and_fenced(migrated_url):
    enqueue(migrated_url, 1)
    (c,) = claim(migrated_url, 1)
    with session_scope(migrated_url) as s:
        queue.write_metrics(
            session=s,
            run_id=c.run_id,
            attempt=c.attempt,
            rows=[{"step": 0, "loss": 1.0}, {"step": 1, "loss": 0.9}],
        )
    complete(migrated_url, c)
    with pytest.raises(LeaseLost):
        complete(migrated_url, c)
    with pytest.raises(LeaseLost), session_scope(migrated_url) as s:
        queue.write_metrics(
            session=s, run_id=c.run_id, attempt=c.attempt, rows=[{"step": 2, "loss": 0.8}]
        )
    with session_scope(migrated_url) as s:
        assert s.scalar(select(func.count()).select_from(RunResult)) == 1
        assert s.scalar(select(func.count()).select_from(RunMetric)) == 2
        assert s.get(Run, c.run_id).status == "succeeded"


def test_an_expired_lease_is_requeued_and_the_old_attempt_is_fenced(migrated_url):
    enqueue(migrated_url, 1)
    (old,) = claim(migrated_url, 1)
    with session_scope(migrated_url) as s:
        queue.write_metrics(
            session=s, run_id=old.run_id, attempt=old.attempt, rows=[{"step": 0, "loss": 9.0}]
        )
    expire_leases(migrated_url)
    with session_scope(migrated_url) as s:
        assert queue.reap_expired(session=s) == (1, 0)
    (new,) = claim(migrated_url, 1)
    assert (new.run_id, new.attempt) == (old.run_id, 2)
    with session_scope(migrated_url) as s:
        assert not queue.renew_lease(
            session=s, run_id=old.run_id, attempt=old.attempt, lease_seconds=60
        )
        assert queue.renew_lease(
            session=s, run_id=new.run_id, attempt=new.attempt, lease_seconds=60
        )
    with pytest.raises(LeaseLost):
        complete(migrated_url, old)
    with session_scope(migrated_url) as s:
        queue.write_metrics(
            session=s, run_id=new.run_id, attempt=new.attempt, rows=[{"step": 0, "loss": 1.0}]
        )
    complete(migrated_url, new)
    with session_scope(migrated_url) as s:
        result = s.get(RunResult, new.run_id)
        assert result.attempt == 2
        # the lost attempt's curve is gone: the evidence belongs to the recorded result
        assert s.scalars(select(RunMetric.attempt)).all() == [2]


def test_a_run_out_of_attempts_fails_instead_of_requeueing(migrated_url):
    enqueue(migrated_url, 1, max_attempts=2)
    for attempt in (1, 2):
        (c,) = claim(migrated_url, 1)
        assert c.attempt == attempt
        expire_leases(migrated_url)
        with session_scope(migrated_url) as s:
            reaped = queue.reap_expired(session=s)
        assert reaped == ((1, 0) if attempt == 1 else (0, 1))
    with session_scope(migrated_url) as s:
        run = s.scalars(select(Run)).one()
        assert run.status == "failed" and "lease expired" in run.error
    assert claim(migrated_url, 1) == []


def test_cancel_stops_queued_and_running_runs(migrated_url):
    sweep_id = enqueue(migrated_url, 3)
    (running,) = claim(migrated_url, 1)
    with session_scope(migrated_url) as s:
        assert queue.cancel_sweep(session=s, sweep_id=sweep_id) == 3
    assert claim(migrated_url, 5) == []
    with session_scope(migrated_url) as s:
        assert not queue.renew_lease(
            session=s, run_id=running.run_id, attempt=running.attempt, lease_seconds=60
        )
    with pytest.raises(LeaseLost):
        complete(migrated_url, running)


@pytest.mark.postgres
def test_concurrent_claimers_never_share_a_run(pg_migrated_url):
    """Eight threads claim from one Postgres at once (SKIP LOCKED): every run exactly once."""
    enqueue(pg_migrated_url, 200)
    claimed: list[list[int]] = [[] for _ in range(8)]
    barrier = threading.Barrier(8)

    def worker(k: int) -> None:
        barrier.wait()
        while batch := claim(pg_migrated_url, 3, worker=f"w{k}"):
            claimed[k].extend(c.run_id for c in batch)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [r for ids in claimed for r in ids]
    assert len(everything) == 200 and len(set(everything)) == 200
    assert sum(1 for ids in claimed if ids) > 1  # the work really was shared


@pytest.mark.postgres
def test_concurrent_results_of_one_configuration_all_reach_its_rollup(pg_migrated_url):
    """Eight threads record results of one configuration at once: its result_rollup row and
    config_summary row, recomputed in each result's transaction, count every one of them."""
    url = pg_migrated_url
    config = {"task": {"name": "t"}, "architecture": {"name": "a"}}
    with session_scope(url) as s:
        queue.enqueue_sweep(
            session=s,
            name="t",
            owner="me",
            spec={},
            runs=[(config, f"h{i}", "k") for i in range(64)],
        )
    claims = claim(url, 64)
    barrier = threading.Barrier(8)

    def worker(k: int) -> None:
        barrier.wait()
        for c in claims[k::8]:
            with session_scope(url) as s:
                queue.complete_run(
                    session=s,
                    run_id=c.run_id,
                    attempt=c.attempt,
                    outcome="succeeded",
                    result={"reached_target": True, "steps_to_target": c.run_id},
                )

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with session_scope(url) as s:
        rows = s.scalars(select(ResultRollup).where(ResultRollup.config_key == "k")).all()
        assert sum(row.n_runs for row in rows) == sum(row.n_reached for row in rows) == 64
        assert sum(row.steps_sum for row in rows) == sum(c.run_id for c in claims)
        assert sum(row.steps_sumsq for row in rows) == sum(c.run_id**2 for c in claims)
        summary = s.get(ConfigSummary, "k")
        assert summary is not None
        assert (summary.n_runs, summary.steps_sum) == (64, sum(row.steps_sum for row in rows))


def reserve(url: str, limit: int, dispatcher: str = "d1", seconds: float = 60):
    with session_scope(url) as s:
        return queue.reserve_runs(session=s, dispatcher_id=dispatcher, limit=limit, seconds=seconds)


def start(url: str, run_id: int, dispatcher: str = "d1") -> queue.Claim | None:
    with session_scope(url) as s:
        return queue.start_run(session=s, run_id=run_id, dispatcher_id=dispatcher, lease_seconds=60)


def expire_reservations(url: str) -> None:
    with session_scope(url) as s:
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        s.execute(update(Run).where(Run.status == "queued").values(lease_expires_at=past))


def test_a_reservation_costs_no_attempt_and_only_its_worker_start_does(migrated_url):
    enqueue(migrated_url, 3)
    reserved = reserve(migrated_url, 2)
    assert [r.config["i"] for r in reserved] == [0, 1]
    with session_scope(migrated_url) as s:
        runs = {r.id: r for r in s.scalars(select(Run)).all()}
        assert all(r.status == "queued" and r.attempts == 0 for r in runs.values())
    # reserved runs are not reserved or claimed by anyone else
    assert [r.config["i"] for r in reserve(migrated_url, 5, dispatcher="d2")] == [2]
    assert claim(migrated_url, 5) == []
    # another dispatcher's task cannot start a run it did not reserve
    assert start(migrated_url, reserved[0].run_id, dispatcher="d2") is None
    started = start(migrated_url, reserved[0].run_id)
    assert started is not None and started.attempt == 1 and started.config["i"] == 0
    assert start(migrated_url, reserved[0].run_id) is None  # a second task of the same run
    with session_scope(migrated_url) as s:
        run = s.get(Run, reserved[0].run_id)
        assert (run.status, run.attempts, run.lease_owner) == ("running", 1, "d1")
    complete(migrated_url, started)  # fenced by (run_id, attempt) as a claim is


def test_renewing_reservations_tells_which_runs_have_not_started(migrated_url):
    enqueue(migrated_url, 3)
    ids = [r.run_id for r in reserve(migrated_url, 3)]
    start(migrated_url, ids[0])
    with session_scope(migrated_url) as s:
        waiting = queue.renew_reservations(session=s, dispatcher_id="d1", run_ids=ids, seconds=60)
        assert (
            queue.renew_reservations(session=s, dispatcher_id="d1", run_ids=[], seconds=1) == set()
        )
    assert waiting == {ids[1], ids[2]}


def test_an_expired_reservation_is_free_again_and_its_old_task_cannot_start_it(migrated_url):
    enqueue(migrated_url, 1)
    (old,) = reserve(migrated_url, 1, dispatcher="dead")
    assert reserve(migrated_url, 1, dispatcher="d2") == []
    expire_reservations(migrated_url)  # the dispatcher died and stopped renewing
    (new,) = reserve(migrated_url, 1, dispatcher="d2")
    assert new.run_id == old.run_id
    assert start(migrated_url, old.run_id, dispatcher="dead") is None
    assert start(migrated_url, new.run_id, dispatcher="d2").attempt == 1


def test_released_and_cancelled_reservations(migrated_url):
    sweep_id = enqueue(migrated_url, 3)
    ids = [r.run_id for r in reserve(migrated_url, 3)]
    start(migrated_url, ids[0])
    with session_scope(migrated_url) as s:
        # a started run keeps its lease; only the queued ones are given back
        assert queue.release_reservations(session=s, dispatcher_id="d1", run_ids=[ids[1]]) == 1
        assert queue.release_reservations(session=s, dispatcher_id="d1", run_ids=[]) == 0
    assert [r.run_id for r in reserve(migrated_url, 5, dispatcher="d2")] == [ids[1]]
    with session_scope(migrated_url) as s:
        assert queue.release_reservations(session=s, dispatcher_id="d2") == 1
        queue.cancel_sweep(session=s, sweep_id=sweep_id)
    assert start(migrated_url, ids[2]) is None  # cancelled while waiting in Ray's queue
    with session_scope(migrated_url) as s:
        assert s.scalars(select(Run.attempts).order_by(Run.id)).all() == [1, 0, 0]


def test_metric_rows_read_back_as_written_on_both_databases(migrated_url):
    """What a worker writes (Postgres: by COPY): JSON fields, a non-finite loss, flags and
    missing fields as NULL; a row with a field the table lacks is refused, nothing written."""
    import math

    enqueue(migrated_url, 1)
    (c,) = claim(migrated_url, 1)
    rows = [
        {
            "step": 0, "loss": 2.5, "lr": 0.1, "grad_norm": 1.5, "clipped": True,
            "layer_grad_norms": {"fc1": 0.5, "fc2": 1.25},
            "activation_stats": {"fc1": {"mean": 0.1, "dead_fraction": 0.0}},
        },
        {"step": 1, "loss": math.inf, "clipped": False, "eval_loss": 2.0, "eval_accuracy": 0.5},
    ]  # fmt: skip
    with session_scope(migrated_url) as s:
        assert queue.write_metrics(session=s, run_id=c.run_id, attempt=c.attempt, rows=rows) == 2
    bad = [{"step": 2, "losss": 1.0}]
    with pytest.raises(ValueError, match="unknown fields"), session_scope(migrated_url) as s:
        queue.write_metrics(session=s, run_id=c.run_id, attempt=c.attempt, rows=bad)
    with session_scope(migrated_url) as s:
        stored = s.scalars(select(RunMetric).order_by(RunMetric.step)).all()
        got = [
            {k: getattr(m, k) for k in {*row} | {"update_norm"}}
            for m, row in zip(stored, rows, strict=True)
        ]
    assert got == [{**row, "update_norm": None} for row in rows]
