"""Published results about plateaus, saddles and curvature, reproduced through the product.

Each test runs a sweep spec from examples/validation/ the way a user's sweep runs: the YAML
is validated and expanded by `service.spec.SweepSpec`, every RunConfig is trained by
`workers.train.train`, landscape probes come from `workers.probing.probe_run` through
`TrainHooks(on_probe=...)`, verdicts from `workers.diagnose`; one test runs a spec through
`plateau run` end to end (SQLite + local Ray) and reads the results from the database.

Every assertion states its tolerance and why next to it. The measured numbers are printed
(`pytest tests/validation -s`); docs/VALIDATION.md tabulates them with the paper and figure
each test reproduces.
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import subprocess
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from torch import nn

from service.spec import SweepSpec, load_spec_document
from tests.conftest import ROOT, plateau_cmd
from workers.config import RunConfig
from workers.diagnose import diagnose, diagnose_point
from workers.probing import probe_run
from workers.tasks import loss_fn
from workers.train import ProbeContext, TrainHooks, TrainResult, build, train

SPECS = ROOT / "examples" / "validation"


def expand(spec_file: str) -> list[RunConfig]:
    """The runs of a validation spec, exactly as `plateau run` would queue them."""
    return SweepSpec.model_validate(load_spec_document(SPECS / spec_file)).expand()


def report(test: str, **numbers: Any) -> None:
    """One line per measurement, for docs/VALIDATION.md (visible with pytest -s)."""
    shown = ", ".join(f"{k}={v}" for k, v in numbers.items())
    print(f"\n[validation] {test}: {shown}")


def run_with_probes(config: RunConfig) -> tuple[TrainResult, list[dict[str, Any]]]:
    """Train one run in-process, probing where its spec asks (as a worker does)."""
    probes: list[dict[str, Any]] = []
    result = train(config, TrainHooks(on_probe=lambda ctx: probes.append(probe_run(config, ctx))))
    return result, probes


# --- Saxe, McClelland & Ganguli (2014) --------------------------------------------------


def saxe_half_time(s: float, u0: float, lr: float) -> float:
    """Steps until a mode of strength s is half learned (u: u0 -> s/2), Saxe et al. 2014.

    One hidden layer, whitened inputs, loss 1/2 E||W2 W1 x - A x||^2 (workers/tasks.py), a
    mode's input and output weight vectors a = W1 v, b = W2^T u balanced, u = a.b. Gradient
    descent with step lr is, to first order in lr, the flow tau du/dt = 2 u (s - u) with
    tau = 1/lr steps, whose solution gives t = (tau / 2s) ln(uf (s - u0) / (u0 (s - uf)));
    here uf = s/2.
    """
    uf = s / 2
    return math.log(uf * (s - u0) / (u0 * (s - uf))) / (2 * s * lr)


def saxe_discrete_half_time(s: float, u0: float, lr: float) -> int:
    """The same balanced mode under gradient descent itself: with a = b = x (x^2 = u) each
    step is x <- x + lr x (s - x^2); steps until x^2 >= s/2."""
    x, steps = math.sqrt(u0), 0
    while x * x < s / 2:
        x, steps = x + lr * x * (s - x * x), steps + 1
    return steps


def saxe_initial_strengths(config: RunConfig) -> list[float]:
    """u0 of each mode at the run's own initialization (strongest mode first).

    The target map is A = E[y x^T] (inputs whitened); its SVD gives the modes (u_i, s_i, v_i).
    A mode starts with a = W1 v_i, b = W2^T u_i, of length `scale` each under the
    orthogonal init, at a random angle. Near the origin a + b grows (rate lr s_i) and a - b
    decays, so the mode leaves the origin as a balanced one with u0 = |a + b|^2 / 4
    (scale^2 / 2 on average; the angle, cos ~ ±1/sqrt(width), moves it by ~±25 %).
    `build` draws the same seeded weights that `train` starts from.
    """
    data, model = build(config.model_copy(update={"dtype": "float64"}), torch.device("cpu"))
    target_map = data.y_train.T @ data.x_train / len(data.x_train)  # (out, in) = A
    left, _, right_t = torch.linalg.svd(target_map)
    w1, w2 = (m.weight.detach() for m in model.modules() if isinstance(m, nn.Linear))
    modes = range(len(config.task.singular_values))
    return [float((w1 @ right_t[i] + w2.T @ left[:, i]).pow(2).sum() / 4) for i in modes]


def half_learned_loss(singular_values: Sequence[float], i: int) -> float:
    """The loss when modes before i are learned, mode i is half learned, later ones not yet:
    L = 1/2 sum_j (s_j - u_j)^2 over modes (the loss of whitened inputs)."""
    return 0.5 * (singular_values[i] / 2) ** 2 + 0.5 * sum(s**2 for s in singular_values[i + 1 :])


def first_step_at_or_below(losses: Sequence[float], level: float) -> int | None:
    """Number of gradient steps taken when the full-batch loss first reaches `level`."""
    return next((t for t, loss in enumerate(losses) if loss <= level), None)


def saxe_mode_times(config: RunConfig, losses: Sequence[float]) -> dict[str, list[Any]]:
    """Steps until each mode is half learned, strongest first: Saxe's closed form, its
    discrete-time counterpart, and measured (where the loss crosses half_learned_loss)."""
    svs, lr = config.task.singular_values, config.optimizer.lr
    u0 = saxe_initial_strengths(config)
    return {
        "closed_form": [saxe_half_time(s, u, lr) for s, u in zip(svs, u0, strict=True)],
        "discrete": [saxe_discrete_half_time(s, u, lr) for s, u in zip(svs, u0, strict=True)],
        "measured": [first_step_at_or_below(losses, half_learned_loss(svs, i)) for i in range(3)],
    }


def check_saxe_mode_times(times: dict[str, list[Any]]) -> None:
    measured, closed_form = times["measured"], times["closed_form"]
    assert None not in measured, measured
    for t, t_flow, t_gd in zip(measured, closed_form, times["discrete"], strict=True):
        # 3 %: the closed form is gradient flow; a step of lr multiplies the growth rate
        # 2 lr s of ln u by ln(1 + lr s) / (lr s): learning is 2 % slower at lr s = 0.04
        # (s = 4), 1 % at s = 2, 0.5 % at s = 1 (seen: +0.6 % .. +2.1 %).
        assert t == pytest.approx(t_flow, rel=0.03)
        # 1 %: against the same dynamics in discrete time, what is left is the decaying
        # a - b part of each mode, the modes' coupling through their initial overlaps,
        # and the one-step resolution (seen: -0.5 % .. +0.6 %).
        assert t == pytest.approx(t_gd, rel=0.01)
    for i in range(len(measured) - 1):
        # The ratio of learning times, ~ s_{i+1} / s_i (the 1/s law) up to the logs: 2 %,
        # the difference of two modes' step-size biases (2 % and 1 %; seen: <= 1.3 %).
        assert measured[i] / measured[i + 1] == pytest.approx(
            closed_form[i] / closed_form[i + 1], rel=0.02
        )


@pytest.fixture(scope="module")
def saxe_runs() -> list[tuple[RunConfig, TrainResult]]:
    """examples/validation/saxe_learning_times.yaml, trained (no probes: timing only)."""
    return [(config, train(config)) for config in expand("saxe_learning_times.yaml")]


@pytest.mark.slow  # the saxe_runs fixture trains 6 runs: 3-6 s on 2 cores
def test_saxe_mode_learning_times_follow_the_exact_solution(saxe_runs):
    """Saxe, McClelland & Ganguli (2014), "Exact solutions to the nonlinear dynamics of
    learning in deep linear neural networks" (ICLR; arXiv:1312.6120), the three-layer
    solution and Fig. 2 (simulated mode strengths on the analytic curves): the mode of
    strength s is learned after t = (tau / 2s) ln(uf (s - u0) / (u0 (s - uf))) steps,
    strong modes first, the time about 1/s at equal u0. Predicted from each mode's u0 at the
    run's initialization (saxe_initial_strengths); measured where the loss crosses its value
    with that mode half learned (modes before it learned, after it untouched)."""
    for config, result in saxe_runs:
        times = saxe_mode_times(config, result.losses)
        measured = times["measured"]
        report(
            "saxe learning times",
            scale=config.init.scale,
            seed=config.seed,
            closed_form=[round(t, 1) for t in times["closed_form"]],
            discrete=times["discrete"],
            measured=measured,
            ratios=[round(a / b, 3) for a, b in zip(measured, measured[1:], strict=False)],
        )
        check_saxe_mode_times(times)


@pytest.mark.slow  # through saxe_runs when it runs first
def test_saxe_plateau_grows_with_log_of_the_init_scale(saxe_runs):
    """Saxe et al. (2014), the three-layer solution: with one hidden layer the time on the
    plateau at the origin is (1 / 2 lr s) ln(1 / u0) + const, and u0 is proportional to
    scale^2 (one seed draws the same orthogonal matrices at every scale, see
    saxe_initial_strengths), so each e-fold smaller scale adds 1 / (lr s_max) steps to the
    first plateau: logarithmic growth. Measured on the plateau segments the product stores
    (workers/plateau.py)."""
    by_seed: dict[int, list[tuple[float, dict[str, Any]]]] = {}
    for config, result in saxe_runs:
        first = result.plateaus["segments"][0]
        by_seed.setdefault(config.seed, []).append((config.init.scale, first))
    config = saxe_runs[0][0]
    svs, lr = config.task.singular_values, config.optimizer.lr
    per_efold = 1 / (lr * max(svs))
    level = 0.5 * sum(s**2 for s in svs)  # the loss at the origin
    for seed, runs in by_seed.items():
        runs.sort(key=lambda r: -r[0])  # largest scale first
        lengths = [seg["length"] for _, seg in runs]
        slopes = [
            (b["length"] - a["length"]) / math.log(sa / sb)
            for (sa, a), (sb, b) in zip(runs, runs[1:], strict=False)
        ]
        report(
            "saxe plateau vs log scale",
            seed=seed,
            scales=[s for s, _ in runs],
            lengths=lengths,
            steps_per_efold=[round(x, 1) for x in slopes],
            predicted=per_efold,
        )
        assert lengths == sorted(lengths) and len(set(lengths)) == len(lengths)  # monotone
        for _, seg in runs:
            assert seg["start"] == 0 and seg["escaped"] is True
            # 1 %: the level is the mean smoothed loss over the plateau's flat steps; the
            # strongest mode's growth lowers it by under 0.5 % before the plateau ends.
            assert seg["level"] == pytest.approx(level, rel=0.01)
        for slope in slopes:
            # 5 %: the plateau ends at a fixed mode strength whatever the scale, so the
            # difference isolates the growth rate: 2 ln(1 + lr s) per step instead of
            # 2 lr s (2 % at lr s = 0.04), plus the detector's 1-step resolution over
            # ~60-step differences (seen: +0.8 % .. +2.4 %).
            assert slope == pytest.approx(per_efold, rel=0.05)


@pytest.mark.slow
def test_saxe_deep_net_plateaus_sit_at_the_predicted_levels_and_grow_as_a_power_of_scale():
    """Saxe et al. (2014), deeper networks and staged learning: a net with 4
    hidden layers (D = 5 weight matrices) learns the modes one at a time, resting on a
    plateau at L = 1/2 sum_{j >= i} s_j^2 before mode i (10.5, 2.5, 0.5 for s = 4, 2, 1). Near
    the origin its gradient is a homogeneous polynomial of degree D - 1 in the weights, so
    scaling the init by c rescales time by c^-(D - 2) = c^-3: the first plateau grows as a
    power of 1/scale (as against log(1/scale) with one hidden layer). The same seed draws the
    same orthogonal matrices at each scale, so only the scale differs between its runs."""
    runs = [(config, train(config)) for config in expand("saxe_depth4_init_scale.yaml")]
    svs = runs[0][0].task.singular_values
    levels = [0.5 * sum(s**2 for s in svs[i:]) for i in range(len(svs))]
    power = runs[0][0].architecture.depth + 1 - 2  # D - 2
    by_seed: dict[int, list[tuple[float, TrainResult]]] = {}
    for config, result in runs:
        by_seed.setdefault(config.seed, []).append((config.init.scale, result))
        segments = result.plateaus["segments"]
        found = [round(seg["level"], 3) for seg in segments]
        report(
            "saxe depth-4 plateau levels",
            scale=config.init.scale,
            seed=config.seed,
            found=found,
            predicted=levels,
        )
        assert segments and all(seg["escaped"] for seg in segments)
        # 3 %: each level is the mean smoothed loss while the next mode already grows
        # (seen: 0.1-2.2 % below); every plateau found is one of the predicted ones, in order.
        matched = [min(range(len(levels)), key=lambda i: abs(levels[i] - lv)) for lv in found]
        assert matched == sorted(set(matched)), found
        for lv, i in zip(found, matched, strict=True):
            assert lv == pytest.approx(levels[i], rel=0.03)
        if config.init.scale <= 0.25:  # long enough that every plateau is min_length
            assert len(segments) == len(levels), found
    for seed, scaled in by_seed.items():
        scaled.sort(key=lambda r: -r[0])
        (s0, base), *rest = scaled
        for scale, result in rest:
            first, base_first = result.plateaus["segments"][0], base.plateaus["segments"][0]
            ratio = first["length"] / base_first["length"]
            predicted = (s0 / scale) ** power
            report(
                "saxe depth-4 first plateau ratio",
                seed=seed,
                scales=(s0, scale),
                measured=round(ratio, 3),
                predicted=round(predicted, 3),
            )
            # 8 %: the c^-3 law holds while the weights are small enough that the loss is
            # still its value at the origin; the end of the escape, as the mode saturates
            # (~1/(lr s) = 12 steps), does not scale: up to 8 % of the shortest (146-step)
            # plateau (seen: +0.7 % .. +1.0 %).
            assert ratio == pytest.approx(predicted, rel=0.08)


# --- Cohen, Kaur, Li, Kolter & Talwalkar (2021) -----------------------------------------


@pytest.mark.slow
def test_cohen_edge_of_stability_sharpness_rises_to_2_over_lr_and_hovers():
    """Cohen et al. (2021), "Gradient Descent on Neural Networks Typically Occurs at the Edge
    of Stability" (ICLR), Fig. 1: under full-batch gradient descent with step size lr the
    sharpness λmax of the training loss rises (progressive sharpening) until it reaches
    2/lr, the largest curvature gradient descent is stable on in a quadratic, then hovers at
    or just above 2/lr, while the loss keeps falling over long times, non-monotonically.
    λmax from the product's probe (Lanczos on a float64 copy over the whole training set,
    500 samples, so it is the exact training-loss sharpness, not a minibatch estimate); the
    verdict from workers.diagnose.diagnose with the end-of-run probe, as a worker stores it."""
    for config in expand("cohen_edge_of_stability.yaml"):
        lr = config.optimizer.lr
        result, probes = run_with_probes(config)
        assert result.outcome == "succeeded"
        # λmax / (2/lr), each with a Ritz residual that bounds its error: ≤ 1e-6 λmax
        ratios = [(p["step"], p["lambda_max"] * lr / 2) for p in probes]
        assert all(p["data"]["residuals"]["top"][0] <= 1e-6 * p["lambda_max"] for p in probes)
        reached = next(i for i, (_, r) in enumerate(ratios) if r >= 0.95)
        settled = [r for _, r in ratios[reached:]]
        verdict = diagnose(result, config, probes[-1])
        onset_step = ratios[reached][0]
        report(
            "cohen edge of stability",
            lr=lr,
            two_over_lr=round(2 / lr, 2),
            sharpness_x_lr_over_2=[(s, round(r, 3)) for s, r in ratios],
            settled_mean=round(statistics.mean(settled), 3),
            loss_at_onset=round(result.losses[onset_step - 1], 4),
            final_loss=round(result.final_loss, 4),
            verdict=verdict["verdict"],
        )
        # Hovering at or just above 2/lr: every probe after the sharpness first reaches
        # 0.95 * 2/lr lies in [0.9, 1.25] * 2/lr and their mean in [0.97, 1.15] * 2/lr.
        # Asymmetric because Cohen et al. see λmax cross 2/lr and be pushed back from above
        # (seen: means 1.03-1.11, single probes 1.00-1.20).
        assert all(0.9 <= r <= 1.25 for r in settled), settled
        assert 0.97 <= statistics.mean(settled) <= 1.15
        # At the edge the loss still falls over long times, non-monotonically: the final
        # training loss is below 0.8 x the loss when the edge was reached, a fall larger
        # than the loss's largest one-step rise at the edge (seen: up to 12 %), so not an
        # oscillation's phase (seen: 0.73, 0.41, 0.33 x).
        assert result.final_loss < 0.8 * result.losses[onset_step - 1]
        if ratios[0][1] < 0.75:
            # Progressive sharpening, seen where the rise is slower than the first probe:
            # the sharpness climbs from well below 2/lr (< 0.75) by more than 0.2 * 2/lr.
            assert settled[0] - ratios[0][1] > 0.2
        if lr >= 0.2:
            # The verdict: rule 3 of workers/diagnose.py needs the loss to rise in >= 10 %
            # of the last window's steps. At lr >= 0.2 the loss oscillates in every window
            # (28-60 % rises); at lr 0.1 it oscillates in bursts, so its last window decides.
            assert verdict["verdict"] == "edge_of_stability", verdict["sentence"]
            # The verdict quotes the end probe's sharpness (the same number, to rounding).
            assert verdict["evidence"]["sharpness"] == pytest.approx(settled[-1], rel=1e-9)


# --- He, Zhang, Ren & Sun (2015); Glorot & Bengio (2010) ----------------------------------


def layer_std_profile(activation_stats: dict[str, dict[str, float]]) -> list[float]:
    """The std of each hidden layer's output (the ReLUs), in forward order; the last entry
    of activation_stats is the logits (workers/activations.py)."""
    return [stats["std"] for stats in list(activation_stats.values())[:-1]]


def per_layer_factor(stds: list[float]) -> float:
    """Geometric mean of std_{l+1} / std_l over the square (width x width) layers."""
    return (stds[-1] / stds[0]) ** (1 / (len(stds) - 1))


@pytest.mark.slow
def test_he_init_trains_30_relu_layers_where_glorot_stalls():
    """He, Zhang, Ren & Sun (2015), "Delving Deep into Rectifiers" (ICCV), Fig. 3: a 30-layer
    ReLU net converges from their init and "completely stalls" from Glorot & Bengio's (2010,
    Eq. 16). Sec. 2.2, Eq. 9-10: the variance of a layer's output is multiplied by
    1/2 n Var[w] per layer, so the std by sqrt(1/2 n Var[w]): 1 for He's Var[w] = 2/n (Eq. 10)
    and 1/sqrt(2) for Glorot's 2/(n_in + n_out) = 1/n on square layers; over 29 layers that
    is 2^-14.5 ~ 4e-5. Measured: the per-layer activation statistics the product stores at
    initialization (step 0's row), the lowest 10-step mean of the training loss, and the
    final training loss against chance, ln 10 = 2.303 (the loss of constant logits)."""
    chance = math.log(10)
    for config in expand("he_glorot_30_layers.yaml"):
        rows: list[dict[str, Any]] = []
        result = train(config, TrainHooks(on_metrics=rows.extend))
        stds = layer_std_profile(rows[0]["activation_stats"])
        assert rows[0]["step"] == 0 and len(stds) == config.architecture.depth
        losses = result.losses
        best_10 = min(statistics.mean(losses[i : i + 10]) for i in range(len(losses) - 9))
        factor = per_layer_factor(stds)
        verdict = diagnose(result, config, None)["verdict"]
        glorot = config.init.name == "xavier_normal"
        report(
            "he vs glorot",
            init=config.init.name,
            seed=config.seed,
            per_layer_std_factor=round(factor, 3),
            std_first=f"{stds[0]:.3g}",
            std_last=f"{stds[-1]:.3g}",
            best_10_step_loss=round(best_10, 3),
            final_loss=round(result.final_loss, 3),
            verdict=verdict,
        )
        # The per-layer factor, 1/sqrt(2) or 1, within 0.05 (~3 standard deviations): at
        # width n the log of a layer's output variance random-walks with variance ~5/n per
        # layer (Hanin & Rolnick 2018), so the 29-layer mean of log std has sd
        # sqrt(5 * 29 / 128) / 2 / 29 = 0.018 (seen: 0.688-0.717 and 0.973-1.013).
        assert factor == pytest.approx(1 / math.sqrt(2) if glorot else 1.0, abs=0.05)
        if glorot:
            # Stalled at chance: within 0.1 of ln 10 (a net whose last layer sees ~4e-5 of
            # its input signal can only learn the class frequencies, 134-158 of 1,438 per
            # class, worth at most 0.001 below ln 10; seen: 2.292-2.302).
            assert result.final_loss == pytest.approx(chance, abs=0.1)
            assert best_10 > chance - 0.1
            # The product must not call the stall progress. Without a probe the verdict is
            # plateau when the logged minibatch gradient is small, else inconclusive (label
            # noise keeps the last layer's minibatch gradient up; workers/diagnose.py).
            assert verdict in ("plateau", "inconclusive")
        else:
            # Trains: the best 10-step mean falls 0.5 below chance, under 1.8 (seen:
            # 0.08-0.98; SGD with momentum is noisy on a 30-layer net, so the bar is loose).
            assert best_10 < chance - 0.5


# --- Baldi & Hornik (1989), Saxe et al. (2014), Dauphin et al. (2014): saddles -----------


def test_deep_linear_origin_is_a_saddle_with_eigenvalues_plus_minus_s():
    """At W = 0 a linear net with one hidden layer has zero gradient and, with whitened
    inputs, Hessian blocks [[0, -A], [-A^T, 0]] per hidden unit: eigenvalues ±s_i(A). So the
    origin is a saddle with λmin = -s_max (Baldi & Hornik 1989, "Neural networks and
    principal component analysis": a linear net's critical points other than the global
    minimum are saddles; Saxe et al. 2014: learning from a small init starts on this one).
    And the first plateau of training from a small init is that saddle (Dauphin et al. 2014,
    "Identifying and attacking the saddle point problem in high-dimensional non-convex
    optimization", abstract and Sec. 2: saddles are surrounded by high-error plateaus that
    look like local minima): diagnose_point on the live model there says saddle too."""
    configs = expand("saxe_learning_times.yaml")
    config = configs[0].model_copy(update={"dtype": "float64"})  # exact whitening
    data, model = build(config, torch.device("cpu"))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    loss = loss_fn(config.loss, data.loss)
    s_max = max(config.task.singular_values)
    at_origin = diagnose_point(model, loss, data.x_train, data.y_train)
    ev = at_origin["evidence"]
    report(
        "origin saddle",
        verdict=at_origin["verdict"],
        lambda_min=ev["lambda_min"],
        lambda_max=ev["lambda_max"],
        grad_norm=ev["grad_norm"],
        predicted=(-s_max, s_max),
    )
    assert at_origin["verdict"] == "saddle", at_origin["sentence"]
    # 1e-6: Lanczos in float64 stops at Ritz residual 1e-6, which bounds the eigenvalue's
    # error; the data are whitened to float64 precision (E x x^T = I to ~1e-15).
    assert ev["lambda_min"] == pytest.approx(-s_max, abs=1e-6)
    assert ev["lambda_max"] == pytest.approx(s_max, abs=1e-6)
    assert ev["grad_norm"] == 0.0  # every gradient term is a product with a zero matrix

    # Training from the smallest scale: probe where the detector says the plateau began.
    smallest = min(configs, key=lambda c: (c.init.scale, c.seed))
    seen: list[dict[str, Any]] = []

    def on_probe(ctx: ProbeContext) -> None:
        if ctx.trigger == "plateau" and not seen:
            here = copy.deepcopy(ctx.model).to(torch.float64)
            x, y = ctx.data.x_train.to(torch.float64), ctx.data.y_train.to(torch.float64)
            seen.append(diagnose_point(here, ctx.loss, x, y) | {"step": ctx.step})

    train(smallest, TrainHooks(on_probe=on_probe))
    assert seen, "no plateau was probed"
    on_plateau = seen[0]
    ev = on_plateau["evidence"]
    report(
        "plateau saddle",
        scale=smallest.init.scale,
        step=on_plateau["step"],
        verdict=on_plateau["verdict"],
        lambda_min=f"{ev['lambda_min']:.9f}",
        grad_norm=f"{ev['grad_norm']:.2g}",
    )
    assert on_plateau["verdict"] == "saddle", on_plateau["sentence"]
    # 1e-4: 49 steps from a 1e-4 init the strongest mode has grown to
    # u ~ u0 e^(2 lr s t) ~ 5e-9 * e^3.9 ~ 2.5e-7 of its s = 4, and the curvature moves by
    # O(u / s) from the origin's; the loose bound allows for float32 training.
    assert ev["lambda_min"] == pytest.approx(-s_max, rel=1e-4)


# --- the same, through `plateau run` ----------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_saxe_through_the_plateau_run_cli(tmp_path):
    """`plateau run examples/validation/saxe_learning_times.yaml` on a fresh SQLite database
    with a local Ray: the stored curves reproduce Saxe et al.'s learning times (as in
    test_saxe_mode_learning_times_follow_the_exact_solution), the stored plateau probe finds
    the saddle at the origin (λmin = -s_max, Dauphin et al. 2014), every run is stored as
    converged."""
    from db import queries
    from db.session import dispose_engines, session_scope

    url = f"sqlite:///{tmp_path / 'validation.db'}"
    spec_path = SPECS / "saxe_learning_times.yaml"
    done = subprocess.run(
        plateau_cmd("run", str(spec_path)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": url, "PLATEAU_RAY_NUM_CPUS": "2", "RAY_ADDRESS": ""},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stored: list[tuple[RunConfig, str, str | None, list[float], list[Any]]] = []
    try:
        with session_scope(url) as session:
            sweeps, _ = queries.list_sweeps(session=session, offset=0, limit=10)
            assert len(sweeps) == 1
            runs, _ = queries.list_runs(session=session, sweep_id=sweeps[0].id, offset=0, limit=100)
            for run in runs:
                stored.append(
                    (
                        RunConfig.model_validate(run.config),
                        run.status,
                        run.result.verdict if run.result is not None else None,
                        queries.run_curves(session=session, run=run)["loss"],
                        list(queries.list_probes(session=session, run=run)),
                    )
                )
    finally:
        dispose_engines()
    assert len(stored) == len(expand("saxe_learning_times.yaml"))
    for config, status, verdict, losses, probes in stored:
        assert status == "succeeded" and verdict == "converged", (status, verdict)
        times = saxe_mode_times(config, losses)
        plateau_probe = next(p for p in probes if p.trigger == "plateau")
        report(
            "saxe via plateau run",
            scale=config.init.scale,
            seed=config.seed,
            closed_form=[round(t, 1) for t in times["closed_form"]],
            measured=times["measured"],
            plateau_probe_step=plateau_probe.step,
            plateau_lambda_min=round(plateau_probe.lambda_min, 5),
        )
        check_saxe_mode_times(times)  # the stored curve, with the tolerances above
        # 1 %: at the plateau probe (step 49) the strongest mode has grown to
        # u ~ u0 e^(2 lr s t) ~ 5e-5 * e^3.9 ~ 2.5e-3 at the largest scale; the curvature moves
        # by O(u / s) from the origin's ±s (seen: within 0.1 %).
        assert plateau_probe.lambda_min == pytest.approx(
            -max(config.task.singular_values), rel=0.01
        )
