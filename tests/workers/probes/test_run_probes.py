"""run_probes: the JSON-friendly summary, the mode it probes in, its errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor, nn

from workers.probes import ProbeError, run_probes

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

KEYS = {
    "lambda_max",
    "lambda_min",
    "top_eigenvalues",
    "bottom_eigenvalues",
    "residuals",
    "converged",
    "eigenvalue_converged",
    "residual_bound",
    "lanczos_steps",
    "lanczos_restarts",
    "trace",
    "trace_stderr",
    "trace_vectors",
    "trace_matvecs",
    "trace_method",
    "negative_mass",
    "negative_mass_stderr",
    "negative_mass_interval",
    "negative_mass_eps",
    "density",
    "grad_norm",
    "loss",
    "slices",
    "measured",
    "hvp_count",
    "hvp_counts",
    "dim",
    "mode",
    "method",
    "seconds",
}


def setup(device: torch.device, *, dropout: bool = False) -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(5, 10), nn.BatchNorm1d(10), nn.Tanh()]
    if dropout:
        layers.append(nn.Dropout(0.3))
    layers.append(nn.Linear(10, 3))
    model = nn.Sequential(*layers).to(device=device, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(40, 5, generator=gen, dtype=torch.float64).to(device)
    return model, x, torch.randint(0, 3, (40,), generator=gen).to(device)


def test_summary_is_complete_and_json_serializable(device):
    model, x, y = setup(device)
    init = {n: p.detach() + 0.1 for n, p in model.named_parameters()}
    model.train()
    out = run_probes(
        model,
        nn.CrossEntropyLoss(),
        x,
        y,
        k=2,
        lanczos_steps=113,
        seed=0,
        init_params=init,
        slice_points=5,
        slice_points_2d=3,
    )
    assert set(out) == KEYS
    json.dumps(out, allow_nan=False)
    assert out["mode"] == "eval" and model.training  # probed in eval, mode restored
    assert out["dim"] == 113 and out["lanczos_steps"] <= 113 and out["converged"]
    assert out["lambda_max"] == out["top_eigenvalues"][0] >= out["top_eigenvalues"][1]
    assert out["lambda_min"] == out["bottom_eigenvalues"][0] <= out["bottom_eigenvalues"][1]
    assert len(out["residuals"]["top"]) == 2 and out["trace_stderr"] > 0
    assert out["eigenvalue_converged"] == {"top": [True, True], "bottom": [True, True]}
    assert out["trace_method"] == "xtrace" and out["trace_matvecs"] == 30  # auto, 30 >= 16
    lo, hi = out["negative_mass_interval"]
    assert 0 <= lo <= hi <= 1
    assert out["hvp_count"] == 2 + out["lanczos_steps"] + 30 + 4 * 30
    assert out["hvp_counts"] == {
        "check": 2,
        "eigenvalues": out["lanczos_steps"],
        "trace": 30,
        "density": 120,
    }
    slices = out["slices"]
    assert set(slices) == {
        "random_1d",
        "top_eigvec_1d",
        "bottom_eigvec_1d",
        "random_2d",
        "interpolation",
    }
    loss = nn.CrossEntropyLoss()(model.eval()(x), y).item()
    for name in ("random_1d", "top_eigvec_1d", "bottom_eigvec_1d"):
        assert slices[name]["values"][2] == pytest.approx(loss, rel=1e-12)  # α = 0
    assert slices["random_2d"]["values"][1][1] == pytest.approx(loss, rel=1e-12)
    assert slices["interpolation"]["values"][-1] == pytest.approx(loss, rel=1e-12)
    assert out["loss"] == pytest.approx(loss, rel=1e-12)
    assert len(out["density"]["grid"]) == len(out["density"]["values"]) == 200


def test_flat_init_params_give_the_same_interpolation(device):
    model, x, y = setup(device)
    names = [n for n, _ in model.named_parameters()]
    init = {n: p.detach() * 0.5 for n, p in model.named_parameters()}
    flat = torch.cat([init[n].reshape(-1) for n in names])
    kw = {"k": 1, "lanczos_steps": 10, "slice_points": 3, "slice_points_2d": 2}
    a = run_probes(model, nn.CrossEntropyLoss(), x, y, init_params=init, **kw)
    b = run_probes(model, nn.CrossEntropyLoss(), x, y, init_params=flat, **kw)
    assert a["slices"]["interpolation"] == b["slices"]["interpolation"]
    assert a["lambda_max"] == b["lambda_max"]  # seeded


def test_train_mode_with_dropout_is_refused():
    model, x, y = setup(torch.device("cpu"), dropout=True)
    with pytest.raises(ProbeError, match="not deterministic in train mode"):
        run_probes(model, nn.CrossEntropyLoss(), x, y, mode="train")
    assert model.training  # restored after the failure too


def test_train_mode_probes_batchnorm_with_batch_statistics():
    model, x, y = setup(torch.device("cpu"))
    out = run_probes(
        model.eval(),
        nn.CrossEntropyLoss(),
        x,
        y,
        mode="train",
        k=1,
        lanczos_steps=5,
        slice_points=3,
        slice_points_2d=2,
        hutchinson_vectors=2,
        slq_vectors=2,
        slq_steps=3,
        params=["3.weight"],
    )
    assert out["mode"] == "train" and out["dim"] == 30 and not model.training
    with torch.no_grad():
        train_loss = nn.CrossEntropyLoss()(model.train()(x), y).item()
    assert out["loss"] == pytest.approx(train_loss, rel=1e-12)


def test_run_probes_errors():
    model, x, y = setup(torch.device("cpu"))
    loss_fn = nn.CrossEntropyLoss()
    with pytest.raises(ProbeError, match="unknown mode 'test'"):
        run_probes(model, loss_fn, x, y, mode="test")  # type: ignore[arg-type]
    with pytest.raises(ProbeError, match="must be >= 2 to give standard errors"):
        run_probes(model, loss_fn, x, y, slq_vectors=1)
    with pytest.raises(ProbeError, match="slice grids need >= 2 points"):
        run_probes(model, loss_fn, x, y, slice_points=1)
    with pytest.raises(ProbeError, match=r"init_params lacks parameter\(s\)"):
        run_probes(model, loss_fn, x, y, init_params={}, k=1, lanczos_steps=3)
    with pytest.raises(ProbeError, match="init_params has 3 entries, expected 113"):
        run_probes(model, loss_fn, x, y, init_params=torch.zeros(3), k=1, lanczos_steps=3)
    with pytest.raises(ProbeError, match=r"unknown measure\(s\) \['hessian'\]; expected one of"):
        run_probes(model, loss_fn, x, y, measure=["trace", "hessian"])
    with pytest.raises(ProbeError, match="unknown trace method 'exact'; expected one of"):
        run_probes(model, loss_fn, x, y, trace_method="exact")  # type: ignore[arg-type]
    with pytest.raises(ProbeError, match="lanczos_max_steps=10 is below lanczos_steps=40"):
        run_probes(model, loss_fn, x, y, lanczos_max_steps=10)
    with pytest.raises(ProbeError, match="num_matvecs must be >= 4"):
        run_probes(
            model, loss_fn, x, y, measure=["trace"], trace_method="xtrace", hutchinson_vectors=3
        )


def test_each_probe_costs_only_its_own_hvps():
    model, x, y = setup(torch.device("cpu"))
    loss_fn = nn.CrossEntropyLoss()
    kw = {"k": 1, "lanczos_steps": 12, "slice_points": 3, "slice_points_2d": 2}
    full = run_probes(model, loss_fn, x, y, **kw)
    only = {
        m: run_probes(model, loss_fn, x, y, measure=[m], **kw)
        for m in ("eigenvalues", "trace", "density")
    }
    # A λmax-only probe costs its Lanczos steps (and the 2-HVP determinism check).
    eig = only["eigenvalues"]
    assert eig["hvp_count"] == 2 + eig["lanczos_steps"]
    assert eig["hvp_counts"] == {
        "check": 2,
        "eigenvalues": eig["lanczos_steps"],
        "trace": 0,
        "density": 0,
    }
    assert eig["lambda_max"] == full["lambda_max"] and eig["residuals"] == full["residuals"]
    assert eig["trace"] is eig["negative_mass"] is eig["density"] is eig["slices"] is None
    assert only["trace"]["hvp_count"] == 2 + 30 and only["trace"]["lambda_max"] is None
    assert only["trace"]["trace"] == full["trace"]  # seeded per probe, not by what ran before
    assert only["density"]["hvp_count"] == 2 + 4 * 30
    assert only["density"]["negative_mass_interval"] == full["negative_mass_interval"]
    for out in only.values():
        assert out["grad_norm"] == full["grad_norm"] and out["loss"] == full["loss"]
        assert out["measured"] == [m for m in only if out is only[m]]


def test_slices_without_eigenvalues_skip_the_eigenvector_slices():
    model, x, y = setup(torch.device("cpu"))
    init = torch.zeros(113, dtype=torch.float64)
    out = run_probes(
        model,
        nn.CrossEntropyLoss(),
        x,
        y,
        measure=["slices"],
        init_params=init,
        slice_points=3,
        slice_points_2d=2,
    )
    assert set(out["slices"]) == {"random_1d", "random_2d", "interpolation"}
    assert out["hvp_count"] == 0 and out["lambda_max"] is None and out["grad_norm"] > 0
    nothing = run_probes(model, nn.CrossEntropyLoss(), x, y, measure=[])
    assert nothing["hvp_count"] == 0 and nothing["slices"] is None and nothing["loss"] > 0


@pytest.mark.parametrize("trace_method", ["hutchinson", "hutchpp", "xtrace"])
def test_trace_method_is_used_with_the_whole_budget(trace_method):
    model, x, y = setup(torch.device("cpu"))
    out = run_probes(
        model,
        nn.CrossEntropyLoss(),
        x,
        y,
        measure=["trace"],
        trace_method=trace_method,
        hutchinson_vectors=20,
    )
    assert (
        out["trace_method"] == trace_method
        and out["trace_matvecs"] == out["hvp_counts"]["trace"] == 20
    )
    assert out["trace_stderr"] > 0
