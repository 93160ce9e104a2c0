"""The diagnosis: analytic points through the public diagnose_point (real probes, no
hand-made eigenvalues), each rule and its sentence, and the misreadings it must not make."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from service.spec import SweepSpec
from workers.config import RunConfig
from workers.diagnose import DEFAULT_THRESHOLDS, VERDICTS, classify, diagnose, diagnose_point
from workers.train import TrainHooks, train

PROBE = {"lanczos_steps": 20}
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class Saddle(nn.Module):
    """f(x, y) = x^2 - y^2 as a 'model' whose output is the loss."""

    def __init__(self, at: tuple[float, float] = (0.0, 0.0)) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(at, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.w[0] ** 2 - self.w[1] ** 2).expand(x.shape[0])


def mean_out(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return out.mean()


def test_x2_minus_y2_at_the_origin_is_a_saddle_with_its_numbers_in_the_sentence():
    x = torch.zeros(4, 1, dtype=torch.float64)
    out = diagnose_point(Saddle(), mean_out, x, x[:, 0], **PROBE)
    assert out["verdict"] == "saddle"
    assert out["evidence"]["lambda_max"] == pytest.approx(2.0)
    assert out["evidence"]["lambda_min"] == pytest.approx(-2.0)
    assert "λmin -2" in out["sentence"] and out["sentence"].endswith("a saddle")


def test_a_moving_point_on_a_saddle_surface_is_not_called_a_saddle():
    """Away from the origin the gradient is large: no stationarity, so no saddle."""
    x = torch.zeros(4, 1, dtype=torch.float64)
    out = diagnose_point(Saddle((0.5, 0.3)), mean_out, x, x[:, 0], **PROBE)
    assert out["verdict"] == "inconclusive", out["sentence"]
    assert out["evidence"]["window_progress_bound"] > DEFAULT_THRESHOLDS["stationary"] * 0.02


def test_a_deep_linear_network_at_zero_init_sits_on_a_saddle():
    """L = 1/2 E||W2 W1 x - A x||^2 at W = 0: zero gradient, Hessian eigenvalues +-s_i(A)."""
    torch.manual_seed(0)
    x = torch.randn(256, 4, dtype=torch.float64)
    a = torch.diag(torch.tensor([3.0, 1.0, 0.5, 0.2], dtype=torch.float64))
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)).double()
    for p in model.parameters():
        nn.init.zeros_(p)
    loss = lambda out, y: 0.5 * ((out - y) ** 2).sum(-1).mean()  # noqa: E731
    out = diagnose_point(model, loss, x, x @ a.T, **PROBE)
    assert out["evidence"]["grad_norm"] < 1e-12
    assert out["verdict"] == "saddle" and out["evidence"]["lambda_min"] < -0.1


def least_squares_at_optimum() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(200, 3, dtype=torch.float64)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64)
    y = y + 0.3 * torch.randn(200, 1, dtype=torch.float64)  # noise floor above any small target
    model = nn.Linear(3, 1).double()
    design = torch.cat([x, torch.ones(200, 1, dtype=torch.float64)], 1)
    solution = torch.linalg.lstsq(design, y).solution
    with torch.no_grad():
        model.weight.copy_(solution[:3].T)
        model.bias.copy_(solution[3])
    return model, x, y


def test_least_squares_at_its_optimum_is_a_local_minimum():
    """A convex problem solved exactly: gradient ~0, all curvature >= 0, loss above zero."""
    model, x, y = least_squares_at_optimum()
    out = diagnose_point(model, nn.functional.mse_loss, x, y, **PROBE)
    assert out["evidence"]["grad_norm"] < 1e-10 and out["evidence"]["lambda_min"] > 0
    assert out["verdict"] == "local_minimum", out["sentence"]


def test_least_squares_off_its_optimum_is_not_a_minimum():
    model, x, y = least_squares_at_optimum()
    with torch.no_grad():
        model.bias.add_(0.5)
    out = diagnose_point(model, nn.functional.mse_loss, x, y, **PROBE)
    assert out["verdict"] not in ("local_minimum", "saddle", "plateau"), out["sentence"]


# --- each rule from its numbers ---------------------------------------------------------

TH = {**DEFAULT_THRESHOLDS, "window": 25, "rel_improvement": 0.02, "target": 0.01}
TH |= {"divergence_factor": 10.0, "divergence_patience": 20}
CURVED = {"lambda_max": 5.0, "window_progress_bound": 1e-6, "escape_per_window": 0.0}


@pytest.mark.parametrize(
    "numbers,expected,words",
    [
        ({"diverged_step": 12, "initial_loss": 2.3}, "diverged", "from step 12"),
        ({"diverged_step": 7, "nonfinite": True}, "diverged", "non-finite at step 7"),
        ({"steps_to_target": 300}, "converged", "at step 300"),
        ({"recent_improvement": 0.2}, "still_improving", "20 %"),
        ({"recent_improvement": -0.2}, "unstable", "rose 20 %"),
        ({"full_batch": True, "rise_fraction": 0.4}, "unstable", "oscillating"),
        (
            {"full_batch": True, "rise_fraction": 0.4, "sharpness": 1.05},
            "edge_of_stability",
            "1.05",
        ),
        # no probe: plateau from the curve and the logged norms, curvature unknown
        ({"window_progress_bound": 1e-3}, "plateau", "curvature unknown"),
        ({"window_progress_bound": 0.5}, "inconclusive", "add probes"),
        ({}, "inconclusive", "no gradient"),
        (CURVED | {"lambda_min": 0.1}, "local_minimum", "λmin 0.1"),
        (CURVED | {"lambda_min": -1.0}, "saddle", "λmin -1"),
        # an unconverged λmin can prove a saddle but not a minimum
        (CURVED | {"lambda_min": -1.0, "lambda_min_converged": False}, "saddle", "λmin -1"),
        (
            CURVED | {"lambda_min": 0.1, "lambda_min_converged": False},
            "inconclusive",
            "has not converged",
        ),
        # clearly negative curvature, but the point moves: not a saddle
        (CURVED | {"lambda_min": -1.0, "window_progress_bound": 0.3}, "inconclusive", "noise"),
        # lambda_min negative but within its Ritz residual: cannot tell
        (
            CURVED | {"lambda_min": -0.01, "lambda_min_residual": 0.1},
            "inconclusive",
            "cannot be told apart",
        ),
        # small, non-zero gradient and flat curvature
        (
            CURVED | {"lambda_min": -1e-4, "window_progress_bound": 1e-3},
            "plateau",
            "a plateau",
        ),
        # small gradient but a negative direction strong enough to leave by within a window
        (
            CURVED | {"lambda_min": -1.0, "window_progress_bound": 1e-3, "escape_per_window": 5.0},
            "inconclusive",
            "leaving a saddle",
        ),
    ],
)
def test_each_rule_and_its_sentence(numbers, expected, words):
    verdict, sentence = classify(numbers, TH)
    assert verdict == expected and verdict in VERDICTS
    assert words in sentence, sentence


# --- the misreadings of a real run ------------------------------------------------------


def run(spec: dict, probe_end: bool = False) -> tuple:
    from workers.probing import probe_run

    config = RunConfig.model_validate(spec)
    probes: list[dict] = []
    hooks = TrainHooks(on_probe=lambda c: probes.append(probe_run(config, c)))
    result = train(config, hooks if probe_end else None)
    return result, diagnose(result, config, probes[-1] if probes else None)


@pytest.mark.slow
def test_edge_of_stability_full_batch_gd_is_not_a_saddle_plateau_or_minimum():
    """Full-batch GD, tanh MLP, MSE on one-hot digits, lr 0.3: λmax climbs to 2/lr and
    the loss oscillates (Cohen et al. 2021); the gradient stays ~0.2-0.5."""
    spec = {
        "task": {"name": "digits", "n_train": 500},
        "architecture": {"name": "mlp", "depth": 2, "width": 64, "activation": "tanh"},
        "optimizer": {"name": "sgd", "lr": 0.3},
        "loss": "mse",
        "budget": {"steps": 1500, "full_batch": True, "eval_every": 1500},
        "target": {"loss": 0.01},
        "probes": {"at": ["end"], "measure": ["eigenvalues"], "k": 1},
    }
    result, diagnosis = run(spec, probe_end=True)
    ev = diagnosis["evidence"]
    assert diagnosis["verdict"] in ("edge_of_stability", "unstable"), diagnosis["sentence"]
    assert ev["sharpness"] == pytest.approx(1.0, abs=0.2)  # λmax·η/2 ≈ 1
    assert ev["grad_norm"] > 1e-2


def test_a_blown_up_run_is_diverged_with_its_step():
    """examples/clipping_high_lr.yaml, lr 0.5 without clipping, seed 0: cross-entropy stays
    finite while the logits blow up (loss 2.3 -> ~100); the held-above rule stops it."""
    example = yaml.safe_load((EXAMPLES / "clipping_high_lr.yaml").read_text())
    (config,) = [
        c
        for c in SweepSpec.model_validate(example).expand()
        if c.optimizer.lr == 0.5 and c.grad_clip is None and c.seed == 0
    ]
    result, diagnosis = run(config.model_dump(mode="json"))
    assert result.outcome == "diverged" and diagnosis["verdict"] == "diverged"
    step = result.diverged_step
    assert step is not None and step < 100
    # the loss from that step on was held above 10x the first step's loss (the 20th such
    # step stops the run before its update, so 19 steps were trained above the bound)
    held = result.losses[step:]
    assert len(held) == 19 and min(held) > 10 * result.losses[0]
    assert result.losses[step - 1] <= 10 * result.losses[0]
    assert f"from step {step}" in diagnosis["sentence"]
    assert all(math.isfinite(x) for x in result.losses)


@pytest.mark.slow
@pytest.mark.parametrize(
    "steps,expected",
    [
        # on the second plateau (loss ~2.5, steps ~830-1290): small gradient, weak λmin
        (1200, "plateau"),
        # still at the origin's saddle (loss ~10.5): gradient ~1e-4 of what moves the loss,
        # λmin clearly negative (Saxe et al. 2014: small init starts near that saddle)
        (600, "saddle"),
    ],
)
def test_a_small_init_deep_linear_net_on_a_plateau_and_at_the_saddle(steps, expected):
    spec = {
        "task": {"name": "deep_linear", "n_train": 256, "singular_values": [4.0, 2.0, 1.0]},
        "architecture": {"name": "deep_linear", "depth": 4, "width": 16},
        "optimizer": {"name": "sgd", "lr": 0.02},
        "init": {"name": "orthogonal", "scale": 0.2},
        "budget": {"steps": steps, "batch_size": 256, "log_every": 10, "eval_every": 500},
        "target": {"loss": 0.01},
        "probes": {"at": ["end"], "k": 1, "measure": ["eigenvalues"]},
    }
    result, diagnosis = run(spec, probe_end=True)
    assert diagnosis["verdict"] == expected, diagnosis["sentence"]
    assert diagnosis["evidence"]["effective_lr"] == pytest.approx(0.02)
