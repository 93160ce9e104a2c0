"""The scheduler: fires each due slot of every enabled schedule, once.

It runs as a thread inside `plateau serve` (the embedded default: PLATEAU_SCHEDULE, on by
default) and as its own process (`plateau scheduler`) in deployments, where several
replicas may run at once: the database decides which replica fires a slot
(service.schedules.fire), so replicas need no coordination and any of them may die at any
moment. A replica that loses a race logs it and moves on.

Every `schedule_poll_seconds` a tick reads the enabled schedules and, for each, the slot
due now (service.schedules.due_slots: the latest one after downtime with `catch_up:
latest`, none with `catch_up: none`). The clock is a parameter, so tests move time.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from collections.abc import Callable

from sqlalchemy import select, update

from db.errors import database_unavailable
from db.models import Schedule, ScheduleFiring, utcnow
from db.session import session_scope
from service.schedules import SlotTaken, due_slots, fire
from service.settings import Settings
from service.webhooks import deliver_due

log = logging.getLogger(__name__)
Clock = Callable[[], dt.datetime]
# A study night's confirmation claimed this long ago and still not queued is taken again.
CONFIRM_CLAIM_SECONDS = 600.0


def replica_id() -> str:
    return f"scheduler@{socket.gethostname()}:{os.getpid()}"


class Scheduler:
    """Fire due slots, one `tick` at a time."""

    def __init__(
        self, settings: Settings, *, clock: Clock = utcnow, name: str | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.name = name or replica_id()

    def tick(self) -> list[int]:
        """Fire what is due now; returns the ids of the firings this replica made."""
        now = self.clock()
        with session_scope(self.settings.database_url) as session:
            ids = session.scalars(
                select(Schedule.id).where(Schedule.enabled.is_(True)).order_by(Schedule.id)
            ).all()
        fired: list[int] = []
        for schedule_id in ids:
            with session_scope(self.settings.database_url) as session:
                schedule = session.get(Schedule, schedule_id)
                if schedule is None or not schedule.enabled:  # deleted or paused meanwhile
                    continue
                owner = schedule.owner_user
                demoted = owner.origin == "team" and owner.role == "viewer"  # legacy: single-user
                if owner.disabled_at is not None or demoted:
                    # Its owner may no longer submit: the schedule stops with their rights.
                    log.warning(
                        "schedule %d: not fired, its owner %s is %s",
                        schedule_id,
                        owner.name,
                        "disabled" if owner.disabled_at else "a viewer",
                    )
                    continue
                slot, missed = due_slots(
                    session, schedule, now, self.settings.schedule_grace_seconds
                )
                if slot is None:
                    continue
                try:
                    firing = fire(
                        session=session,
                        schedule=schedule,
                        slot=slot,
                        trigger="cron",
                        fired_by=self.name,
                        settings=self.settings,
                        now=now,
                        missed=missed,
                    )
                except SlotTaken:
                    log.debug("%s: slot %s of schedule %d taken", self.name, slot, schedule_id)
                    continue
                except Exception:  # one broken schedule must not stop the others
                    log.exception("schedule %d: firing slot %s failed", schedule_id, slot)
                    continue
                fired.append(firing.id)
        self.confirm_finished_studies(now)
        self.analyse_finished_nights(now)
        deliver_due(self.settings, now)
        return fired

    def confirm_finished_studies(self, now: dt.datetime) -> list[int]:
        """Queue the confirmation of every scheduled study that has finished (its best
        setting and the baseline on the spec's fresh confirm_seeds); a night whose study
        cannot be confirmed (cancelled, or no complete trial) is compared at once without.
        Claimed through `confirm_claimed_at` (taken again after CONFIRM_CLAIM_SECONDS, if
        the replica that claimed it died before queueing)."""
        from db.models import Study
        from service import nightwatch, studies

        stale = now - dt.timedelta(seconds=CONFIRM_CLAIM_SECONDS)
        claimable = (ScheduleFiring.confirm_claimed_at.is_(None)) | (
            ScheduleFiring.confirm_claimed_at < stale
        )
        with session_scope(self.settings.database_url) as session:
            pending = session.execute(
                select(ScheduleFiring.id, Study.id, Study.state)
                .join(Study, Study.id == ScheduleFiring.study_id)
                .where(
                    ScheduleFiring.confirm_sweep_id.is_(None),
                    ScheduleFiring.analysed_at.is_(None),
                    Study.state != "running",
                    claimable,
                )
            ).all()
        queued = []
        for firing_id, study_id, state in pending:
            with session_scope(self.settings.database_url) as session:
                claimed = session.execute(
                    update(ScheduleFiring)
                    .where(
                        ScheduleFiring.id == firing_id,
                        ScheduleFiring.confirm_sweep_id.is_(None),
                        claimable,
                    )
                    .values(confirm_claimed_at=now)
                )
                if claimed.rowcount != 1:  # type: ignore[attr-defined]
                    continue
            try:
                if state != "finished":
                    raise ValueError(f"study {study_id} is {state}")
                _, sweep_id = studies.confirm(settings=self.settings, study_id=study_id)
            except ValueError as e:  # nothing to confirm: compare the night as it is
                log.info("night of firing %d: no confirmation (%s)", firing_id, e)
                with session_scope(self.settings.database_url) as session:
                    nightwatch.analyse(session, firing_id, url=self.settings.database_url, now=now)
                continue
            with session_scope(self.settings.database_url) as session:
                session.get_one(ScheduleFiring, firing_id).confirm_sweep_id = sweep_id
            queued.append(firing_id)
        return queued

    def analyse_finished_nights(self, now: dt.datetime) -> list[int]:
        """Compare every night that has finished and is not compared yet (nightwatch)."""
        from service import nightwatch

        with session_scope(self.settings.database_url) as session:
            pending = session.scalars(
                select(ScheduleFiring)
                .where(ScheduleFiring.analysed_at.is_(None))
                .order_by(ScheduleFiring.id)
                .limit(50)
            ).all()
            ready = [f.id for f in pending if nightwatch.finished(session, f)]
        done = []
        for firing_id in ready:
            with session_scope(self.settings.database_url) as session:
                try:
                    if nightwatch.analyse(
                        session, firing_id, url=self.settings.database_url, now=now
                    ):
                        done.append(firing_id)
                except Exception:  # one night that cannot be compared must not stop the rest
                    log.exception("night of firing %d: comparison failed", firing_id)
        return done

    def run(self, stop: threading.Event | None = None) -> None:
        """Tick every `schedule_poll_seconds` until `stop` is set; a tick that fails (the
        database is down) is logged and retried at the next one."""
        stop = stop or threading.Event()
        log.info("%s: firing schedules every %gs", self.name, self.settings.schedule_poll_seconds)
        while not stop.is_set():
            try:
                self.tick()
            except Exception as e:
                if database_unavailable(e):
                    log.warning("%s: database unavailable: %s", self.name, str(e).splitlines()[0])
                else:
                    log.exception("%s: tick failed", self.name)
            stop.wait(self.settings.schedule_poll_seconds)


def start_in_thread(settings: Settings) -> tuple[threading.Thread, threading.Event]:
    """The embedded mode: a scheduler thread inside `plateau serve`."""
    stop = threading.Event()
    scheduler = Scheduler(settings)
    thread = threading.Thread(
        target=scheduler.run, kwargs={"stop": stop}, daemon=True, name="scheduler"
    )
    thread.start()
    return thread, stop
