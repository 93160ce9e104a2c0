"""The nightly watch: when a schedule's night has finished, compare each configuration with
the nights before it and raise alerts for what moved, then report to the webhook.

A configuration (grid point) is followed by its `config_key`, which depends on what changes
the training and on nothing else (not the seed, not the software), so a configuration is
the same row from night to night while torch or a plugin changes under it; each night
records its software (`ScheduleFiring.environment`) so that a change of result can be laid
beside a change of software.

The tests, and why (the seeds of one night are few, the configurations many):

- **Steps to target and final loss** are compared on a log scale (effects are ratios: "1.5x
  slower"). A night's 3 seeds cannot estimate the seed-to-seed spread, but the K earlier
  nights together can (15 values with K = 5, 3 seeds): a two-sided t-test of tonight's mean
  log value against the earlier nights' mean, with the spread of the earlier nights (n - 1
  degrees of freedom), never below 5 % (earlier nights that agree exactly, e.g. all
  censored, say little about the next). A rank test would need no normality, but with 3
  seeds against 15 its smallest two-sided p is 1/408, which no correction over dozens of
  configurations lets through. Runs that did not reach the target count at the budget (a
  censored value, conservative: it can only shrink a slowdown). The effect is the ratio of
  geometric means with its 95 % interval.
- **Plateau fraction** is compared on its own scale, the effect a difference of means; its
  spread is taken as at least 0.1, since it is zero-inflated (most runs have none, a few a
  long one).
- **Divergences and the verdict** are counts: Fisher's exact test of tonight's share (of
  diverged seeds; of seeds with the verdict that is now the majority) against the earlier
  nights'. A rare event that a night's 3 seeds happen to hit is then no alert by itself:
  3 of 3 diverged against 0 of 15 is (p = 1/816), 1 of 3 is not (p = 0.17).
- **Multiple comparisons**: Benjamini-Hochberg over every test of the night at `FDR` (5 %),
  and an alert also needs a practical effect (a ratio beyond 1.2x, 0.1 of plateau fraction,
  a third of the seeds diverging more, a changed majority verdict), so that an A/A series,
  the same settings on fresh seeds night after night, stays quiet (tests/service/
  test_nightwatch.py measures it: at most 2x the FDR of nights with any alert, also for
  configurations that often plateau or sometimes diverge).
- Improvements are reported like regressions, with their direction.

The study of a scheduled study is compared on its confirmed best value and on whether its
best setting changed (`study_alerts`).
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import (
    RunResult,
    Schedule,
    ScheduleAlert,
    ScheduleFiring,
    WebhookDelivery,
    utcnow,
)

FDR = 0.05
MIN_RATIO = 1.2  # steps to target, final loss: an alert needs at least this ratio (or 1/it)
MIN_PLATEAU_DIFFERENCE = 0.1
MIN_SHARE_CHANGE = 1 / 3  # divergences: tonight's share of diverged seeds moved this much
LEAST_LOG_SPREAD = 0.05  # the seed spread assumed at least (log scale: 5 %)
LEAST_PLATEAU_SPREAD = 0.1  # plateau fraction: zero-inflated, so a wide floor
# What a night's environment keeps of its runs' (the software, not the host or timing).
ENVIRONMENT_KEYS = ("torch", "python", "device", "dtype", "plateau_bench", "plugins")


@dataclass
class Seed:
    """One run of a configuration in one night."""

    steps: float  # steps to target, the budget when not reached
    reached: bool
    final_loss: float | None
    plateau_fraction: float | None
    diverged: bool
    verdict: str | None


@dataclass
class Night:
    firing_id: int
    night: int
    environment: dict[str, Any]
    configs: dict[str, list[Seed]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


def _described(part: Any) -> str:
    """An axis value as people write it: its name and its other scalar settings."""
    if not isinstance(part, dict):
        return str(part)
    extra = [
        f"{k}={v}" for k, v in part.items() if k != "name" and isinstance(v, int | float | str)
    ]
    return " ".join([str(part.get("name", "?")), *extra])


def _label(config: dict[str, Any]) -> str:
    """A grid point as people read it: architecture, optimizer, init, normalization and
    clipping with their settings (two points that differ only elsewhere get their config
    key appended by `history`)."""
    parts = [_described(config.get("architecture", {})), _described(config.get("optimizer", {}))]
    parts.append("init " + _described(config.get("init", {"name": "default"})))
    if config.get("normalization", "none") != "none":
        parts.append(config["normalization"])
    clip = config.get("grad_clip")
    if clip:
        parts.append(f"clip {clip.get('mode')} {clip.get('threshold')}")
    return " · ".join(parts)


def load_night(session: Session, firing: ScheduleFiring) -> Night:
    """A finished night's results by configuration."""
    from db.models import Run

    night = Night(firing.id, firing.night, firing.environment or {})
    if firing.sweep_id is None:
        return night
    rows = session.execute(
        select(RunResult, Run.config)
        .join(Run, Run.id == RunResult.run_id)
        .where(RunResult.sweep_id == firing.sweep_id)
        .order_by(Run.grid_index)
    ).all()
    for result, config in rows:
        budget = result.budget_steps
        if budget is None:
            budget = config.get("budget", {}).get("steps", 1)
        reached = result.reached_target and result.steps_to_target is not None
        steps = result.steps_to_target if reached else budget
        night.configs.setdefault(result.config_key, []).append(
            Seed(
                steps=float(max(steps, 1)),  # step 0 (a target met at once) as 1: logs
                reached=bool(result.reached_target),
                final_loss=result.final_loss,
                plateau_fraction=result.plateau_fraction,
                diverged=result.outcome == "diverged",
                verdict=result.verdict,
            )
        )
        night.labels.setdefault(result.config_key, _label(config))
    return night


