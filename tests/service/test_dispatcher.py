"""The dispatcher's rules without a cluster: how much it hands Ray, what its task arguments
carry, and how it waits out outages (backoff, one log line per try); and, on the session's
local Ray, that a run ending wakes it."""

from __future__ import annotations

import logging
import time

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from db import queue
from db.models import Run
from db.session import session_scope
from service import dispatcher as dispatcher_module
from service.dispatcher import Dispatcher, RayUnavailable, backoff_seconds
from service.raycluster import ClusterState
from service.settings import Settings


class Waits:
    """A stop event whose waits are recorded instead of slept; stops after `ticks` waits."""

    def __init__(self, ticks: int) -> None:
        self.waits: list[float] = []
        self.ticks = ticks

    def is_set(self) -> bool:
        return len(self.waits) >= self.ticks

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return self.is_set()


def ticking(outcomes):
    """A tick that raises or returns the given outcomes in turn."""
    outcomes = list(outcomes)

    def tick() -> int:
        outcome = outcomes.pop(0) if outcomes else 0
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return tick


def unreachable() -> OperationalError:
    return OperationalError("SELECT 1", {}, psycopg.OperationalError("connection refused"))


def test_backoff_is_capped_exponential_with_jitter():
    for n in range(1, 12):
        ceiling = min(30.0, 0.5 * 2 ** (n - 1))
        waits = [backoff_seconds(n, base=0.5, cap=30.0) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1  # jittered


def test_a_database_outage_is_one_line_per_try_and_the_waits_back_off(caplog):
    settings = Settings(database_url="sqlite://", poll_seconds=0.5, backoff_max_seconds=4)
    d = Dispatcher(settings)
    d.tick = ticking([unreachable()] * 6 + [0])
    stop = Waits(ticks=8)
    caplog.set_level(logging.INFO, logger="service.dispatcher")
    d.run(stop=stop)
    outage = [r for r in caplog.records if "database unavailable" in r.getMessage()]
    assert len(outage) == 6 and all(r.exc_info is None for r in outage)
    assert "Traceback" not in caplog.text
    ceilings = [0.5, 1, 2, 4, 4, 4]
    assert all(c / 2 <= w <= c for w, c in zip(stop.waits[:6], ceilings, strict=True))
    assert stop.waits[6:] == [0.5, 0.5]  # back to the poll period once it recovered
    assert "dispatcher recovered after 6 failed tries" in caplog.text


def test_an_unexpected_error_logs_its_traceback_once_per_streak(caplog):
    d = Dispatcher(Settings(database_url="sqlite://", poll_seconds=0.1))
    d.tick = ticking([ValueError("bug")] * 3)
    d.run(stop=Waits(ticks=3))
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1 and "failed again (ValueError: bug)" in caplog.text


def test_a_lost_ray_cluster_calls_on_ray_lost_and_a_busy_one_does_not(caplog):
    lost: list[RayUnavailable] = []
    d = Dispatcher(Settings(database_url="sqlite://", poll_seconds=0.1), on_ray_lost=lost.append)
    d.tick = ticking(
        [RayUnavailable("no CPUs in the cluster", lost=False), RayUnavailable("no answer")]
    )
    d.run(stop=Waits(ticks=2))
    assert [str(e) for e in lost] == ["no answer"]
    assert caplog.text.count("Ray unavailable") == 2


def test_until_and_on_tick_failing_in_an_outage_are_retried_too():
    d = Dispatcher(Settings(database_url="sqlite://", poll_seconds=0.1))
    d.tick = ticking([0, 0])
    answers = [unreachable(), True]

    def until() -> bool:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    stop = Waits(ticks=5)
    d.run(stop=stop, until=until)
    assert len(stop.waits) == 1  # one failed try, then until() said done


def test_a_failed_wait_on_the_tasks_sleeps_the_rest_of_the_poll(monkeypatch):
    import ray

    def refused(*args, **kwargs):
        raise ConnectionError("the raylet is gone")

    monkeypatch.setattr(ray, "wait", refused)
    d = Dispatcher(Settings(database_url="sqlite://", poll_seconds=0.5))
    d.inflight = {object(): [1]}
    stop = Waits(ticks=5)
    d.wait_for_room(stop, 0.5)
    assert len(stop.waits) == 1 and 0 < stop.waits[0] <= 0.5
    stop = Waits(ticks=0)  # already stopped: no wait at all
    d.wait_for_room(stop, 0.5)
    assert stop.waits == []


@pytest.fixture
def queued(migrated_url: str) -> str:
    with session_scope(migrated_url) as s:
        queue.enqueue_sweep(
            session=s,
            name="t",
            owner="me",
            spec={},
            runs=[
                ({"i": i, "task": {"name": "t"}, "architecture": {"name": "a"}}, f"h{i}", f"k{i}")
                for i in range(6)
            ],
        )
    return migrated_url


def cluster(monkeypatch, **state) -> None:
    monkeypatch.setattr(
        dispatcher_module, "cluster_state", lambda timeout: ClusterState(**({"ok": True} | state))
    )


def offline_dispatcher(url: str, **kw) -> tuple[Dispatcher, list]:
    """A dispatcher whose Ray tasks are recorded, not run."""
    handed: list = []
    d = Dispatcher(Settings(database_url=url, lease_seconds=30), worker_id="d1", **kw)
    d._collect = lambda: 0
    d._submit = lambda reservation, gpus: handed.append(reservation) or object()
    return d, handed


def started(url: str, run_ids) -> None:
    for run_id in run_ids:
        with session_scope(url) as s:
            assert queue.start_run(session=s, run_id=run_id, dispatcher_id="d1", lease_seconds=30)


def test_the_dispatcher_hands_ray_only_what_it_can_start_now(queued, monkeypatch):
    d, handed = offline_dispatcher(queued)
    cluster(monkeypatch, nodes=1, cpus=4, free_cpus=2)
    assert d.tick() == 2  # the free CPUs, not the cluster's 4
    assert d.tick() == 0  # neither has started yet: the cluster cannot start more now
    with session_scope(queued) as s:
        runs = s.scalars(select(Run).order_by(Run.id)).all()
        assert [r.attempts for r in runs] == [0] * 6  # waiting in Ray's queue costs nothing
        assert {r.lease_owner for r in runs[:2]} == {"d1"}
    started(queued, [r.run_id for r in handed])
    cluster(monkeypatch, nodes=1, cpus=4, free_cpus=3)
    assert d.tick() == 2  # 4 CPUs, 2 in flight: capacity, not the 3 free, bounds it
    cluster(monkeypatch, nodes=1, cpus=4, free_cpus=0.5)
    d.inflight.clear()
    assert d.tick() == 0  # half a CPU starts nothing


def test_capacity_caps_the_runs_in_flight(queued, monkeypatch):
    d, handed = offline_dispatcher(queued, capacity=1)
    cluster(monkeypatch, nodes=1, cpus=8, free_cpus=8)
    assert d.tick() == 1
    started(queued, [handed[0].run_id])
    assert d.tick() == 0


def test_nothing_is_reserved_while_ray_is_unavailable(queued, monkeypatch):
    d, handed = offline_dispatcher(queued)
    cluster(monkeypatch, ok=False, lost=True, error="Ray did not answer within 5 s")
    with pytest.raises(RayUnavailable, match="did not answer") as info:
        d.tick()
    assert info.value.lost and handed == []
    cluster(monkeypatch, ok=False, error="no CPUs in the cluster")
    with pytest.raises(RayUnavailable) as info:
        d.tick()
    assert not info.value.lost
    with session_scope(queued) as s:
        assert s.scalars(select(Run.lease_owner)).all() == [None] * 6


def test_task_arguments_name_the_database_without_its_password(sqlite_url):
    """What Ray records of a task: run id, dispatcher id, lease, the masked database URL."""
    recorded: list[tuple] = []

    class Remote:
        def options(self, **_):
            return self

        def remote(self, *args):
            recorded.append(args)

    url = "postgresql+psycopg://plateau:distinctive-pw@db:5432/plateau"
    d = Dispatcher(Settings(database_url=url), worker_id="d1")
    d._remote = Remote()
    d._submit(queue.Reservation(run_id=7, config={"device": "cpu"}), gpus=0)
    assert recorded == [(7, "d1", 60.0, "postgresql+psycopg://plateau:***@db:5432/plateau", None)]
    assert "distinctive-pw" not in repr(recorded) and "distinctive-pw" not in repr(d.settings)


def test_a_question_to_ray_is_answered_within_its_timeout_and_shared(monkeypatch):
    """A hanging GCS call answers "unavailable" at the timeout; callers meanwhile wait on the
    same question instead of piling up threads; a failing call says why."""
    import threading
    import time

    from service import raycluster

    asked: list[float] = []
    release = threading.Event()

    def slow() -> ClusterState:
        asked.append(time.monotonic())
        release.wait(5)
        return ClusterState(ok=True, nodes=1, cpus=2, free_cpus=2)

    monkeypatch.setattr(raycluster, "_ask", slow)
    monkeypatch.setattr(raycluster, "_pending", None)
    hung = raycluster.cluster_state(0.1)
    assert (hung.ok, hung.lost, hung.error) == (False, True, "Ray did not answer within 0.1 s")
    assert raycluster.cluster_state(0.1).ok is False and len(asked) == 1  # shared, not re-asked
    release.set()
    raycluster._pending.result(timeout=5)  # the hanging question got its answer at last
    assert raycluster.cluster_state(2).ok is True and len(asked) == 2  # a fresh question

    def refused() -> ClusterState:
        raise ConnectionError("GCS refused")

    monkeypatch.setattr(raycluster, "_ask", refused)
    state = raycluster.cluster_state(1)
    assert not state.ok and state.lost and state.error == "ConnectionError: GCS refused"
    assert state.as_dict() == {
        "ok": False,
        "nodes": 0,
        "cpus": 0.0,
        "free_cpus": 0.0,
        "gpus": 0.0,
        "free_gpus": 0.0,
        "error": "ConnectionError: GCS refused",
        "lost": True,
    }
    assert "lost" not in ClusterState(ok=True).as_dict()


@pytest.mark.ray
@pytest.mark.slow
def test_a_run_that_ends_wakes_the_dispatcher_instead_of_the_poll(sqlite_url, local_ray):
    """Three quick runs one at a time, with a poll far longer than a run: polling alone would
    take at least 3 polls (one tick to hand each run over after the last one ended)."""
    from db.migrate import upgrade
    from service.spec import SweepSpec
    from service.sweeps import submit_sweep

    upgrade(sqlite_url)
    spec = SweepSpec.model_validate(
        {
            "name": "wake",
            "task": "digits",
            "architectures": [{"name": "mlp", "depth": 1, "width": 16}],
            "optimizers": [{"name": "sgd", "lr": 0.1}],
            "seeds": [0, 1, 2],
            "budget": {"steps": 10, "batch_size": 32, "log_every": 5, "eval_every": 10},
        }
    )
    with session_scope(sqlite_url) as s:
        sweep_id = submit_sweep(session=s, spec=spec, source="api", max_attempts=1).id
    poll = 10.0
    # A task per run (packed, the three would be one task and one wake-up).
    d = Dispatcher(Settings(database_url=sqlite_url, poll_seconds=poll, pack_size=1), capacity=1)

    def statuses() -> list[str]:
        with session_scope(sqlite_url) as s:
            return list(s.scalars(select(Run.status).where(Run.sweep_id == sweep_id)))

    start = time.monotonic()
    d.run(until=lambda: not {"queued", "running"} & set(statuses()), timeout=6 * poll)
    took = time.monotonic() - start
    assert statuses() == ["succeeded"] * 3
    assert took < 2 * poll, f"3 runs took {took:.1f} s with a poll of {poll:g} s"
