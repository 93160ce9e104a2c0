"""Plateau segments: one plateau is one segment, noise does not split it, `escaped` means
the loss fell clearly below it, and the descent between plateaus is not a plateau."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from workers.config import PlateauThresholds, RunConfig
from workers.plateau import PlateauTracker, detect_plateaus
from workers.train import train

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "deep_linear_init_scale.yaml"
DEFAULTS = PlateauThresholds().model_dump()


def segments(losses, thresholds=None, target=0.01):
    out = detect_plateaus(losses, target=target, thresholds=thresholds or DEFAULTS)
    return out["segments"], out


def noisy_level(rng: random.Random, level: float, n: int, noise: float) -> list[float]:
    return [level * (1 + rng.uniform(-noise, noise)) for _ in range(n)]


def descent(start: float, end: float, n: int) -> list[float]:
    return [start * (end / start) ** (t / (n - 1)) for t in range(n)]


def test_noise_at_the_plateau_level_does_not_split_it():
    rng = random.Random(0)
    curve = descent(5.0, 1.0, 100) + noisy_level(rng, 1.0, 900, 0.15) + descent(1.0, 0.01, 100)
    found, _ = segments(curve)
    assert len(found) == 1, found
    (seg,) = found
    assert 95 <= seg["start"] <= 140 and 990 <= seg["end"] <= 1030
    assert seg["level"] == pytest.approx(1.0, rel=0.05) and seg["escaped"]


def test_a_plateau_lasting_to_the_end_is_not_escaped():
    rng = random.Random(1)
    curve = descent(5.0, 1.0, 100) + noisy_level(rng, 1.0, 400, 0.05)
    (seg,), out = segments(curve)
    assert seg["end"] == len(curve) - 1 and seg["escaped"] is False
    assert out["escaped"] is False and out["longest_plateau"] == seg["length"]


def test_a_plateau_left_upwards_is_not_escaped():
    rng = random.Random(2)
    curve = descent(5.0, 1.0, 100) + noisy_level(rng, 1.0, 300, 0.02) + descent(1.0, 3.0, 100)
    curve += noisy_level(rng, 3.0, 200, 0.02)
    found, _ = segments(curve)
    assert found[0]["level"] == pytest.approx(1.0, rel=0.05) and not found[0]["escaped"]


def test_a_steady_descent_is_not_a_plateau():
    """5 % per window: slow, but progress; and a fast staircase descent between levels."""
    rng = random.Random(3)
    steady = [x * (1 + rng.uniform(-0.01, 0.01)) for x in descent(10.0, 0.02, 3000)]
    assert segments(steady)[0] == []
    stairs = noisy_level(rng, 10.0, 300, 0.03) + descent(10.0, 2.0, 60)
    stairs += noisy_level(rng, 2.0, 300, 0.03) + descent(2.0, 0.005, 60)
    found, out = segments(stairs)
    assert [round(s["level"]) for s in found] == [10, 2]
    # the descents (steps 300-360 and 660-720) lie outside every segment, up to the band's
    # edge and the smoothing lag (the loss needs ~10 % of a descent to leave a band)
    assert found[0]["end"] < 320 and found[1]["start"] > 340 and found[1]["end"] < 680
    assert out["plateau_fraction"] == pytest.approx(sum(s["length"] for s in found) / len(stairs))


def test_the_online_tracker_agrees_with_the_stored_segments():
    rng = random.Random(4)
    curve = descent(5.0, 1.0, 100) + noisy_level(rng, 1.0, 500, 0.05) + descent(1.0, 0.01, 100)
    tracker = PlateauTracker(target=0.01, **DEFAULTS)
    entered = [t for t, loss in enumerate(curve) if tracker.update(loss)]
    (seg,), _ = segments(curve)
    # entered once, once it has lasted min_length steps and half of them were flat (the
    # noise makes some steps not flat), and `current` says where it began
    min_length = DEFAULTS["min_length"]
    assert len(entered) == 1
    assert seg["start"] + min_length - 1 <= entered[0] <= seg["start"] + 2 * min_length
    tracker = PlateauTracker(target=0.01, **DEFAULTS)
    for loss in curve[:400]:
        tracker.update(loss)
    now = tracker.current()
    assert now is not None and now.start == seg["start"] and now.length == 400 - seg["start"]


def deep_linear_run(scale: float, plateau: dict | None = None) -> list[float]:
    spec = yaml.safe_load(EXAMPLE.read_text())
    config = RunConfig.model_validate(
        {
            "task": spec["task"],
            "architecture": spec["architectures"][0],
            "optimizer": spec["optimizers"][0],
            "init": {"name": "orthogonal", "scale": scale},
            "seed": 0,
            "budget": spec["budget"],
            "target": spec["target"],
        }
    )
    return train(config).losses


@pytest.fixture(scope="module")
def example_scale_02() -> list[float]:
    return deep_linear_run(0.2)


@pytest.mark.parametrize("which", ["example", "defaults"])
def test_the_deep_linear_example_plateau_at_half_is_one_segment(example_scale_02, which):
    """examples/deep_linear_init_scale.yaml, seed 0, scale 0.2: the loss sits at ~0.50 from
    step ~1400 to ~2230 (one plateau per singular mode, Saxe et al. 2014)."""
    spec = yaml.safe_load(EXAMPLE.read_text())
    thresholds = PlateauThresholds.model_validate(
        spec["plateau"] if which == "example" else {}
    ).model_dump()
    found, out = segments(example_scale_02, thresholds)
    tracker = PlateauTracker(target=0.01, **thresholds)
    for loss in example_scale_02:
        tracker.update(loss)
    below = next(t for t, s in enumerate(tracker.smoothed) if s < 0.45)
    at_half = [s for s in found if 0.45 <= s["level"] <= 0.55]
    assert len(at_half) == 1, found
    (seg,) = at_half
    assert abs(seg["end"] - below) <= 30, (seg, below)
    assert seg["escaped"] and seg["length"] > 700
    # the three plateaus of the staircase (levels ~10.5, ~2.5, ~0.5), each one segment
    assert [round(s["level"], 1) for s in found] == [10.5, 2.5, 0.5]
    assert out["longest_plateau"] == max(s["length"] for s in found)


@pytest.mark.slow
def test_the_defaults_find_the_short_first_plateau_of_a_small_init_deep_linear_net():
    """Scale 0.35: the net sits at loss ~10.3 for ~150 steps before learning the first mode;
    window 50 / 1 % / 100 steps (the old defaults) found nothing here."""
    losses = deep_linear_run(0.35)
    found, _ = segments(losses)
    assert found and found[0]["start"] == 0 and 100 <= found[0]["length"] <= 200, found
    assert found[0]["level"] == pytest.approx(10.3, rel=0.05) and found[0]["escaped"]
    old = DEFAULTS | {"window": 50, "rel_improvement": 0.01, "min_length": 100}
    assert segments(losses, old)[0] == []
