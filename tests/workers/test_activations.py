"""activation_stats: which outputs it reports and in what order, that the numbers are the
outputs' mean and std, that it leaves the model as it found it, and the Xavier/He profile
of a deep ReLU net (He et al. 2015, Sec. 2.2)."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from torch import Tensor, nn

import workers.activations
from workers.activations import activation_stats
from workers.config import (
    CNNArch,
    DeepLinearArch,
    KaimingNormalInit,
    MLPArch,
    ResMLPArch,
    TransformerArch,
    XavierNormalInit,
)
from workers.inits import apply_init
from workers.models import activation_of, create_model
from workers.tasks import TaskData


def test_docstring_example_runs():
    result = doctest.testmod(workers.activations, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def task_data(input_kind: str, input_shape: tuple[int, ...], vocab_size: int | None = None):
    x, y = torch.zeros(1, 1), torch.zeros(1, dtype=torch.long)  # only the shapes are read
    return TaskData(x, y, x, y, "cross_entropy", input_kind, input_shape, 10, vocab_size)


VECTOR, IMAGE = task_data("vector", (64,)), task_data("image", (1, 8, 8))
SEQUENCE = task_data("sequence", (3,), vocab_size=11)

# (architecture, normalization, task data, input, expected keys)
LAYOUTS = {
    # Sequential: Flatten, (Linear, norm, ReLU) x 2, Linear -> the ReLUs and the logits
    "mlp": (MLPArch(depth=2), "batchnorm", VECTOR, (8, 64), ["3", "6", "7"]),
    # no nonlinearity: every Linear
    "mlp linear": (MLPArch(depth=2, activation="linear"), "none", VECTOR, (8, 64), ["1", "4", "7"]),
    "deep_linear": (DeepLinearArch(depth=2), "none", VECTOR, (8, 64), ["1", "2", "3"]),
    # Flatten, Linear, 2 blocks, norm, Linear -> each block's ReLU and output, the logits
    "resmlp": (
        ResMLPArch(depth=2),
        "layernorm",
        VECTOR,
        (8, 64),
        ["2.act", "2", "3.act", "3", "5"],
    ),
    "cnn": (CNNArch(channels=[4, 8]), "batchnorm", IMAGE, (8, 1, 8, 8), ["2", "5", "8"]),
    "transformer": (
        TransformerArch(d_model=16, n_heads=2, n_layers=2),
        "layernorm",
        SEQUENCE,
        (8, 3),
        ["blocks.0.mlp.1", "blocks.0", "blocks.1.mlp.1", "blocks.1", "head"],
    ),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_architectures_layers_in_forward_order(layout):
    arch, norm, data, shape, expected = LAYOUTS[layout]
    torch.manual_seed(0)
    model = create_model(arch, norm, data)
    x = torch.randint(0, 11, shape) if data.input_kind == "sequence" else torch.randn(shape)
    stats = activation_stats(model, x)
    assert list(stats) == expected
    for s in stats.values():
        assert set(s) == {"mean", "std"}
        assert math.isfinite(s["mean"]) and s["std"] > 0


def test_numbers_are_each_outputs_mean_and_std():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    x = torch.randn(20, 6)
    stats = activation_stats(net, x)
    with torch.no_grad():
        hidden = net[1](net[0](x)).double()
        logits = net(x).double()
    for key, out in (("1", hidden), ("2", logits)):
        # population std over every entry
        expected_std = (out - out.mean()).pow(2).mean().sqrt().item()
        assert stats[key]["mean"] == pytest.approx(out.mean().item(), abs=1e-6)
        assert stats[key]["std"] == pytest.approx(expected_std, rel=1e-5)


def test_a_module_called_twice_is_reported_per_call():
    relu = nn.ReLU()
    net = nn.Sequential(nn.Linear(4, 4), relu, nn.Linear(4, 4), relu, nn.Linear(4, 2))
    assert list(activation_stats(net, torch.randn(3, 4))) == ["1", "1#2", "4"]


class Recorder(nn.Module):
    """Passes its input through and records the mode and grad state it ran under."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append((self.training, torch.is_grad_enabled()))
        return x


def test_runs_in_eval_mode_without_grad_then_restores_modes_and_removes_hooks():
    recorder = Recorder()
    net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), recorder, nn.ReLU(), nn.Linear(8, 2))
    net.train()
    net[4].eval()  # a model partly in eval mode comes back partly in eval mode
    x = torch.randn(64, 4)
    stats = activation_stats(net, x)

    assert recorder.seen == [(False, False)]
    with torch.no_grad():
        net.eval()
        eval_logits = net(x)  # Dropout off: what activation_stats must have seen
    assert stats["4"]["std"] == pytest.approx(eval_logits.double().std(correction=0).item())

    net.train()
    net[4].eval()
    activation_stats(net, x)
    assert [m.training for m in net] == [True, True, True, True, False]
    # no public API lists a module's hooks
    assert all(not m._forward_hooks for m in net.modules())


def test_hooks_removed_and_modes_restored_when_the_forward_fails():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(5, 2))  # 4 != 5: fails
    with pytest.raises(RuntimeError):
        activation_stats(net, torch.randn(3, 4))
    assert all(m.training for m in net.modules())
    assert all(not m._forward_hooks for m in net.modules())


# --- the Xavier / He profile -----------------------------------------------------------

DEPTH, WIDTH = 30, 256


def relu_stds(init) -> list[float]:
    """Per-layer std of the ReLU outputs of a deep MLP on a Gaussian batch. Biases are
    zeroed: PyTorch's default bias adds a variance floor (about 1 / (3 fan_in)) that would
    stop Xavier's decay."""
    arch = MLPArch(depth=DEPTH, width=WIDTH, activation="relu")
    torch.manual_seed(0)
    model = apply_init(create_model(arch, "none", VECTOR), init, activation_of(arch))
    stats = activation_stats(model, torch.randn(512, 64))
    stds = [s["std"] for s in stats.values()]
    assert len(stds) == DEPTH + 1  # the ReLUs, then the logits
    return stds[:DEPTH]


def per_layer_ratio(stds: list[float]) -> float:
    """The geometric mean of std_{l+1} / std_l."""
    return (stds[-1] / stds[0]) ** (1 / (len(stds) - 1))


def test_he_keeps_a_deep_relu_nets_signal_and_glorot_halves_its_power_per_layer():
    # For weights of variance v on n inputs, the std is multiplied by √(n v / 2) per ReLU
    # layer: 1 for He (v = 2/n), 1/√2 for Glorot on square layers (v = 1/n). The tolerance
    # covers finite-width fluctuations: over 20 seeds, 0.69-0.72 for Glorot, 0.97-1.01 for
    # He, whose layers stayed within 0.43-1.58 of the first.
    he = relu_stds(KaimingNormalInit(zeros_bias=True))
    assert per_layer_ratio(he) == pytest.approx(1.0, abs=0.04)
    assert all(1 / 3 < s / he[0] < 3 for s in he), he

    glorot = relu_stds(XavierNormalInit(zeros_bias=True))
    assert per_layer_ratio(glorot) == pytest.approx(1 / math.sqrt(2), abs=0.04)
    assert glorot[-1] / glorot[0] < 1e-3
