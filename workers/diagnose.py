"""The verdict on a run's end state (or on any point): a claim a scientist can check.

Each verdict comes with one sentence naming the numbers that decided it, the evidence, and
the thresholds. Anything that fits no rule is called `inconclusive`, never the nearest
wrong name.

The numbers (W = plateau window, r = plateau rel_improvement, L = loss):
- progress   = (s_{T-W} - s_T) / s_{T-W}: relative fall of the smoothed loss over the last
               window (workers/plateau.py's smoothing).
- q          = the first-order change of the loss by one update, relative to |L|. For SGD
               (momentum mu) the expected update is -eta_eff g with eta_eff = lr / (1 - mu)
               (heavy ball in steady state; lr at the last step of its schedule), so
               q = eta_eff ||g||^2 / |L| exactly. For adaptive optimizers the update is not
               along g; q = ||g|| ||dtheta|| / |L| bounds it (Cauchy-Schwarz), with ||dtheta||
               the mean logged update norm and eta_eff = ||dtheta|| / ||g||. ||g|| is the
               full-batch gradient norm when a probe measured it, else the mean logged
               (minibatch) norm over the last window, which overestimates it (noise), so
               without a probe q errs towards "not small". W q is how much the gradient can
               lower the loss over a window.
- sharpness  = lambda_max * lr / (2 (1 + mu)): 1 at gradient descent's stability limit on a
               quadratic (heavy-ball momentum mu; Cohen et al. 2021, "Gradient descent on
               neural networks typically occurs at the edge of stability").

The rules, first match wins (lambda from the Lanczos probe, rho its Ritz residual, which
bounds the eigenvalue's error for a symmetric operator; e = neg_tol * lambda_max):
1. diverged           the run was stopped as diverged (non-finite loss, or held above
                      divergence.factor x its first loss for divergence.patience steps).
2. converged          the smoothed loss reached the target.
3. edge_of_stability  full-batch SGD, sharpness >= eos_ratio, and the loss rose in at least
                      rise_fraction of the last window's steps: a regime, whether or not the
                      loss still falls on average (it does, non-monotonically, at the edge).
4. still_improving    progress > r.
5. unstable           the smoothed loss rose by more than r over the last window, or (full
                      batch) the loss rose in at least rise_fraction of its steps: no
                      progress, and not because the gradient is small.
6. saddle             probed; near-stationary (W q < stationary * r) and
                      lambda_min + rho < -e: curvature clearly negative beyond its error.
7. local_minimum      probed; near-stationary and lambda_min - rho >= -e and lambda_max > 0:
                      no negative direction, within its error; lambda_min must have converged
                      (an unconverged Ritz value only bounds the bottom of the spectrum from
                      above, so it can prove negative curvature but not its absence).
   (near-stationary with lambda_min within rho of -e either way: inconclusive.)
8. plateau            small gradient (W q < r: the gradient cannot give the progress a
                      window would need) and flat curvature: no negative direction the
                      optimizer could leave by within a window (eta_eff |lambda_min| W < 1).
                      Without a probe the curvature is unknown and the evidence says so.
9. inconclusive       anything else, with the reason.

Seeded example (f(x, y) = x^2 - y^2 at the origin, probed)::

    >>> import torch
    >>> from torch import nn
    >>> class Saddle(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.w = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    ...     def forward(self, x):
    ...         return (self.w[0] ** 2 - self.w[1] ** 2).expand(x.shape[0])
    >>> x = torch.zeros(4, 1, dtype=torch.float64)
    >>> out = diagnose_point(Saddle(), lambda out, y: out.mean(), x, x[:, 0])
    >>> out["verdict"], out["sentence"]
    ('saddle', 'λmin -2 < -0.001·λmax = -0.002 beyond its residual 0, and W·q 0 < 0.0002: a saddle')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, get_args

from workers.config import PlateauThresholds, RunConfig, Verdict
from workers.optim import lr_factor

VERDICTS: tuple[str, ...] = get_args(Verdict)

DEFAULT_THRESHOLDS: dict[str, float] = {
    "neg_tol": 1e-3,  # lambda_min below -neg_tol * lambda_max is negative curvature
    "stationary": 1e-2,  # near-stationary: W q below this fraction of r
    "eos_ratio": 0.9,  # sharpness at or above this is the edge of stability
    "rise_fraction": 0.1,  # full batch: the loss rising this often is not monotone descent
}


def _g(x: float | None) -> str:
    """A number for a sentence: 3 significant digits."""
    return "?" if x is None else f"{x:.3g}"


def _pct(x: float) -> str:
    return f"{100 * x:.3g} %"


def _tail(values: Mapping[int, float], last_step: int, window: int) -> float | None:
    """Mean of the logged values in the last window (or the last logged one)."""
    inside = [v for s, v in values.items() if s > last_step - window and math.isfinite(v)]
    if inside:
        return sum(inside) / len(inside)
    finite = [v for _, v in sorted(values.items()) if math.isfinite(v)]
    return finite[-1] if finite else None


def smoothed(losses: Sequence[float], smoothing: float) -> list[float]:
    """The bias-corrected EMA of the loss (the same as workers/plateau.py's)."""
    m, out = 0.0, []
    for t, loss in enumerate(losses):
        m = smoothing * m + (1 - smoothing) * loss
        out.append(m / (1 - smoothing ** (t + 1)))
    return out


def recent_relative_improvement(losses: list[float], window: int, smoothing: float) -> float | None:
    """(s_{T-W} - s_T) / s_{T-W} on the bias-corrected EMA of the loss; None if too short."""
    if len(losses) <= window:
        return None
    s = smoothed(losses, smoothing)
    before, now = s[-window - 1], s[-1]
    return (before - now) / abs(before) if before else 0.0


def rise_fraction(losses: Sequence[float], window: int) -> float | None:
    """Fraction of the last window's steps where the (raw) loss rose."""
    tail = list(losses[-window - 1 :])
    if len(tail) < 3:
        return None
    return sum(b > a for a, b in zip(tail, tail[1:], strict=False)) / (len(tail) - 1)


def classify(evidence: dict[str, Any], thresholds: dict[str, float]) -> tuple[str, str]:
    """(verdict, sentence) from the evidence (see the module docstring for the rules)."""
    ev, th = evidence, thresholds
    window, r = int(th["window"]), th["rel_improvement"]
    if ev.get("diverged_step") is not None:
        if ev.get("nonfinite"):
            return "diverged", f"the loss became non-finite at step {ev['diverged_step']}: diverged"
        return "diverged", (
            f"loss stayed above {_g(th.get('divergence_factor'))}× its initial "
            f"{_g(ev.get('initial_loss'))} for {th.get('divergence_patience')} steps from step "
            f"{ev['diverged_step']}: diverged"
        )
    if ev.get("steps_to_target") is not None:
        return "converged", (
            f"smoothed loss reached the target {_g(th['target'])} at step "
            f"{ev['steps_to_target']}: converged"
        )
    progress = ev.get("recent_improvement")
    rises, sharp = ev.get("rise_fraction"), ev.get("sharpness")
    oscillating = ev.get("full_batch") and rises is not None and rises >= th["rise_fraction"]
    if oscillating and sharp is not None and sharp >= th["eos_ratio"]:
        return "edge_of_stability", (
            f"λmax·lr/(2(1+μ)) = {_g(sharp)} ≥ {_g(th['eos_ratio'])} under full-batch gradient "
            f"descent and the loss rose in {_pct(rises)} of the last {window} steps: at the edge "
            "of stability (Cohen et al. 2021)"
        )
    if progress is not None and progress > r:
        return "still_improving", (
            f"smoothed loss fell {_pct(progress)} over the last {window} steps (> {_pct(r)}): "
            "still improving"
        )
    if progress is not None and progress < -r:
        return "unstable", (
            f"smoothed loss rose {_pct(-progress)} over the last {window} steps (> {_pct(r)}): "
            "unstable"
        )
    if oscillating:
        return "unstable", (
            f"full-batch loss rose in {_pct(rises)} of the last {window} steps "
            f"(≥ {_pct(th['rise_fraction'])}) without progress: oscillating, unstable"
        )

    wq = ev.get("window_progress_bound")  # W q
    lam_max, lam_min = ev.get("lambda_max"), ev.get("lambda_min")
    if wq is None:
        return "inconclusive", "no gradient or update norms were recorded: inconclusive"
    small, stationary_bound = wq < r, th["stationary"] * r
    if lam_max is not None and lam_min is not None:
        rho = abs(ev.get("lambda_min_residual") or 0.0)
        e = th["neg_tol"] * abs(lam_max)
        stationary = wq < stationary_bound
        if stationary and lam_min + rho < -e:
            return "saddle", (
                f"λmin {_g(lam_min)} < -{_g(th['neg_tol'])}·λmax = {_g(-e)} beyond its residual "
                f"{_g(rho)}, and W·q {_g(wq)} < {_g(stationary_bound)}: a saddle"
            )
        if stationary and lam_min - rho >= -e and lam_max > 0:
            if ev.get("lambda_min_converged") is False:
                return "inconclusive", (
                    f"near-stationary (W·q {_g(wq)}) with λmin {_g(lam_min)} ≥ {_g(-e)}, but λmin "
                    "has not converged (a Ritz value only bounds the spectrum's bottom from "
                    "above): a minimum cannot be claimed; raise probes.lanczos_max_steps"
                )
            return "local_minimum", (
                f"λmin {_g(lam_min)} ≥ -{_g(th['neg_tol'])}·λmax = {_g(-e)} within its residual "
                f"{_g(rho)}, λmax {_g(lam_max)} > 0, and W·q {_g(wq)} < {_g(stationary_bound)}, "
                f"above the target {_g(th['target'])}: a local minimum"
            )
        if stationary:
            return "inconclusive", (
                f"near-stationary (W·q {_g(wq)}) but λmin {_g(lam_min)} is within its residual "
                f"{_g(rho)} of ±{_g(e)}: minimum or saddle cannot be told apart: inconclusive"
            )
        escape = ev.get("escape_per_window")  # eta_eff |lambda_min| W
        if small and escape is not None and escape < 1:
            return "plateau", (
                f"W·q {_g(wq)} < {_g(r)} (the gradient cannot lower the loss {_pct(r)} in "
                f"{window} steps) and ηeff·|λmin|·W = {_g(escape)} < 1 (no negative direction to "
                "leave by within a window): a plateau"
            )
        if small:
            return "inconclusive", (
                f"small gradient (W·q {_g(wq)} < {_g(r)}) but ηeff·|λmin|·W = {_g(escape)} ≥ 1: "
                "leaving a saddle rather than sitting on a plateau: inconclusive"
            )
        return "inconclusive", (
            f"no progress over {window} steps although the gradient could give it "
            f"(W·q {_g(wq)} ≥ {_g(r)}): minibatch noise or oscillation; inconclusive"
        )
    if small:
        return "plateau", (
            f"smoothed loss moved {_pct(progress or 0.0)} in {window} steps and W·q {_g(wq)} < "
            f"{_g(r)} from logged minibatch norms; curvature unknown (no probe): a plateau"
        )
    return "inconclusive", (
        f"no progress over {window} steps although the logged gradient could give it "
        f"(W·q {_g(wq)} ≥ {_g(r)}); add probes to measure the full-batch gradient: inconclusive"
    )


def _probe_evidence(probe: Mapping[str, Any]) -> dict[str, Any]:
    data = probe.get("data", probe)
    residual = (data.get("residuals", {}) or {}).get("bottom") or [None]
    flags = (data.get("eigenvalue_converged") or {}).get("bottom") or [None]
    return {
        "lambda_min_converged": flags[0],
        "grad_norm": probe.get("grad_norm"),
        "lambda_max": probe.get("lambda_max"),
        "lambda_min": probe.get("lambda_min"),
        "lambda_min_residual": residual[0],
        "negative_mass": probe.get("negative_mass"),
        "trace": probe.get("trace"),
        "probe_loss": data.get("loss"),
    }


def _curvature_numbers(ev: dict[str, Any], eta: float | None, window: int) -> None:
    """Add W q, eta_eff |lambda_min| W to the evidence from g, the step size or the update
    norm, and L (see q in the module docstring). `eta`: the expected step along -g."""
    g, loss = ev.get("grad_norm"), ev.get("loss")
    if g is None or loss is None or not math.isfinite(loss):
        return
    if eta is not None:
        eta_eff, step = eta, eta * g
    elif ev.get("update_norm") is not None:
        step = ev["update_norm"]
        eta_eff = step / g if g > 0 else None
    else:
        return
    # |L|: a loss may be negative (a test function); floored so that g = 0 gives q = 0.
    ev["window_progress_bound"] = window * g * step / max(abs(loss), 1e-12)
    ev["effective_lr"] = eta_eff
    if ev.get("lambda_min") is not None and eta_eff is not None:
        ev["escape_per_window"] = eta_eff * max(0.0, -ev["lambda_min"]) * window


def diagnose(result: Any, config: RunConfig, probe: dict[str, Any] | None) -> dict[str, Any]:
    """The diagnosis of a finished TrainResult, using the end-of-run probe when there is one."""
    plateau = config.plateau
    window = plateau.window
    thresholds: dict[str, Any] = {
        **DEFAULT_THRESHOLDS,
        "rel_improvement": plateau.rel_improvement,
        "window": window,
        "target": config.target.loss,
        "divergence_factor": config.divergence.factor,
        "divergence_patience": config.divergence.patience,
    }
    losses = result.losses
    s = smoothed(losses, plateau.smoothing)
    last = len(losses) - 1
    ev: dict[str, Any] = {
        "final_loss": result.final_loss,
        "smoothed_loss": s[-1] if s else None,
        "initial_loss": losses[0] if losses else None,
        "steps_to_target": result.steps_to_target,
        "recent_improvement": recent_relative_improvement(losses, window, plateau.smoothing),
        "plateau_fraction": result.plateau_fraction,
        "longest_plateau": result.longest_plateau,
        "diverged_step": result.diverged_step,
        "nonfinite": bool(losses) and not math.isfinite(losses[-1]),
        "full_batch": config.budget.full_batch,
        "rise_fraction": rise_fraction(losses, window),
        "update_norm": _tail(getattr(result, "update_norms", {}) or {}, last, window),
        "logged_grad_norm": _tail(getattr(result, "grad_norms", {}) or {}, last, window),
    }
    if result.diverged_step is not None and result.diverged_step >= len(losses):
        ev["nonfinite"] = True
    optimizer = config.optimizer
    momentum = getattr(optimizer, "momentum", 0.0) if optimizer.name == "sgd" else None
    eta = None  # the expected step along -g, where the optimizer has one (SGD)
    if momentum is not None:
        steps = config.budget.steps
        eta = optimizer.lr * lr_factor(optimizer.schedule, steps - 1, steps) / (1 - momentum)
    if probe is not None:
        ev.update(_probe_evidence(probe), probe_step=probe["step"])
        ev["loss"] = ev.get("probe_loss") or ev["smoothed_loss"]
        if momentum is not None and ev["lambda_max"] is not None:
            lr = optimizer.lr
            ev["sharpness"] = ev["lambda_max"] * lr / (2 * (1 + momentum))
    else:
        ev["grad_norm"] = ev["logged_grad_norm"]
        ev["loss"] = ev["smoothed_loss"]
        ev["curvature"] = "not probed: add probes: {at: [end]} to tell minima from saddles"
    _curvature_numbers(ev, eta, window)
    verdict, sentence = classify(ev, thresholds)
    return {"verdict": verdict, "sentence": sentence, "evidence": ev, "thresholds": thresholds}


def diagnose_point(
    model: Any,
    loss_fn: Callable[[Any, Any], Any],
    inputs: Any,
    targets: Any,
    *,
    lr: float | None = None,
    thresholds: PlateauThresholds | None = None,
    **probe_options: Any,
) -> dict[str, Any]:
    """Diagnose the point a model's parameters are at, on the loss over (inputs, targets).

    For parameters a researcher built or trained themselves: probes the loss there (Lanczos
    extreme eigenvalues, full-batch gradient; see workers.probes.run_probes, whose keyword
    options `probe_options` are passed on) and applies rules 6-9 of the module docstring.
    There is no training curve, so progress is unknown; the update is a gradient step of
    size `lr` (default 1/λmax, the largest step that is stable on the stiffest direction).
    Returns {"verdict", "sentence", "evidence", "thresholds", "probe"}.
    """
    from workers.probes import run_probes

    plateau = thresholds or PlateauThresholds()
    options = {"k": 1, "measure": ["eigenvalues"], **probe_options}
    out = run_probes(model, loss_fn, inputs, targets, **options)
    th: dict[str, Any] = {
        **DEFAULT_THRESHOLDS,
        "rel_improvement": plateau.rel_improvement,
        "window": plateau.window,
        "target": 0.0,
    }
    ev = _probe_evidence(out)
    ev["loss"] = out["loss"]
    lam_max = ev["lambda_max"]
    eta = lr if lr is not None else (1.0 / lam_max if lam_max and lam_max > 0 else None)
    _curvature_numbers(ev, eta, plateau.window)
    verdict, sentence = classify(ev, th)
    return {
        "verdict": verdict,
        "sentence": sentence,
        "evidence": ev,
        "thresholds": th,
        "probe": out,
    }
