"""The nightly watch compares each finished night with the nights before it (issue 14):
an injected 1.5x slowdown of one grid point among unchanged ones is flagged, with its
direction, effect and the software that changed; an A/A series stays quiet; the webhook
gets one signed POST per finished night, retried when the receiver first fails.

The nights are real schedule firings with real sweeps and runs; their results are written
as a worker would write them, drawn from a seeded noise model (a configuration's steps to
target vary from seed to seed by ~15 %, log-normal), so the statistics are tested without
training 100 runs a night."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import random
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from db.models import Run, RunResult, ScheduleFiring
from db.session import session_scope
from service import nightwatch
from service.api.main import create_app
from service.schedules import fire
from service.settings import Settings
from service.webhooks import SIGNATURE_HEADER, deliver_due
from tests.service.conftest import QUICK_SPEC
from tests.service.test_schedules import schedule_at

# 3 optimizers x 2 inits x 2 clipping settings = 12 grid points, 3 seeds a night.
SPEC = QUICK_SPEC | {
    "optimizers": [
        {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        {"name": "adam", "lr": 0.003},
        {"name": "sgd", "lr": 0.03},
    ],
    "inits": ["default", "orthogonal"],
    "seeds": [0, 1, 2],
}
T0 = dt.datetime(2026, 11, 20, 1, 0, tzinfo=dt.UTC)
SPREAD = 0.15  # seed-to-seed spread of log steps to target
CONFIGS = 12


def night(
    url: str,
    schedule_id: int,
    k: int,
    rng: random.Random,
    *,
    slow: dict[int, float] | None = None,
    plugin: str = "1.0",
) -> int:
    """Fire night k and record its runs' results; `slow` multiplies the steps to target of
    the grid points it names (by grid position); `plugin` is the night's task-plugin
    version, recorded in every run's environment."""
    from db.models import Schedule

    settings = Settings(database_url=url)
    with session_scope(url) as s:
        schedule = s.get_one(Schedule, schedule_id)
        firing = fire(
            session=s,
            schedule=schedule,
            slot=T0 + dt.timedelta(days=k),
            trigger="cron",
            fired_by="test",
            settings=settings,
            now=T0 + dt.timedelta(days=k, seconds=3),
        )
        sweep_id, firing_id = firing.sweep_id, firing.id
    with session_scope(url) as s:
        runs = s.scalars(select(Run).where(Run.sweep_id == sweep_id).order_by(Run.grid_index))
        for run in runs:
            point = run.grid_index // 3  # seeds are the innermost axis
            typical = 200.0 * (1 + 0.4 * point)  # each grid point its own speed
            steps = typical * math.exp(rng.gauss(0, SPREAD)) * (slow or {}).get(point, 1.0)
            run.status = "succeeded"
            s.add(
                RunResult(
                    run_id=run.id,
                    attempt=1,
                    outcome="succeeded",
                    steps_done=1000,
                    reached_target=True,
                    steps_to_target=round(steps),
                    budget_steps=1000,
                    final_loss=0.05 * math.exp(rng.gauss(0, 0.1)),
                    plateau_fraction=min(1.0, max(0.0, 0.2 + rng.gauss(0, 0.03))),
                    verdict="converged",
                    config_key=run.config_key,
                    sweep_id=sweep_id,
                    environment={"torch": "2.13.0", "device": "cpu", "plugins": plugin},
                )
            )
    return firing_id


def analyse_all(url: str, firing_ids: list[int]) -> None:
    for i, firing_id in enumerate(firing_ids):
        with session_scope(url) as s:
            assert nightwatch.analyse(s, firing_id, url=url, now=T0 + dt.timedelta(days=i, hours=5))


def alerts_of(url: str, firing_id: int) -> list[Any]:
    from db.models import ScheduleAlert

    with session_scope(url) as s:
        rows = s.scalars(select(ScheduleAlert).where(ScheduleAlert.firing_id == firing_id)).all()
        s.expunge_all()
        return list(rows)


