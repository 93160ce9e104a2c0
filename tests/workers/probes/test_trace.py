"""Hutch++ and XTrace against dense float64 Hessians of trained networks, and curvlinops."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from tests.workers.probes.trained import Trained
from workers.probes import ProbeError, trace_estimate
from workers.probes.hutchinson import hutchinson_trace
from workers.probes.hutchpp import hutchpp_trace, split_budget
from workers.probes.hvp import make_hvp
from workers.probes.xtrace import xtrace

SEEDS = range(20)


def rms_error(estimates: list[float], exact: float) -> float:
    return math.sqrt(sum((e - exact) ** 2 for e in estimates) / len(estimates)) / abs(exact)


@pytest.mark.parametrize("estimator", [hutchpp_trace, xtrace])
def test_estimators_are_within_their_error_on_a_trained_hvp(trained: Trained, device, estimator):
    model, x, y = trained.on(device)
    hvp = make_hvp(model, trained.loss_fn, x, y)
    exact = float(trained.hessian.trace())
    est = estimator(hvp, hvp.dim, num_matvecs=30, seed=0, device=device)
    assert est.matvecs == hvp.count == 30 and est.stderr > 0
    assert abs(est.estimate - exact) <= 3 * est.stderr


def test_hutchpp_and_xtrace_beat_hutchinson_on_trained_networks(trained: Trained):
    # The dense Hessian as the operator: 30 seeds x 3 estimators in well under a second.
    h, d = trained.hessian, trained.hessian.shape[0]
    exact = float(h.trace())

    def errors(fn) -> float:
        return rms_error([fn(lambda v: h @ v, d, seed=s).estimate for s in SEEDS], exact)

    hutchinson = errors(lambda mv, d, seed: hutchinson_trace(mv, d, num_vectors=60, seed=seed))
    hutchpp = errors(lambda mv, d, seed: hutchpp_trace(mv, d, num_matvecs=60, seed=seed))
    xtr = errors(lambda mv, d, seed: xtrace(mv, d, num_matvecs=60, seed=seed))
    # Measured (100 seeds): Hutchinson 4-5 %, Hutch++ 0.9-1.5 %, XTrace 0.6-0.9 %.
    assert hutchpp < hutchinson / 2 and xtr < hutchinson / 3
    assert xtr < hutchpp


def test_xtrace_jackknife_error_covers_the_error(trained: Trained):
    h, d = trained.hessian, trained.hessian.shape[0]
    exact = float(h.trace())
    covered = 0
    for s in SEEDS:
        est = xtrace(lambda v: h @ v, d, num_matvecs=20, seed=s)
        covered += abs(est.estimate - exact) <= 2 * est.stderr
        # The jackknife is wider than the paper's std(t_i)/√m (measured 2-3x).
        assert est.stderr > torch.tensor(est.samples).std().item() / math.sqrt(10)
    assert covered >= 0.9 * len(SEEDS)  # measured: 99-100 % of 100 seeds


def test_exact_on_a_low_rank_operator():
    # Rank 3: range(HΩ) is range(H), so the sketch holds the whole trace.
    gen = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(40, 3, generator=gen, dtype=torch.float64))[0]
    h = u @ torch.diag(torch.tensor([5.0, -2.0, 1.0], dtype=torch.float64)) @ u.T
    for est in (
        xtrace(lambda v: h @ v, 40, num_matvecs=10, seed=1),  # R singular: rank-deficient path
        hutchpp_trace(lambda v: h @ v, 40, num_matvecs=12, seed=1),
    ):
        assert est.estimate == pytest.approx(4.0, abs=1e-10) and est.stderr < 1e-10


def test_seeded_and_exact_trace_path():
    a = torch.randn(30, 30, dtype=torch.float64)
    a = a + a.T
    for fn in (hutchpp_trace, xtrace):
        runs = [fn(lambda v: a @ v, 30, num_matvecs=12, seed=s).estimate for s in (4, 4, 5)]
        assert runs[0] == runs[1] != runs[2]
    for method in ("auto", "hutchinson", "hutchpp", "xtrace"):
        est = trace_estimate(lambda v: a @ v, 30, method=method, matvecs=30)
        assert est.method == "exact" and est.matvecs == 30 and est.stderr == 0.0
        assert est.estimate == pytest.approx(float(a.trace()), abs=1e-12)


def test_auto_takes_xtrace_from_16_products():
    a = torch.diag(torch.linspace(1.0, 2.0, 100, dtype=torch.float64))
    assert trace_estimate(lambda v: a @ v, 100, matvecs=15).method == "hutchinson"
    assert trace_estimate(lambda v: a @ v, 100, matvecs=16).method == "xtrace"
    assert trace_estimate(lambda v: a @ v, 100, method="hutchpp", matvecs=9).method == "hutchpp"


def test_hutchpp_splits_its_budget_in_thirds_keeping_two_complement_vectors():
    assert [split_budget(m) for m in (2, 3, 4, 9, 20)] == [(0, 2), (0, 3), (1, 2), (3, 3), (6, 8)]


def test_trace_errors():
    eye = lambda v: v  # noqa: E731
    with pytest.raises(ProbeError, match="num_matvecs must be >= 4"):
        xtrace(eye, 10, num_matvecs=3)
    with pytest.raises(ProbeError, match="num_matvecs must be >= 2"):
        hutchpp_trace(eye, 10, num_matvecs=1)
    for fn in (xtrace, hutchpp_trace):
        with pytest.raises(ProbeError, match="num_matvecs=10 >= dim=10"):
            fn(eye, 10, num_matvecs=10)
    with pytest.raises(ProbeError, match=r"vectors must have shape \(10, 3\)"):
        xtrace(eye, 10, num_matvecs=6, vectors=torch.ones(10, 2, dtype=torch.float64))
    with pytest.raises(ProbeError, match=r"vectors must have shape \(10, 4\)"):
        hutchpp_trace(eye, 10, num_matvecs=6, vectors=torch.ones(10, 2, dtype=torch.float64))
    with pytest.raises(ProbeError, match="unknown trace method 'hutch'; expected one of"):
        trace_estimate(eye, 10, method="hutch")  # type: ignore[arg-type]


def curvlinops_vectors(dim: int, count: int, seed: int) -> Tensor:
    """The Rademacher columns curvlinops draws after torch.manual_seed(seed), in its order."""
    from curvlinops.sampling import random_vector

    torch.manual_seed(seed)
    return torch.stack(
        [random_vector(dim, "rademacher", "cpu", torch.float64) for _ in range(count)], 1
    )


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("budget", [6, 12, 30])
def test_same_estimates_as_curvlinops_on_the_same_vectors(trained: Trained, budget):
    # A test dependency (pyproject's [test] extras), not skipped: the comparison is the point.
    import curvlinops

    h, d = trained.hessian, trained.hessian.shape[0]
    torch.manual_seed(budget)
    theirs = float(curvlinops.xtrace(h, budget))
    ours = xtrace(
        lambda v: h @ v, d, num_matvecs=budget, vectors=curvlinops_vectors(d, budget // 2, budget)
    )
    assert ours.estimate == pytest.approx(theirs, rel=1e-10)
    torch.manual_seed(budget)
    theirs = float(curvlinops.hutchpp_trace(h, budget))
    vectors = curvlinops_vectors(d, sum(split_budget(budget)), budget)
    ours = hutchpp_trace(lambda v: h @ v, d, num_matvecs=budget, vectors=vectors)
    assert ours.estimate == pytest.approx(theirs, rel=1e-10)
