"""Each init draws the variance its paper gives; scale and zeros_bias apply to every init; and
the difference this makes at depth: a 30-layer ReLU net trains from He's init, not Glorot's."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from pydantic import TypeAdapter
from torch import nn

from workers.config import InitConfig, MLPArch, RunConfig
from workers.inits import INITS, apply_init
from workers.models import activation_of, create_model
from workers.tasks import TaskData
from workers.train import train

FAN_IN, FAN_OUT = 1024, 512  # a Linear(1024, 512): weight (512, 1024)
TANH_GAIN = 5 / 3


def init_config(spec: dict[str, Any]) -> Any:
    return TypeAdapter(InitConfig).validate_python(spec)


def initialized(layer: nn.Module, spec: dict[str, Any], activation: str, seed: int = 0):
    torch.manual_seed(seed)
    return apply_init(layer, init_config(spec), activation)


def linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(FAN_IN, FAN_OUT)


def assert_variance(w: torch.Tensor, expected: float) -> None:
    # The sample variance of n i.i.d. draws has relative standard error √(2/n) for a
    # Gaussian (less for a uniform): 6 of those, and never below 1%.
    tolerance = max(6 * math.sqrt(2 / w.numel()), 0.01)
    w = w.double()
    assert w.mean().abs() < 6 * math.sqrt(expected / w.numel()), w.mean()
    assert w.var().item() == pytest.approx(expected, rel=tolerance)


# (spec, activation, expected weight variance for FAN_IN, FAN_OUT)
VARIANCES = {
    "xavier_uniform": ({"name": "xavier_uniform"}, "relu", 2 / (FAN_IN + FAN_OUT)),
    "xavier_uniform gain 3": (
        {"name": "xavier_uniform", "gain": 3.0},
        "tanh",
        9 * 2 / (FAN_IN + FAN_OUT),
    ),
    "xavier_normal": ({"name": "xavier_normal"}, "relu", 2 / (FAN_IN + FAN_OUT)),
    "xavier_normal tanh": ({"name": "xavier_normal"}, "tanh", 2 / (FAN_IN + FAN_OUT)),
    "xavier_normal gain 0.5": (
        {"name": "xavier_normal", "gain": 0.5},
        "relu",
        0.25 * 2 / (FAN_IN + FAN_OUT),
    ),
    "kaiming_uniform": ({"name": "kaiming_uniform"}, "relu", 2 / FAN_IN),
    "kaiming_uniform fan_out": (
        {"name": "kaiming_uniform", "mode": "fan_out"},
        "relu",
        2 / FAN_OUT,
    ),
    "kaiming_normal": ({"name": "kaiming_normal"}, "relu", 2 / FAN_IN),
    "kaiming_normal fan_out": ({"name": "kaiming_normal", "mode": "fan_out"}, "relu", 2 / FAN_OUT),
    "kaiming_normal gelu as relu": ({"name": "kaiming_normal"}, "gelu", 2 / FAN_IN),
    "kaiming_normal tanh": ({"name": "kaiming_normal"}, "tanh", TANH_GAIN**2 / FAN_IN),
    "kaiming_normal linear": ({"name": "kaiming_normal"}, "linear", 1 / FAN_IN),
    "lecun_normal": ({"name": "lecun_normal"}, "relu", 1 / FAN_IN),
    "lecun_normal tanh": ({"name": "lecun_normal"}, "tanh", 1 / FAN_IN),
    # A (semi-)orthogonal (rows, cols) matrix has min(rows, cols) unit singular values, so
    # its entries' mean square is gain² / max(rows, cols).
    "orthogonal": ({"name": "orthogonal"}, "relu", 2 / max(FAN_IN, FAN_OUT)),
    "orthogonal linear": ({"name": "orthogonal"}, "linear", 1 / max(FAN_IN, FAN_OUT)),
    "normal": ({"name": "normal", "std": 0.03}, "relu", 0.03**2),
    "uniform": ({"name": "uniform", "bound": 0.05}, "relu", 0.05**2 / 3),
}


@pytest.mark.parametrize("case", sorted(VARIANCES))
def test_each_init_draws_its_papers_variance(case):
    spec, activation, expected = VARIANCES[case]
    layer = initialized(linear(), spec, activation)
    assert_variance(layer.weight, expected)


def test_every_named_init_has_its_variance_checked():
    checked = {spec["name"] for spec, _, _ in VARIANCES.values()}
    assert checked == set(INITS) - {"default"}


def test_conv_fans_count_the_kernel():
    # Conv2d(64, 128, 3): fan_in = 64·9, fan_out = 128·9
    fan_in, fan_out = 64 * 9, 128 * 9
    torch.manual_seed(0)
    xavier = initialized(nn.Conv2d(64, 128, 3), {"name": "xavier_normal"}, "relu")
    assert_variance(xavier.weight, 2 / (fan_in + fan_out))
    he = initialized(nn.Conv2d(64, 128, 3), {"name": "kaiming_normal"}, "relu")
    assert_variance(he.weight, 2 / fan_in)
    lecun = initialized(nn.Conv2d(64, 128, 3), {"name": "lecun_normal"}, "relu")
    assert_variance(lecun.weight, 1 / fan_in)


@pytest.mark.parametrize("activation", ["relu", "linear"])
def test_orthogonal_is_gain_times_an_orthogonal_matrix(activation):
    w = initialized(nn.Linear(256, 128), {"name": "orthogonal"}, activation).weight.double()
    gain2 = 2.0 if activation == "relu" else 1.0
    # (128, 256): orthonormal rows, scaled by the activation's gain (float32 weights)
    eye = torch.eye(128, dtype=torch.float64)
    torch.testing.assert_close(w @ w.T, gain2 * eye, atol=1e-5, rtol=0)


def test_xavier_on_a_relu_mlp_is_glorots_variance_not_hes():
    """The product's own MLP, initialized as training does: every Linear has variance
    2 / (fan_in + fan_out), not the 4 / (fan_in + fan_out) of Glorot's times ReLU's gain²."""
    arch = MLPArch(depth=2, width=1024, activation="relu")
    x, y = torch.zeros(1, 64), torch.zeros(1, dtype=torch.long)  # only the shapes are read
    data = TaskData(x, y, x, y, "cross_entropy", "vector", (64,), n_outputs=1024)
    torch.manual_seed(0)
    model = create_model(arch, "none", data)
    apply_init(model, init_config({"name": "xavier_normal"}), activation_of(arch))
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [m.weight.shape for m in layers] == [(1024, 64), (1024, 1024), (1024, 1024)]
    for m in layers:
        fan_out, fan_in = m.weight.shape
        assert_variance(m.weight, 2 / (fan_in + fan_out))
        assert m.weight.double().var() < 0.75 * 4 / (fan_in + fan_out)


def small_net() -> nn.Sequential:
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(32, 16), nn.LayerNorm(16), nn.Linear(16, 8))


@pytest.mark.parametrize("name", sorted(INITS))
def test_scale_multiplies_every_weight_and_no_bias(name):
    spec = {"name": name}
    reference = initialized(small_net(), spec, "relu")
    scaled = initialized(small_net(), spec | {"scale": 0.3}, "relu")
    for i in (0, 2):
        torch.testing.assert_close(scaled[i].weight, 0.3 * reference[i].weight)
        torch.testing.assert_close(scaled[i].bias, reference[i].bias)
        assert scaled[i].bias.abs().max() > 0
    # the normalization layer is left at weight 1, bias 0
    torch.testing.assert_close(scaled[1].weight, torch.ones(16))
    torch.testing.assert_close(scaled[1].bias, torch.zeros(16))


@pytest.mark.parametrize("name", sorted(INITS))
def test_zeros_bias_zeroes_every_bias_and_only_then(name):
    spec = {"name": name}
    kept = initialized(small_net(), spec, "relu")
    zeroed = initialized(small_net(), spec | {"zeros_bias": True}, "relu")
    for i in (0, 2):
        assert kept[i].bias.abs().min() > 0  # PyTorch's default bias, untouched
        torch.testing.assert_close(kept[i].bias, small_net()[i].bias)
        assert torch.count_nonzero(zeroed[i].bias) == 0
        torch.testing.assert_close(zeroed[i].weight, kept[i].weight)


# --- the phenomenon: He et al. (2015), Fig. 3, on digits -------------------------------


def run_30_layers(init: str, seed: int) -> tuple[float, float]:
    """(final training loss, lowest mean of 10 consecutive step losses)."""
    result = train(
        RunConfig.model_validate(
            {
                "task": {"name": "digits"},
                # 30 hidden Linear+ReLU layers and a Linear readout
                "architecture": {"name": "mlp", "depth": 30, "width": 128, "activation": "relu"},
                "init": {"name": init},
                "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
                "seed": seed,
                "budget": {"steps": 300, "batch_size": 128, "log_every": 10, "eval_every": 300},
                "device": "cpu",
            }
        )
    )
    losses = result.losses
    assert len(losses) == 300
    lowest = min(sum(losses[i : i + 10]) / 10 for i in range(len(losses) - 9))
    return result.final_loss, lowest


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_30_layer_relu_net_trains_from_he_and_stalls_from_glorot(seed):
    # From Glorot's init the signal shrinks by 1/√2 a layer (2^-15 after 30): the logits
    # barely depend on the input and the loss stays at ln 10 ≈ 2.30.
    xavier_final, _ = run_30_layers("xavier_normal", seed)
    assert xavier_final > 2.2
    _, he_lowest = run_30_layers("kaiming_normal", seed)
    assert he_lowest < 1.8