def test_a_slowdown_of_one_grid_point_is_flagged_and_the_others_are_not(migrated_url):
    url = migrated_url
    sid = schedule_at(url, T0 - dt.timedelta(days=1), spec=SPEC, compare_nights=5)
    rng = random.Random(14)
    firings = [night(url, sid, k, rng) for k in range(5)]
    # Night 5: a plugin upgrade makes grid point 4 ~1.5x slower; its config is unchanged.
    firings.append(night(url, sid, 5, rng, slow={4: 1.5}, plugin="1.1"))
    analyse_all(url, firings)
    for firing_id in firings[:5]:
        assert alerts_of(url, firing_id) == []  # the A/A nights: quiet
    (alert,) = alerts_of(url, firings[5])
    assert (alert.metric, alert.direction) == ("steps_to_target", "regression")
    assert alert.ci_low is not None and alert.ci_high is not None
    assert 1.3 < alert.effect < 1.8 and alert.ci_low > 1.0
    assert alert.q_value <= nightwatch.FDR
    assert alert.detail["nights_compared"] == [0, 1, 2, 3, 4]
    assert alert.detail["software_changes"] == {"plugins": {"before": "1.0", "tonight": "1.1"}}
    with session_scope(url) as s:
        runs = s.scalars(select(Run.config_key).where(Run.grid_index == 12)).all()
    assert alert.config_key == runs[0]  # grid point 4 (its first seed is run 12)


def test_an_a_a_series_raises_no_alert(migrated_url):
    url = migrated_url
    sid = schedule_at(url, T0 - dt.timedelta(days=1), spec=SPEC, compare_nights=5)
    rng = random.Random(2026)
    firings = [night(url, sid, k, rng) for k in range(8)]
    analyse_all(url, firings)
    assert [a for f in firings for a in alerts_of(url, f)] == []


def test_an_improvement_and_new_divergences_are_reported_too():
    """Rules are tests too: every seed diverging where none of 15 did is flagged (Fisher's
    p = 1/816), with the verdict that changed and the plateau fraction."""
    seed = nightwatch.Seed
    steady = [seed(200 * (1 + 0.01 * i), True, 0.05, 0.2, False, "converged") for i in range(15)]
    earlier = [
        nightwatch.Night(i, i, {}, {"k": steady[3 * i : 3 * i + 3]}, {"k": "mlp"}) for i in range(5)
    ]
    faster = [seed(100, True, 0.05, 0.2, False, "converged") for _ in range(3)]
    tonight = nightwatch.Night(9, 5, {}, {"k": faster}, {"k": "mlp"})
    (alert,) = nightwatch.alerts(nightwatch.compare(tonight, earlier))
    assert alert.metric == "steps_to_target" and not alert.worse and alert.effect < 0.6
    broken = [seed(1000, False, None, 0.9, True, "diverged") for _ in range(3)]
    tonight = nightwatch.Night(9, 5, {}, {"k": broken}, {"k": "mlp"})
    metrics = {a.metric for a in nightwatch.alerts(nightwatch.compare(tonight, earlier))}
    assert {"divergences", "verdict", "plateau_fraction"} <= metrics


def test_benjamini_hochberg_matches_its_definition():
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    # sorted 0.005, 0.01, 0.03, 0.04, 0.5 -> x5/1, x5/2, x5/3, x5/4, x5/5, then cumulative min
    expected = {0.005: 0.025, 0.01: 0.025, 0.03: 0.05, 0.04: 0.05, 0.5: 0.5}
    assert nightwatch.benjamini_hochberg(p) == pytest.approx([expected[v] for v in p])