def night_environment(session: Session, sweep_id: int) -> dict[str, Any]:
    """The software of a night's runs: each key's values (one, where nothing changed)."""
    rows = session.scalars(
        select(RunResult.environment).where(RunResult.sweep_id == sweep_id)
    ).all()
    found: dict[str, set[str]] = {}
    for env in rows:
        for key in ENVIRONMENT_KEYS:
            if env and key in env:
                found.setdefault(key, set()).add(str(env[key]))
    return {k: sorted(v)[0] if len(v) == 1 else sorted(v) for k, v in sorted(found.items())}


# --- statistics ------------------------------------------------------------------------------


def t_compare(
    tonight: list[float], before: list[float], *, least_spread: float
) -> tuple[float, float, float, float]:
    """(difference of means, its 95 % interval low and high, two-sided p): tonight's mean
    against the earlier nights', with the earlier nights' spread, never taken below
    `least_spread` (earlier nights that happen to agree exactly, e.g. all censored at the
    budget or all without a plateau, say little about the spread of the next one)."""
    from scipy import stats  # type: ignore[import-untyped]

    difference = statistics.fmean(tonight) - statistics.fmean(before)
    spread = statistics.stdev(before) if len(before) > 1 else 0.0
    spread = max(spread, least_spread)
    se = spread * math.sqrt(1 / len(tonight) + 1 / len(before))
    df = len(before) - 1
    t = difference / se
    p = float(2 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf(0.975, df)) * se
    return difference, difference - half, difference + half, p


def fisher(a: int, n: int, b: int, m: int) -> float:
    """Two-sided p of Fisher's exact test: a of n tonight against b of m before."""
    from scipy import stats

    return float(stats.fisher_exact([[a, n - a], [b, m - b]])[1])


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Adjusted p-values (q-values) of the Benjamini-Hochberg procedure, in input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    q = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p_values[i] * m / rank)
        q[i] = running
    return q


@dataclass
class Candidate:
    config_key: str
    label: str
    metric: str
    effect: float | None
    ci: tuple[float | None, float | None]
    p: float | None
    practical: bool
    worse: bool
    detail: dict[str, Any]
    q: float | None = None


