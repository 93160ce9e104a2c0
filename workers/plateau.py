"""Plateau detection on a loss curve.

Definition (all parameters in `PlateauThresholds`, stored with every result):
- s_t is the bias-corrected EMA of the training loss L_t with factor beta (`smoothing`):
  m_t = beta m_{t-1} + (1 - beta) L_t,  s_t = m_t / (1 - beta^(t+1)).
- Step t (t >= W, W = `window`) is *flat* when the smoothed loss improved by less than the
  relative threshold r over the last W steps while still above the target:
  s_{t-W} - s_t < r * s_{t-W}  and  s_t > target.
- A plateau is a maximal stretch of consecutive flat steps, extended back by W (the window
  that first looked flat), kept when it spans at least `min_length` steps.
- A plateau is *escaped* when the smoothed loss later falls below `escape_factor` times the
  plateau's mean level.

The same `PlateauTracker` runs online during training (to probe a run when it enters a
plateau) and offline over the finished curve (for the result), so both agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Segment:
    start: int  # first step of the plateau
    end: int  # last step of the plateau (inclusive)
    level: float  # mean smoothed loss over the plateau
    mean_grad_norm: float | None  # mean global gradient norm over logged steps inside it
    escaped: bool

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class PlateauTracker:
    """Feeds on one loss value per step; says when a plateau of min_length is entered."""

    def __init__(
        self,
        *,
        target: float,
        window: int,
        rel_improvement: float,
        min_length: int,
        smoothing: float,
        **_: Any,
    ) -> None:
        self.target, self.window, self.rel = target, window, rel_improvement
        self.min_length, self.beta = min_length, smoothing
        self.smoothed: list[float] = []
        self._m = 0.0
        self.flat: list[bool] = []
        self._run_start: int | None = None  # first flat step of the current flat stretch
        self._reported = False

    def update(self, loss: float) -> bool:
        """Add L_t; True exactly once per plateau, at the step it reaches min_length."""
        t = len(self.smoothed)
        self._m = self.beta * self._m + (1 - self.beta) * loss
        s = self._m / (1 - self.beta ** (t + 1))
        self.smoothed.append(s)
        flat = False
        if t >= self.window:
            before = self.smoothed[t - self.window]
            flat = (before - s) < self.rel * abs(before) and s > self.target
        self.flat.append(flat)
        if not flat:
            self._run_start, self._reported = None, False
            return False
        if self._run_start is None:
            self._run_start = t
        entered = not self._reported and t - (self._run_start - self.window) + 1 >= self.min_length
        self._reported = self._reported or entered
        return entered

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
    window, n = tracker.window, len(losses)
    segments: list[Segment] = []
    t = 0
    while t < n:
        if not tracker.flat[t]:
            t += 1
            continue
        run_start = t
        while t < n and tracker.flat[t]:
            t += 1
        start, end = max(0, run_start - window), t - 1
        if segments and start <= segments[-1].end:  # overlapping windows: one plateau
            start = segments.pop().start
        if end - start + 1 < tracker.min_length:
            continue
        level = sum(tracker.smoothed[start : end + 1]) / (end - start + 1)
        inside = [g for s, g in (grad_norms or {}).items() if start <= s <= end]
        later = tracker.smoothed[end + 1 :]
        escaped = bool(later) and min(later) < thresholds["escape_factor"] * level
        segments.append(
            Segment(start, end, level, sum(inside) / len(inside) if inside else None, escaped)
        )
    on_plateau = sum(s.length for s in segments)
    return {
        "segments": [asdict(s) | {"length": s.length} for s in segments],
        "plateau_fraction": on_plateau / n if n else 0.0,
        "longest_plateau": max((s.length for s in segments), default=0),
        "escaped": all(s.escaped for s in segments) if segments else None,
        "steps_to_target": tracker.first_below(target),
        "thresholds": dict(thresholds),
    }