class Receiver:
    """A local webhook receiver: answers 500 to the first `fail` posts, then 200."""

    def __init__(self, fail: int) -> None:
        received: list[tuple[dict[str, str], bytes, int]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server API)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 500 if len(received) < fail else 200
                received.append((dict(self.headers), body, status))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_each_finished_night_is_posted_once_signed_and_retried_after_a_failure(migrated_url):
    url = migrated_url
    receiver = Receiver(fail=1)
    try:
        settings = Settings(database_url=url, webhook_allowed_hosts="127.0.0.1")
        with TestClient(create_app(settings, dispatch=False, schedule=False)) as c:
            made = c.post(
                "/api/v1/schedules",
                json={"name": "w", "cron": "0 1 * * *", "spec": SPEC, "webhook_url": receiver.url},
            ).json()
            sid, secret = made["id"], made["webhook_secret"]
            rng = random.Random(7)
            firings = [night(url, sid, k, rng) for k in range(3)]
            analyse_all(url, firings)
            now = T0 + dt.timedelta(days=3)
            assert deliver_due(settings, now) == 2  # the first night's first try failed
            assert deliver_due(settings, now) == 0  # nothing is due again at once
            assert deliver_due(settings, now + dt.timedelta(seconds=31)) == 1  # the retry
            assert deliver_due(settings, now + dt.timedelta(hours=1)) == 0
            alerts = c.get(f"/api/v1/schedules/{sid}/alerts").json()
        assert [r[2] for r in receiver.received] == [500, 200, 200, 200]
        nights = sorted(json.loads(body)["night"] for _, body, status in receiver.received[1:])
        assert nights == [0, 1, 2]  # one delivered POST per finished night
        for headers, body, _ in receiver.received:
            expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            assert headers[SIGNATURE_HEADER] == expected
        document = json.loads(receiver.received[1][1])
        assert document["schedule"]["id"] == sid and document["alerts"] == []
        assert document["sweep_url"].endswith(f"/sweeps/{document['sweep_url'].split('/')[-1]}")
        tries = {d["night_firing"]: d["attempts"] for d in alerts["deliveries"]}
        assert sorted(tries.values()) == [1, 1, 2] and all(
            d["delivered_at"] for d in alerts["deliveries"]
        )
        with session_scope(url) as s:
            assert all(f.analysed_at for f in s.scalars(select(ScheduleFiring)))
    finally:
        receiver.close()


def test_curves_of_nights_past_keeping_are_thinned_and_their_results_kept(migrated_url):
    from db.models import RunMetric
    from db.retention import prune_old_nights
    from service.maintenance import maintain

    url = migrated_url
    sid = schedule_at(url, T0 - dt.timedelta(days=1), spec=SPEC, keep_curves_nights=2)
    rng = random.Random(3)
    firings = [night(url, sid, k, rng) for k in range(4)]
    with session_scope(url) as s:  # ten logged steps a run, an evaluation at step 5
        for run_id in s.scalars(select(Run.id)):
            for step in range(10):
                s.add(
                    RunMetric(
                        run_id=run_id, attempt=1, step=step, loss=1.0 / (step + 1),
                        eval_loss=0.5 if step == 5 else None,
                    )
                )  # fmt: skip
    maintain(Settings(database_url=url))  # the dispatcher's periodic upkeep thins them
    with session_scope(url) as s:
        assert prune_old_nights(session=s) == (0, 0)  # nothing left to thin
    with session_scope(url) as s:
        for k, firing_id in enumerate(firings):
            sweep_id = s.get_one(ScheduleFiring, firing_id).sweep_id
            runs = s.scalars(select(Run).where(Run.sweep_id == sweep_id)).all()
            steps = {
                r.id: sorted(s.scalars(select(RunMetric.step).where(RunMetric.run_id == r.id)))
                for r in runs
            }
            old = k <= 3 - 2  # nights 0 and 1: more than 2 nights before the latest (3)
            assert all((r.curves_pruned_at is not None) == old for r in runs), k
            assert all(v == ([0, 5] if old else list(range(10))) for v in steps.values()), k
            results = s.scalars(select(RunResult).where(RunResult.sweep_id == sweep_id)).all()
            assert len(results) == len(runs)  # the summaries stay


