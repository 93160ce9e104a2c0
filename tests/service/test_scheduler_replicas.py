"""Three scheduler replicas race on Postgres under one injected clock: every slot makes one
sweep however they race, a replica killed mid-way changes nothing, and after downtime the
missed slots fire once, late (issue 14)."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import signal
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from db.models import ScheduleFiring, Sweep
from db.session import session_scope
from tests.service.test_schedules import T0, firings, schedule_at

pytestmark = pytest.mark.postgres
GRACE = 300.0


def replica(url: str, name: str, clock: Any) -> None:
    """A scheduler process whose clock is the test's (seconds since the epoch, shared)."""
    from service.scheduler import Scheduler
    from service.settings import Settings

    settings = Settings(database_url=url, schedule_grace_seconds=GRACE)
    scheduler = Scheduler(
        settings, clock=lambda: dt.datetime.fromtimestamp(clock.value, dt.UTC), name=name
    )
    while True:
        scheduler.tick()
        time.sleep(0.02)


def wait_for(url: str, schedule_id: int, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(url) as s:
            n = s.scalar(select(func.count()).where(ScheduleFiring.schedule_id == schedule_id))
        if n >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{n} firings after {timeout} s, expected {count}")


@pytest.mark.slow
def test_three_replicas_fire_ten_slots_once_each_and_downtime_fires_once_late(pg_migrated_url):
    url = pg_migrated_url
    sid = schedule_at(url, T0)  # hourly, created 09:30
    ctx = multiprocessing.get_context("spawn")
    clock = ctx.Value("d", T0.timestamp())
    replicas = [ctx.Process(target=replica, args=(url, f"r{i}", clock)) for i in range(3)]
    for p in replicas:
        p.start()
    try:
        for k in range(1, 11):
            clock.value = (T0 + dt.timedelta(minutes=30 + 60 * (k - 1), seconds=7)).timestamp()
            if k == 6:  # mid-way, one replica dies without warning
                os.kill(replicas[0].pid, signal.SIGKILL)
            wait_for(url, sid, k)
        time.sleep(0.5)  # the survivors tick again at 19:00:07: nothing more
        rows = firings(url, sid)
        assert len(rows) == 10
        assert [r.slot for r in rows] == [T0 + dt.timedelta(minutes=30 + 60 * k) for k in range(10)]
        assert [r.night for r in rows] == list(range(10))
        assert all(r.missed == 0 and r.late_seconds == 7 for r in rows)
        with session_scope(url) as s:
            sweeps = s.scalars(select(Sweep.id).where(Sweep.source == "schedule")).all()
        assert sorted(sweeps) == sorted(r.sweep_id for r in rows)  # one sweep per slot
        # Downtime: every replica stops; three slots (20, 21, 22 o'clock) pass.
        for p in replicas[1:]:
            os.kill(p.pid, signal.SIGKILL)
        clock.value = (T0 + dt.timedelta(hours=13, minutes=10)).timestamp()  # 22:40
        back = ctx.Process(target=replica, args=(url, "r-back", clock))
        replicas.append(back)
        back.start()
        wait_for(url, sid, 11)
        time.sleep(0.5)
        rows = firings(url, sid)
        assert len(rows) == 11  # the three missed slots fire once in all
        late = rows[-1]
        assert late.slot == T0 + dt.timedelta(hours=12, minutes=30)  # the latest: 22:00
        assert late.missed == 2 and late.late_seconds == 40 * 60 > GRACE
        assert late.fired_by == "r-back"
    finally:
        for p in replicas:
            if p.is_alive():
                p.kill()
            p.join(timeout=10)