def compare(tonight: Night, earlier: list[Night]) -> list[Candidate]:
    """Every test and rule of tonight against the earlier nights; alerts are the candidates
    that pass (`alerts`)."""
    tests: list[Candidate] = []
    nights = [n.night for n in earlier]
    for key, seeds in tonight.configs.items():
        history = [s for n in earlier for s in n.configs.get(key, [])]
        if len(history) < 2 or not seeds:
            continue  # a new configuration: nothing to compare with yet
        label = tonight.labels.get(key, key)
        base = {"nights_compared": nights, "night": tonight.night}

        def logs(values: list[float | None]) -> list[float]:
            return [math.log(v) for v in values if v is not None and v > 0 and math.isfinite(v)]

        for metric, now, then in (
            ("steps_to_target", logs([s.steps for s in seeds]), logs([s.steps for s in history])),
            (
                "final_loss",
                logs([s.final_loss for s in seeds if not s.diverged]),
                logs([s.final_loss for s in history if not s.diverged]),
            ),
        ):
            if len(now) < 1 or len(then) < 2:
                continue
            d, low, high, p = t_compare(now, then, least_spread=LEAST_LOG_SPREAD)
            ratio = math.exp(d)
            tests.append(
                Candidate(
                    key, label, metric, ratio, (math.exp(low), math.exp(high)), p,
                    practical=ratio >= MIN_RATIO or ratio <= 1 / MIN_RATIO,
                    worse=ratio > 1,
                    detail=base | {
                        "tonight": [round(math.exp(v), 6) for v in now],
                        "before": [round(math.exp(v), 6) for v in then],
                        "effect": "ratio of geometric means, tonight / before",
                    },
                )
            )  # fmt: skip
        now_pf = [s.plateau_fraction for s in seeds if s.plateau_fraction is not None]
        then_pf = [s.plateau_fraction for s in history if s.plateau_fraction is not None]
        if now_pf and len(then_pf) >= 2:
            d, low, high, p = t_compare(now_pf, then_pf, least_spread=LEAST_PLATEAU_SPREAD)
            tests.append(
                Candidate(
                    key, label, "plateau_fraction", d, (low, high), p,
                    practical=abs(d) >= MIN_PLATEAU_DIFFERENCE,
                    worse=d > 0,
                    detail=base | {"tonight": now_pf, "before": then_pf,
                                   "effect": "difference of means, tonight - before"},
                )
            )  # fmt: skip
        # Counts: Fisher's exact test of tonight's share against the earlier nights', in the
        # same correction as the others (a rare event a night's 3 seeds happen to hit must
        # not ring on its own).
        diverged_now = sum(s.diverged for s in seeds)
        diverged_then = sum(s.diverged for s in history)
        rate_change = diverged_now / len(seeds) - diverged_then / len(history)
        if diverged_now or diverged_then:
            tests.append(
                Candidate(
                    key, label, "divergences", rate_change, (None, None),
                    fisher(diverged_now, len(seeds), diverged_then, len(history)),
                    practical=abs(rate_change) >= MIN_SHARE_CHANGE,
                    worse=rate_change > 0,
                    detail=base | {"tonight": f"{diverged_now} of {len(seeds)} seeds diverged",
                                   "before": f"{diverged_then} of {len(history)} runs diverged",
                                   "effect": "share of diverged runs, tonight - before"},
                )
            )  # fmt: skip
        majority_now = _majority([s.verdict for s in seeds])
        majority_then = _majority([s.verdict for s in history])
        if majority_now and majority_then and majority_now != majority_then:
            now_n = sum(s.verdict == majority_now for s in seeds)
            then_n = sum(s.verdict == majority_now for s in history)
            tests.append(
                Candidate(
                    key, label, "verdict", now_n / len(seeds) - then_n / len(history),
                    (None, None), fisher(now_n, len(seeds), then_n, len(history)),
                    practical=True, worse=majority_now in ("diverged", "plateau", "saddle"),
                    detail=base | {"tonight": majority_now, "before": majority_then,
                                   "effect": f"share of runs with verdict {majority_now}, "
                                             "tonight - before"},
                )
            )  # fmt: skip
    tested = [c for c in tests if c.p is not None]
    for c, q in zip(
        tested, benjamini_hochberg([c.p for c in tested if c.p is not None]), strict=True
    ):
        c.q = q
    return tests


def _majority(verdicts: list[str | None]) -> str | None:
    """The verdict more than half of the runs got, else None."""
    counted = Counter(v for v in verdicts if v)
    if not counted:
        return None
    verdict, n = counted.most_common(1)[0]
    return verdict if n * 2 > len(verdicts) else None


def alerts(candidates: list[Candidate]) -> list[Candidate]:
    """The candidates that pass: a test significant after the correction with a practical
    effect, or a rule that fired."""
    return [
        c for c in candidates if c.practical and (c.p is None or (c.q is not None and c.q <= FDR))
    ]


def software_changes(tonight: Night, earlier: list[Night]) -> dict[str, Any]:
    """The software keys whose value tonight differs from the latest earlier night's."""
    if not earlier:
        return {}
    last = earlier[-1].environment
    return {
        k: {"before": last.get(k), "tonight": v}
        for k, v in tonight.environment.items()
        if last.get(k) != v
    }


# --- a finished night, once ------------------------------------------------------------------