@pytest.mark.slow
def test_a_scheduled_study_is_confirmed_each_night_and_compared_on_its_confirmation(
    sqlite_url,
):
    """Two nights of a small real study, trained here trial by trial: the scheduler queues
    each night's confirmation (best setting and baseline on the night's fresh seeds), and
    compares the second night with the first on the confirmed value and the best setting."""
    from db.migrate import upgrade
    from db.models import ScheduleAlert, Study, Sweep
    from service import studies
    from service.scheduler import Scheduler
    from tests.web.test_board_pages import STUDY_SPEC, train_one

    upgrade(sqlite_url)
    url = sqlite_url
    spec = STUDY_SPEC | {
        "n_trials": 3,
        "pruner": {"name": "none"},
        "fixed": STUDY_SPEC["fixed"] | {"budget": {"steps": 300, "batch_size": 256}},
        "confirm_seeds": [5, 6],
    }
    sid = schedule_at(url, T0 - dt.timedelta(days=1), kind="study", spec=spec, cron="0 1 * * *")
    settings = Settings(database_url=url)
    clock = lambda: T0 + dt.timedelta(days=5)  # noqa: E731
    scheduler = Scheduler(settings, clock=clock)
    from db.models import Schedule

    for k in range(2):
        with session_scope(url) as s:
            fire(
                session=s, schedule=s.get_one(Schedule, sid), slot=T0 + dt.timedelta(days=k),
                trigger="cron", fired_by="test", settings=settings, now=T0 + dt.timedelta(days=k),
            )  # fmt: skip
        with session_scope(url) as s:
            study_id = s.scalars(
                select(ScheduleFiring.study_id).where(ScheduleFiring.night == k)
            ).one()
        for _ in range(20):  # the study, trial by trial, as the dispatcher would run it
            studies.advance(settings, study_id)
            with session_scope(url) as s:
                if s.get_one(Study, study_id).state == "finished":
                    break
            train_one(url)
        assert scheduler.confirm_finished_studies(clock()) != []
        while train_one(url) is not None:  # the confirmation's runs
            pass
        assert scheduler.analyse_finished_nights(clock()) != []
    with session_scope(url) as s:
        rows = s.scalars(select(ScheduleFiring).order_by(ScheduleFiring.night)).all()
        assert all(r.confirm_sweep_id and r.analysed_at for r in rows)
        seeds = [s.get_one(Sweep, r.confirm_sweep_id).spec["seeds"] for r in rows]
        assert seeds == [[5, 6], [12, 13]]  # the second night's fresh confirmation seeds
        assert all(r.environment and r.environment["torch"] for r in rows)  # its trials'
        trial_seeds = [s.get_one(Study, r.study_id).spec["fixed"]["seed"] for r in rows]
        assert trial_seeds[1] != trial_seeds[0]  # fresh trial seeds too
        raised = {a.metric: a for a in s.scalars(select(ScheduleAlert))}
        bests = [studies.progress(url=url, study_id=r.study_id)["best"] for r in rows]
        summaries = [
            studies.confirmation_summary(session=s, sweep_id=r.confirm_sweep_id, budget=300)
            for r in rows
        ]
    assert ("best_setting" in raised) == (bests[0]["params"] != bests[1]["params"])
    ratio = (
        summaries[1]["best"]["mean_steps_to_target"] / summaries[0]["best"]["mean_steps_to_target"]
    )
    flagged = ratio >= nightwatch.MIN_RATIO or ratio <= 1 / nightwatch.MIN_RATIO
    assert ("best_value" in raised) == flagged
    if flagged:
        assert raised["best_value"].effect == pytest.approx(ratio)
        assert raised["best_value"].detail["value"] == "confirmed mean steps to target"


def test_rare_events_do_not_ring_night_after_night():
    """The A/A cases the count tests are for: a configuration that plateaus on 40 % of its
    seeds, one whose seeds sometimes (5 %) sit on a long plateau, one that sometimes (3 %)
    diverges. 150 seeded nights of 12 configurations each: the share of nights with any
    alert stays near the false discovery rate."""
    for kind in ("verdict", "plateau", "divergence"):
        rng = random.Random(kind)
        nights: list[nightwatch.Night] = []
        alarms = 0
        for n in range(150):
            configs = {}
            for c in range(12):
                seeds = []
                for _ in range(3):
                    diverged = kind == "divergence" and rng.random() < 0.03
                    plateau = rng.uniform(0.2, 0.5) if rng.random() < 0.05 else 0.0
                    verdict = "plateau" if rng.random() < 0.4 else "converged"
                    seeds.append(
                        nightwatch.Seed(
                            steps=200 * (1 + 0.3 * c) * math.exp(rng.gauss(0, SPREAD)),
                            reached=True,
                            final_loss=None if diverged else 0.05,
                            plateau_fraction=plateau if kind == "plateau" else 0.2,
                            diverged=diverged,
                            verdict="diverged" if diverged else (
                                verdict if kind == "verdict" else "converged"),
                        )
                    )  # fmt: skip
                configs[str(c)] = seeds
            tonight = nightwatch.Night(n, n, {}, configs, {k: k for k in configs})
            if len(nights) >= 5:
                alarms += bool(nightwatch.alerts(nightwatch.compare(tonight, nights[-5:])))
            nights.append(tonight)
        assert alarms / 145 <= 2 * nightwatch.FDR, (kind, alarms)
