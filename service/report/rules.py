"""The report's verdict rules (issue 15), written before any run: each claim of `plateau
report` is decided by one function of the numbers its experiment measured, never by hand.
Each rule's text below is what the report prints beside its verdict.

A rule answers "supported", "not supported" or "mixed". tests/service/test_report_rules.py
feeds every rule a fixture on which it must answer "not supported" (and one on which it
must answer "supported"), so no rule can pass whatever was measured.

This module decides; it does not run or read anything (the report's sections gather the
evidence from stored runs and hand it here), so regenerating a report from stored runs
gives the same verdicts.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["supported", "not supported", "mixed"]
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Rule:
    claim: str  # the claim, in one sentence
    text: str  # the rule, as the report prints it
    decide: Callable[..., Verdict]


def bootstrap_interval(
    values: Sequence[float], statistic: Callable[[Sequence[float]], float], *, seed: int = 0
) -> tuple[float, float]:
    """The 95 % percentile bootstrap interval of `statistic` (seeded: a report regenerated
    from the same runs prints the same interval)."""
    rng = random.Random(seed)
    draws = sorted(
        statistic([rng.choice(values) for _ in values]) for _ in range(BOOTSTRAP_RESAMPLES)
    )
    return draws[int(0.025 * len(draws))], draws[int(0.975 * len(draws)) - 1]


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""

    def ranks(v: Sequence[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (sx * sy) if sx and sy else 0.0


# --- 1. where training stops ---------------------------------------------------------------

LOCAL_MINIMUM_SHARE = 0.10  # at most this share of stops may be diagnosed local minima
NEGATIVE_CURVATURE_SHARE = 0.5  # of plateau entries with negative curvature beyond its error


def where_training_stops(
    *,
    stop_verdicts: Sequence[str],
    plateau_negative_mass: Sequence[tuple[float, float]],
    index_and_loss: Sequence[tuple[float, float]],
) -> Verdict:
    """`stop_verdicts`: the verdict of every run at its end; `plateau_negative_mass`: (the
    Hessian's negative spectral mass, its standard error) at every plateau entry;
    `index_and_loss`: (negative mass, loss) at every probe."""
    if not stop_verdicts or not plateau_negative_mass or len(index_and_loss) < 3:
        return "mixed"
    minima = sum(v == "local_minimum" for v in stop_verdicts) / len(stop_verdicts)
    negative = sum(m > 2 * e for m, e in plateau_negative_mass) / len(plateau_negative_mass)
    falls = spearman([i for i, _ in index_and_loss], [loss for _, loss in index_and_loss]) > 0
    held = [minima < LOCAL_MINIMUM_SHARE, negative >= NEGATIVE_CURVATURE_SHARE, falls]
    return "supported" if all(held) else "not supported" if not any(held[:2]) else "mixed"


WHERE_TRAINING_STOPS = Rule(
    claim="Training that stops early stops on plateaus and saddles, not in local minima.",
    text=(
        f"supported when fewer than {LOCAL_MINIMUM_SHARE:.0%} of runs end diagnosed as a local "
        f"minimum, at least {NEGATIVE_CURVATURE_SHARE:.0%} of plateau entries show negative "
        "curvature beyond twice its standard error, and the Hessian's negative mass rises with "
        "the loss (Spearman > 0); not supported when neither of the first two holds; mixed "
        "otherwise"
    ),
    decide=where_training_stops,
)


# --- 2. noise escapes saddles --------------------------------------------------------------


def noise_escapes_saddles(
    *, full_batch_steps: Sequence[float | None], minibatch_steps: dict[int, Sequence[float | None]]
) -> Verdict:
    """Steps to leave the saddle for each seed (None: never left within the budget), full
    batch and per minibatch size."""
    if not full_batch_steps or not minibatch_steps:
        return "mixed"
    inf = math.inf
    full = statistics.median([inf if s is None else s for s in full_batch_steps])
    faster = [
        statistics.median([inf if s is None else s for s in steps]) < full / 2
        for steps in minibatch_steps.values()
    ]
    return "supported" if all(faster) else "not supported" if not any(faster) else "mixed"


NOISE_ESCAPES_SADDLES = Rule(
    claim="Minibatch noise carries training off a strict saddle that full-batch descent stays on.",
    text=(
        "supported when, at every batch size, the median number of steps to leave the saddle "
        "is less than half full-batch descent's (a seed that never leaves counts as infinite); "
        "not supported when at no batch size; mixed otherwise"
    ),
    decide=noise_escapes_saddles,
)


# --- 3. plateaus and initialization scale --------------------------------------------------

MIN_RANK_CORRELATION = 0.8
SLOPE_RANGE = (0.5, 2.0)


def plateaus_follow_init_scale(*, measured: Sequence[float], predicted: Sequence[float]) -> Verdict:
    """Plateau lengths measured at several initialization scales against the theory's
    prediction at the same scales (Saxe et al. 2013)."""
    pairs = [(m, p) for m, p in zip(measured, predicted, strict=True) if m > 0 and p > 0]
    if len(pairs) < 3:
        return "mixed"
    rho = spearman([m for m, _ in pairs], [p for _, p in pairs])
    logs = [(math.log(p), math.log(m)) for m, p in pairs]
    mx = statistics.fmean(x for x, _ in logs)
    my = statistics.fmean(y for _, y in logs)
    sxx = sum((x - mx) ** 2 for x, _ in logs)
    slope = sum((x - mx) * (y - my) for x, y in logs) / sxx if sxx else 0.0
    ordered = rho >= MIN_RANK_CORRELATION
    scaled = SLOPE_RANGE[0] <= slope <= SLOPE_RANGE[1]
    return "supported" if ordered and scaled else "mixed" if ordered or scaled else "not supported"


PLATEAUS_FOLLOW_INIT_SCALE = Rule(
    claim="Smaller initializations make longer plateaus, as deep linear theory predicts.",
    text=(
        f"supported when the measured plateau lengths rank with the prediction (Spearman ≥ "
        f"{MIN_RANK_CORRELATION}) and grow with it at a log-log slope in "
        f"[{SLOPE_RANGE[0]}, {SLOPE_RANGE[1]}]; mixed when one of the two holds; not "
        "supported when neither"
    ),
    decide=plateaus_follow_init_scale,
)


# --- 4. remedies ---------------------------------------------------------------------------


def remedies_help(*, effects: dict[str, tuple[float, float]]) -> Verdict:
    """For each remedy, the 95 % interval of its ratio of steps to target (remedy /
    control, censored at the budget): below 1 is faster."""
    if not effects:
        return "mixed"
    helped = [high < 1.0 for _, high in effects.values()]
    share = sum(helped) / len(helped)
    return "supported" if share >= 0.75 else "not supported" if share == 0 else "mixed"


REMEDIES_HELP = Rule(
    claim="Orthogonal initialization, gradient clipping, normalization and adaptive steps "
    "shorten plateaus where they are the problem.",
    text=(
        "supported when at least 3 in 4 remedies are faster to target than their control "
        "with the 95 % interval of the ratio below 1; not supported when none is; mixed "
        "otherwise"
    ),
    decide=remedies_help,
)


# --- 5. what a search finds ----------------------------------------------------------------


def search_finds_better(*, best: Sequence[float], default: Sequence[float]) -> Verdict:
    """Steps to target of the study's confirmed best setting and of the default, on the
    same fresh seeds (censored at the budget)."""
    if len(best) < 2 or len(best) != len(default):
        return "mixed"
    ratios = [b / d for b, d in zip(best, default, strict=True) if d > 0]
    low, high = bootstrap_interval(ratios, statistics.fmean)
    return "supported" if high < 1.0 else "not supported" if low >= 1.0 else "mixed"


SEARCH_FINDS_BETTER = Rule(
    claim="A search for initialization, clipping and normalization finds settings that "
    "avoid the plateau the default falls into.",
    text=(
        "supported when the confirmed best setting's steps to target, over the default's on "
        "the same fresh seeds, has a 95 % bootstrap interval below 1; not supported when the "
        "interval is at or above 1; mixed when it straddles 1"
    ),
    decide=search_finds_better,
)

RULES = {
    "where_training_stops": WHERE_TRAINING_STOPS,
    "noise_escapes_saddles": NOISE_ESCAPES_SADDLES,
    "plateaus_follow_init_scale": PLATEAUS_FOLLOW_INIT_SCALE,
    "remedies_help": REMEDIES_HELP,
    "search_finds_better": SEARCH_FINDS_BETTER,
}
