"""Diagnosis of a run's end state (or of any probed point): converged, local_minimum, saddle,
plateau, diverged or still_improving -- with the numbers and thresholds that decided it, so
a person can disagree with the verdict.

The rules, in order (g = full-batch gradient norm, lambda from the Hessian probe, r_min the
Ritz residual of lambda_min, which bounds its error for a symmetric operator):
1. diverged         the loss became non-finite.
2. converged        the smoothed training loss reached the target.
3. still_improving  the smoothed loss fell by more than `rel_improvement` over the last window.
4. saddle           lambda_min + r_min < -neg_tol * |lambda_max|: curvature clearly negative.
5. local_minimum    g <= grad_tol and lambda_min + r_min >= -neg_tol * |lambda_max| and
                    lambda_max > flat_tol: a bowl with positive curvature.
6. plateau          otherwise: above target, no progress, and flat or unknown curvature.
Without a probe, rules 4-5 cannot fire: the verdict says so in its evidence.
"""

from __future__ import annotations

from typing import Any

from workers.config import RunConfig

DEFAULT_THRESHOLDS = {"grad_tol": 1e-2, "neg_tol": 1e-3, "flat_tol": 1e-2}


def classify(
    *,
    loss_finite: bool,
    reached_target: bool,
    recent_improvement: float | None,
    rel_improvement: float,
    grad_norm: float | None,
    lambda_max: float | None,
    lambda_min: float | None,
    lambda_min_residual: float | None,
    thresholds: dict[str, float],
) -> str:
    """The verdict from the numbers (see the module docstring for the rules)."""
    if not loss_finite:
        return "diverged"
    if reached_target:
        return "converged"
    if recent_improvement is not None and recent_improvement > rel_improvement:
        return "still_improving"
    if lambda_max is None or lambda_min is None:
        return "plateau"
    scale = max(abs(lambda_max), 1e-12)
    error = abs(lambda_min_residual or 0.0)
    if lambda_min + error < -thresholds["neg_tol"] * scale:
        return "saddle"
    if (
        grad_norm is not None
        and grad_norm <= thresholds["grad_tol"]
        and lambda_min + error >= -thresholds["neg_tol"] * scale
        and lambda_max > thresholds["flat_tol"]
    ):
        return "local_minimum"
    return "plateau"


def recent_relative_improvement(losses: list[float], window: int, smoothing: float) -> float | None:
    """(s_{T-W} - s_T) / s_{T-W} on the bias-corrected EMA of the loss; None if too short."""
    if len(losses) <= window:
        return None
    m, smoothed = 0.0, []
    for t, loss in enumerate(losses):
        m = smoothing * m + (1 - smoothing) * loss
        smoothed.append(m / (1 - smoothing ** (t + 1)))
    before, now = smoothed[-window - 1], smoothed[-1]
    return (before - now) / abs(before) if before else 0.0


def diagnose(result: Any, config: RunConfig, probe: dict[str, Any] | None) -> dict[str, Any]:
    """Diagnosis of a finished TrainResult, using the end-of-run probe when there is one."""
    thresholds = {
        **DEFAULT_THRESHOLDS,
        "rel_improvement": config.plateau.rel_improvement,
        "window": config.plateau.window,
        "target": config.target.loss,
    }
    improvement = recent_relative_improvement(
        result.losses, config.plateau.window, config.plateau.smoothing
    )
    evidence: dict[str, Any] = {
        "final_loss": result.final_loss,
        "steps_to_target": result.steps_to_target,
        "recent_improvement": improvement,
        "plateau_fraction": result.plateau_fraction,
        "longest_plateau": result.longest_plateau,
        "diverged_step": result.diverged_step,
    }
    lam_max = lam_min = residual = grad_norm = None
    if probe is not None:
        data = probe.get("data", {})
        lam_max, lam_min, grad_norm = probe["lambda_max"], probe["lambda_min"], probe["grad_norm"]
        residual = (data.get("residuals", {}).get("bottom") or [None])[0]
        evidence.update(
            grad_norm=grad_norm,
            lambda_max=lam_max,
            lambda_min=lam_min,
            lambda_min_residual=residual,
            probe_step=probe["step"],
            negative_mass=probe.get("negative_mass"),
            trace=probe.get("trace"),
        )
    else:
        evidence["curvature"] = "not probed: add probes: {at: [end]} to tell minima from saddles"
    verdict = classify(
        loss_finite=result.outcome != "diverged",
        reached_target=result.reached_target,
        recent_improvement=improvement,
        rel_improvement=config.plateau.rel_improvement,
        grad_norm=grad_norm,
        lambda_max=lam_max,
        lambda_min=lam_min,
        lambda_min_residual=residual,
        thresholds=thresholds,
    )
    return {"verdict": verdict, "evidence": evidence, "thresholds": thresholds}
