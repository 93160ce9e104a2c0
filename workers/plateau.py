"""Plateau detection on a loss curve: where training stops making progress, and for how long.

Definition (parameters in `PlateauThresholds`, stored with every result; W = `window`,
r = `rel_improvement`, b = `band`, beta = `smoothing`):

- s_t is the bias-corrected EMA of the training loss L_t:
  m_t = beta m_{t-1} + (1 - beta) L_t,  s_t = m_t / (1 - beta^(t+1)).
- Step t (t >= W) is *flat* when the smoothed loss improved by less than r over the last W
  steps while still above the target:  s_{t-W} - s_t < r * s_{t-W}  and  s_t > target.
- A plateau *opens* at its first flat step t0, with level ell = s_{t0}. Its start reaches
  back from t0 over the steps whose smoothed loss already lay within the level's band
  [ell (1 - b), ell (1 + b)] (never into the previous plateau): that is where progress
  stopped.
- While open, its level ell is the mean of s over its flat steps, and it lasts as long as s
  stays within the band. Noise does not split it (hysteresis and the gap rule): an
  excursion starts when s leaves the band and ends only when s is back in the inner band
  [ell (1 - b/2), ell (1 + b/2)]; an excursion that ends within W steps is part of the
  plateau. The plateau ends at the step before the first excursion that lasts more than W
  steps, or at the end of training. (Without the inner band, a loss leaving its level
  slowly crosses the band's edge back and forth for tens of steps.)
- It counts when it spans at least `min_length` steps and at least half of its steps are
  flat (a slow descent can stay within a band for a while; it is not a plateau).
- It is *escaped* when the smoothed loss later falls below ell (1 - b): clearly below its
  level, beyond the band that noise moves in. A plateau that lasts to the end of training,
  or that ends by the loss rising out of its band and never falling below it, is not escaped.

One forward pass computes it, so the same `PlateauTracker` runs online during training (to
probe a run when it has sat on a plateau for `min_length` steps, and to tell a study's
pruner how long the run has sat there) and offline over the finished curve; the stored
segments, and the shading drawn from them, are its closed plateaus.

Seeded example: a curve that descends, sits at 0.5 with noise, then descends again::

    >>> import random
    >>> rng = random.Random(0)
    >>> curve = ([2.0 - 0.01 * t for t in range(150)] + [0.5 + rng.uniform(-0.02, 0.02)
    ...          for _ in range(400)] + [0.5 * 0.99 ** t for t in range(300)])
    >>> out = detect_plateaus(curve, target=0.01, thresholds=dict(window=50,
    ...     rel_improvement=0.01, min_length=100, band=0.1, smoothing=0.9))
    >>> [(s["start"], s["end"], round(s["level"], 2), s["escaped"]) for s in out["segments"]]
    [(155, 568, 0.5, True)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Segment:
    start: int  # first step of the plateau
    end: int  # last step of the plateau (inclusive)
    level: float  # mean smoothed loss over the plateau's flat steps
    mean_grad_norm: float | None  # mean global gradient norm over logged steps inside it
    escaped: bool

    @property
    def length(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True)
class OnPlateau:
    """The plateau a run sits on now (online): where it started, how long, at what level."""

    start: int
    length: int
    level: float


@dataclass
class _Open:
    start: int
    flat_sum: float
    flat_count: int
    out_since: int | None = None  # first step of the current excursion out of the band
    reported: bool = False

    @property
    def level(self) -> float:
        return self.flat_sum / self.flat_count


class PlateauTracker:
    """Feeds on one loss value per step; keeps the plateaus of the definition above."""

    def __init__(
        self,
        *,
        target: float,
        window: int,
        rel_improvement: float,
        min_length: int,
        band: float,
        smoothing: float,
        **_: Any,
    ) -> None:
        self.target, self.window, self.rel = target, window, rel_improvement
        self.min_length, self.band, self.beta = min_length, band, smoothing
        self.smoothed: list[float] = []
        self.flat: list[bool] = []
        self.reached: int | None = None  # first step whose smoothed loss is <= target
        self.closed: list[tuple[int, int, float]] = []  # (start, end, level), >= min_length
        self._m = 0.0
        self._open: _Open | None = None
        self._floor = 0  # a new plateau never reaches back before this step

    def _in_band(self, s: float, level: float, band: float | None = None) -> bool:
        band = self.band if band is None else band
        return level * (1 - band) <= s <= level * (1 + band)

    def update(self, loss: float) -> bool:
        """Add L_t; True exactly once per plateau, at the step it reaches min_length."""
        t = len(self.smoothed)
        self._m = self.beta * self._m + (1 - self.beta) * loss
        s = self._m / (1 - self.beta ** (t + 1))
        self.smoothed.append(s)
        if self.reached is None and s <= self.target:
            self.reached = t
        flat = False
        if t >= self.window:
            before = self.smoothed[t - self.window]
            flat = (before - s) < self.rel * abs(before) and s > self.target
        self.flat.append(flat)

        plateau = self._open
        if plateau is not None:
            inner = self._in_band(s, plateau.level, self.band / 2)
            if plateau.out_since is None and self._in_band(s, plateau.level) or inner:
                plateau.out_since = None
                if flat:
                    plateau.flat_sum += s
                    plateau.flat_count += 1
            else:
                plateau.out_since = t if plateau.out_since is None else plateau.out_since
                if t - plateau.out_since + 1 > self.window:
                    self._close(plateau.out_since - 1)
                    plateau = None
        if plateau is None and flat:
            start = t
            while start - 1 >= self._floor and self._in_band(self.smoothed[start - 1], s):
                start -= 1
            plateau = self._open = _Open(start=start, flat_sum=s, flat_count=1)
        if plateau is None or plateau.reported:
            return False
        plateau.reported = self.current() is not None
        return plateau.reported

    def _close(self, end: int) -> None:
        plateau = self._open
        assert plateau is not None
        length = end - plateau.start + 1
        flat_steps = sum(self.flat[plateau.start : end + 1])
        if length >= self.min_length and 2 * flat_steps >= length:
            self.closed.append((plateau.start, end, plateau.level))
        self._floor = end + 1
        self._open = None

    def current(self) -> OnPlateau | None:
        """The plateau the run sits on now, once it has lasted min_length steps; else None."""
        plateau = self._open
        if plateau is None or plateau.out_since is not None:
            return None
        length = len(self.smoothed) - plateau.start
        if length < self.min_length or 2 * sum(self.flat[plateau.start :]) < length:
            return None
        return OnPlateau(plateau.start, length, plateau.level)

    def finish(self) -> list[tuple[int, int, float]]:
        """Close the open plateau at the end of training; all plateaus (start, end, level)."""
        plateau = self._open
        if plateau is not None:
            last = len(self.smoothed) - 1
            self._close(last if plateau.out_since is None else plateau.out_since - 1)
        return self.closed

    def first_below(self, level: float) -> int | None:
        """First step whose smoothed loss is at or below `level` (steps to target)."""
        return next((t for t, s in enumerate(self.smoothed) if s <= level), None)


def detect_plateaus(
    losses: Sequence[float],
    *,
    target: float,
    thresholds: dict[str, Any],
    grad_norms: dict[int, float] | None = None,
) -> dict[str, Any]:
    """Plateau segments and summary statistics of a finished loss curve (one value a step)."""
    tracker = PlateauTracker(target=target, **thresholds)
    for loss in losses:
        tracker.update(loss)
    n, smoothed = len(losses), tracker.smoothed
    segments: list[Segment] = []
    for start, end, level in tracker.finish():
        inside = [g for s, g in (grad_norms or {}).items() if start <= s <= end]
        escaped = any(s < level * (1 - tracker.band) for s in smoothed[end + 1 :])
        segments.append(
            Segment(start, end, level, sum(inside) / len(inside) if inside else None, escaped)
        )
    on_plateau = sum(s.length for s in segments)
    return {
        "segments": [asdict(s) | {"length": s.length} for s in segments],
        "plateau_fraction": on_plateau / n if n else 0.0,
        "longest_plateau": max((s.length for s in segments), default=0),
        "escaped": all(s.escaped for s in segments) if segments else None,
        "steps_to_target": tracker.reached,
        "thresholds": dict(thresholds),
    }