def finished(session: Session, firing: ScheduleFiring) -> bool:
    """Whether the night's runs have all ended (a study night: its confirmation's)."""
    from db import queries

    def ended(sweep_id: int) -> bool:
        return queries.unfinished_runs(session=session, sweep_id=sweep_id) == 0

    if firing.sweep_id is not None:
        return ended(firing.sweep_id)
    if firing.study_id is not None:
        # A study night ends with its confirmation (service.scheduler confirms it; a night
        # that cannot be confirmed is compared at once there).
        return firing.confirm_sweep_id is not None and ended(firing.confirm_sweep_id)
    return True


def analyse(session: Session, firing_id: int, *, url: str, now: dt.datetime | None = None) -> bool:
    """Compare a finished night with its schedule's K nights before it, store its alerts,
    and queue its webhook delivery; False when another replica did (or does) it."""
    now = now or utcnow()
    claimed = session.execute(
        update(ScheduleFiring)
        .where(ScheduleFiring.id == firing_id, ScheduleFiring.analysed_at.is_(None))
        .values(analysed_at=now)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return False
    firing = session.get_one(ScheduleFiring, firing_id)
    schedule = session.get_one(Schedule, firing.schedule_id)
    if firing.sweep_id is not None:
        firing.environment = night_environment(session, firing.sweep_id)
    elif firing.study_id is not None:  # a study night: the software its trials ran on
        from db.models import Study

        study = session.get(Study, firing.study_id)
        if study is not None:
            firing.environment = night_environment(session, study.sweep_id)
    earlier_firings = session.scalars(
        select(ScheduleFiring)
        .where(
            ScheduleFiring.schedule_id == schedule.id,
            ScheduleFiring.night < firing.night,
            ScheduleFiring.analysed_at.is_not(None),
        )
        .order_by(ScheduleFiring.night.desc())
        .limit(schedule.compare_nights)
    ).all()
    earlier = [load_night(session, f) for f in reversed(earlier_firings)]
    tonight = load_night(session, firing)
    if schedule.kind == "study":
        raised = study_alerts(session, firing, earlier_firings, url=url)
        changes = software_changes(tonight, earlier)
        for alert in raised:
            alert.detail = alert.detail | {"software_changes": changes}
    else:
        changes = software_changes(tonight, earlier)
        raised = [
            ScheduleAlert(
                schedule_id=schedule.id,
                firing_id=firing.id,
                config_key=c.config_key,
                label=c.label[:500],
                metric=c.metric,
                direction=("regression" if c.worse else "improvement")
                if c.metric != "verdict"
                else "changed",
                effect=c.effect,
                ci_low=c.ci[0],
                ci_high=c.ci[1],
                p_value=c.p,
                q_value=c.q,
                detail=c.detail | {"software_changes": changes},
                created_at=now,
            )
            for c in alerts(compare(tonight, earlier))
        ]
    session.add_all(raised)
    if schedule.webhook_url:
        session.add(
            WebhookDelivery(
                firing_id=firing.id, url=schedule.webhook_url, next_attempt_at=now, log=[]
            )
        )
    session.commit()
    return True


def study_alerts(
    session: Session, firing: ScheduleFiring, earlier: Sequence[ScheduleFiring], *, url: str
) -> list[ScheduleAlert]:
    """A scheduled study against its previous night: whether its best setting changed, and
    its confirmed best value (mean steps to target of the best setting on the fresh
    confirm_seeds, censored at the budget), or the best trial's value where a night has no
    confirmation."""
    from db.models import Study
    from service import studies
    from service.study_spec import StudySpec

    if firing.study_id is None or not earlier or earlier[0].study_id is None:
        return []
    study = session.get(Study, firing.study_id)
    if study is None or session.get(Study, earlier[0].study_id) is None:
        return []
    now_best = studies.progress(url=url, study_id=firing.study_id)["best"]
    then_best = studies.progress(url=url, study_id=earlier[0].study_id)["best"]
    if now_best is None or then_best is None:
        return []
    budget = StudySpec.model_validate(study.spec).fixed.budget.steps

    def confirmed(f: ScheduleFiring, best: dict[str, Any]) -> tuple[float | None, str]:
        if f.confirm_sweep_id is not None:
            summary = studies.confirmation_summary(
                session=session, sweep_id=f.confirm_sweep_id, budget=budget
            )
            return summary["best"]["mean_steps_to_target"], "confirmed mean steps to target"
        return best["value"], "best trial's value"

    a, a_kind = confirmed(firing, now_best)
    b, b_kind = confirmed(earlier[0], then_best)
    out = []
    base = {"nights_compared": [earlier[0].night], "night": firing.night}
    if now_best["params"] != then_best["params"]:
        out.append(
            ScheduleAlert(
                schedule_id=firing.schedule_id, firing_id=firing.id, config_key="",
                label=study.name[:500], metric="best_setting", direction="changed",
                detail=base | {"tonight": now_best["params"], "before": then_best["params"]},
            )
        )  # fmt: skip
    same_kind = a_kind == b_kind
    if same_kind and a is not None and b is not None and b > 0:
        ratio = a / b
        if ratio >= MIN_RATIO or ratio <= 1 / MIN_RATIO:
            out.append(
                ScheduleAlert(
                    schedule_id=firing.schedule_id, firing_id=firing.id, config_key="",
                    label=study.name[:500], metric="best_value",
                    direction="regression" if ratio > 1 else "improvement", effect=ratio,
                    detail=base | {"tonight": a, "before": b, "value": a_kind,
                                   "effect": "ratio, tonight / before"},
                )
            )  # fmt: skip
    return out


# --- a schedule's history: nights as columns, configurations as rows ---------------------------

HISTORY_NIGHTS = 30  # the most recent nights a schedule's page and trend plot show


def _cell(seeds: list[Seed]) -> dict[str, Any]:
    steps = sorted(s.steps for s in seeds)
    losses = [s.final_loss for s in seeds if s.final_loss is not None and not s.diverged]
    plateaus = [s.plateau_fraction for s in seeds if s.plateau_fraction is not None]
    return {
        "seeds": len(seeds),
        "steps_median": statistics.median(steps),
        "steps_low": steps[0],
        "steps_high": steps[-1],
        "reached": sum(s.reached for s in seeds),
        "final_loss_median": statistics.median(losses) if losses else None,
        "plateau_fraction": statistics.fmean(plateaus) if plateaus else None,
        "diverged": sum(s.diverged for s in seeds),
        "verdicts": dict(Counter(s.verdict or "none" for s in seeds).most_common()),
    }


def history(session: Session, schedule_id: int, *, nights: int = HISTORY_NIGHTS) -> dict[str, Any]:
    """The schedule's latest `nights` nights: {"nights": columns (oldest first), "configs":
    rows, "cells": {config_key: {night: summary over its seeds}}, "alerts": {config_key:
    {night: [metrics]}}}."""
    firings = list(
        reversed(
            session.scalars(
                select(ScheduleFiring)
                .where(ScheduleFiring.schedule_id == schedule_id)
                .order_by(ScheduleFiring.night.desc())
                .limit(nights)
            ).all()
        )
    )
    raised = session.scalars(
        select(ScheduleAlert).where(
            ScheduleAlert.schedule_id == schedule_id,
            ScheduleAlert.firing_id.in_([f.id for f in firings]),
        )
    ).all()
    night_of = {f.id: f.night for f in firings}
    alerts_by: dict[str, dict[int, list[str]]] = {}
    for a in raised:
        alerts_by.setdefault(a.config_key, {}).setdefault(night_of[a.firing_id], []).append(
            f"{a.metric} {a.direction}"
        )
    columns: list[dict[str, Any]] = []
    cells: dict[str, dict[int, dict[str, Any]]] = {}
    labels: dict[str, str] = {}
    for firing in firings:
        loaded = load_night(session, firing)
        columns.append(
            {
                "night": firing.night,
                "firing_id": firing.id,
                "slot": firing.slot,
                "trigger": firing.trigger,
                "late_seconds": firing.late_seconds,
                "missed": firing.missed,
                "sweep_id": firing.sweep_id,
                "study_id": firing.study_id,
                "compared": firing.analysed_at is not None,
                "environment": firing.environment or {},
                "alerts": sum(1 for a in raised if a.firing_id == firing.id),
            }
        )
        for key, seeds in loaded.configs.items():
            cells.setdefault(key, {})[firing.night] = _cell(seeds)
            labels.setdefault(key, loaded.labels[key])
    shared = Counter(labels.values())
    for key, label in labels.items():  # points that differ only in what labels leave out
        if shared[label] > 1:
            labels[key] = f"{label} ({key[:8]})"
    configs = [
        {"config_key": k, "label": labels[k]} for k in sorted(labels, key=lambda k: labels[k])
    ]
    return {"nights": columns, "configs": configs, "cells": cells, "alerts": alerts_by}
