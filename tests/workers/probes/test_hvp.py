"""The HVP operator against a dense float64 Hessian, and its guards."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tests.workers.probes.reference import dense_hessian
from workers.probes import ProbeError
from workers.probes.hvp import METHODS, check_deterministic, make_hvp, random_vector

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def tanh_mlp(device: torch.device, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 3)
    )
    return model.to(device=device, dtype=torch.float64).eval()  # 267 parameters


def data(device: torch.device, n: int = 50, seed: int = 1) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=gen)
    return x.to(device), y.to(device)


# torch's forward-AD decompositions call the deprecated torch.jit.script on first use.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("batch_size", [None, 7])
def test_hvp_equals_dense_hessian_times_v(device, method, batch_size):
    model, (x, y), loss_fn = tanh_mlp(device), data(device), nn.CrossEntropyLoss()
    hvp = make_hvp(model, loss_fn, x, y, method=method, batch_size=batch_size)
    dense = dense_hessian(model, loss_fn, x, y)
    for seed in range(3):
        v = random_vector(hvp.dim, seed=seed, like=hvp)
        torch.testing.assert_close(hvp(v), dense @ v, rtol=1e-10, atol=1e-12)
    assert hvp.dim == 267 and hvp.count == 3 and hvp.mode == "eval"
    # The graph is cached by default exactly when double backward runs on one chunk.
    assert hvp.cache_graph == (method == "double_backward" and batch_size is None)


@pytest.mark.parametrize("batch_size", [None, 7])
def test_cached_graph_gives_the_same_hvp_and_follows_parameter_updates(device, batch_size):
    model, (x, y), loss_fn = tanh_mlp(device), data(device), nn.CrossEntropyLoss()
    cached = make_hvp(model, loss_fn, x, y, batch_size=batch_size, cache_graph=True)
    fresh = make_hvp(model, loss_fn, x, y, batch_size=batch_size, cache_graph=False)
    v = random_vector(cached.dim, seed=0, like=cached)
    for _ in range(2):
        torch.testing.assert_close(cached(v), fresh(v), rtol=1e-12, atol=1e-14)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)  # an in-place step: the cached graph is now stale
    torch.testing.assert_close(
        cached(v), dense_hessian(model, loss_fn, x, y) @ v, rtol=1e-10, atol=1e-12
    )


def test_gradient_and_loss_are_full_data(device):
    model, (x, y), loss_fn = tanh_mlp(device), data(device), nn.CrossEntropyLoss()
    hvp = make_hvp(model, loss_fn, x, y, batch_size=8)  # chunks of 8, 8, ..., 2
    loss = loss_fn(model(x), y)
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, model.parameters())])
    assert hvp.loss() == pytest.approx(loss.item(), rel=1e-12)
    torch.testing.assert_close(hvp.gradient(), grad, rtol=1e-10, atol=1e-12)


def test_params_restricts_to_a_hessian_block(device):
    model, (x, y), loss_fn = tanh_mlp(device), data(device), nn.CrossEntropyLoss()
    names = ["2.weight", "4.bias"]
    hvp = make_hvp(model, loss_fn, x, y, params=names)
    dense = dense_hessian(model, loss_fn, x, y)
    sizes = [p.numel() for p in model.parameters()]
    offsets = torch.tensor([0, *sizes]).cumsum(0).tolist()
    index = {n: i for i, (n, _) in enumerate(model.named_parameters())}
    idx = torch.cat([torch.arange(offsets[index[n]], offsets[index[n] + 1]) for n in names])
    v = random_vector(hvp.dim, seed=0, like=hvp)
    assert hvp.dim == 144 + 3
    torch.testing.assert_close(hvp(v), dense[idx][:, idx] @ v, rtol=1e-10, atol=1e-12)


def test_batchnorm_in_train_mode_leaves_running_stats_alone(device):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3))
    model = model.to(device=device, dtype=torch.float64).train()
    (x, y), loss_fn = data(device), nn.CrossEntropyLoss()
    before = model[1].running_mean.clone()
    hvp = make_hvp(model, loss_fn, x, y, method="double_backward")
    v = random_vector(hvp.dim, seed=0, like=hvp)
    torch.testing.assert_close(
        hvp(v), dense_hessian(model, loss_fn, x, y) @ v, rtol=1e-10, atol=1e-12
    )
    assert hvp.mode == "train" and torch.equal(model[1].running_mean, before)
    with pytest.raises(ProbeError, match="double_backward"):
        make_hvp(model, loss_fn, x, y, method="forward_over_reverse")(v)


def test_check_deterministic_passes_in_eval_and_raises_with_dropout(device):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Dropout(0.5), nn.Linear(12, 3))
    model = model.to(device=device, dtype=torch.float64)
    (x, y), loss_fn = data(device), nn.CrossEntropyLoss()
    assert check_deterministic(make_hvp(model.eval(), loss_fn, x, y), seed=0) <= 1e-12
    with pytest.raises(ProbeError, match="not deterministic in train mode"):
        check_deterministic(make_hvp(model.train(), loss_fn, x, y), seed=0)


def test_linear_loss_has_zero_hessian():
    model = nn.Linear(3, 1, bias=False).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    hvp = make_hvp(model, lambda out, y: out.mean(), x, x[:, 0])
    assert torch.equal(hvp(torch.ones(3, dtype=torch.float64)), torch.zeros(3, dtype=torch.float64))


def test_errors_name_the_bad_value():
    model, (x, y) = tanh_mlp(torch.device("cpu")), data(torch.device("cpu"))
    loss_fn = nn.CrossEntropyLoss()
    with pytest.raises(ProbeError, match="unknown HVP method 'newton'"):
        make_hvp(model, loss_fn, x, y, method="newton")  # type: ignore[arg-type]
    with pytest.raises(ProbeError, match="same, non-zero number of samples"):
        make_hvp(model, loss_fn, x, y[:3])
    with pytest.raises(ProbeError, match="batch_size must be a positive integer"):
        make_hvp(model, loss_fn, x, y, batch_size=0)
    with pytest.raises(ProbeError, match=r"unknown parameter\(s\) \['nope'\]"):
        make_hvp(model, loss_fn, x, y, params=["nope"])
    with pytest.raises(ProbeError, match="no trainable parameters"):
        make_hvp(model, loss_fn, x, y, params=[])
    hvp = make_hvp(model, loss_fn, x, y)
    with pytest.raises(ProbeError, match=r"shape \(267,\), got \(3,\)"):
        hvp(torch.zeros(3, dtype=torch.float64))
    model.train()
    with pytest.raises(ProbeError, match="switched to train mode"):
        hvp(torch.zeros(267, dtype=torch.float64))
    with pytest.raises(ProbeError, match="cache_graph=True needs method='double_backward'"):
        make_hvp(model, loss_fn, x, y, method="forward_over_reverse", cache_graph=True)
    with pytest.raises(ProbeError, match="unknown vector kind 'uniform'"):
        random_vector(3, seed=0, kind="uniform")  # type: ignore[arg-type]


def test_random_vector_is_seeded_and_device_independent():
    a = random_vector(5, seed=3, kind="rademacher")
    assert torch.equal(a, random_vector(5, seed=3, kind="rademacher"))
    assert set(a.tolist()) <= {-1.0, 1.0}
    assert not torch.equal(random_vector(5, seed=3), random_vector(5, seed=4))
