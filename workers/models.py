"""Architectures. Each factory builds an nn.Module from its config, the normalization
choice and the task's input description; normalization sits where it belongs for the
architecture (before the activation in MLPs and convnets, pre-norm in residual blocks and
transformers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from workers.config import ARCH_INPUT_KINDS
from workers.errors import UnknownName
from workers.plugins import architecture_plugins, load_build
from workers.tasks import TaskData

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "linear": nn.Identity,
}


def _norm1d(kind: str, width: int) -> nn.Module:
    return {
        "none": nn.Identity,
        "batchnorm": lambda: nn.BatchNorm1d(width),
        "layernorm": lambda: nn.LayerNorm(width),
    }[kind]()


def _norm2d(kind: str, channels: int) -> nn.Module:
    # GroupNorm with one group normalizes over (C, H, W): LayerNorm for feature maps.
    return {
        "none": nn.Identity,
        "batchnorm": lambda: nn.BatchNorm2d(channels),
        "layernorm": lambda: nn.GroupNorm(1, channels),
    }[kind]()


class OneHot(nn.Module):
    """Token ids (batch, length) -> concatenated one-hot vectors (batch, length * vocab)."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        # Follows model.to(dtype), so the one-hot vectors match the weights' dtype.
        self.register_buffer("dtype_probe", torch.zeros(()), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        one_hot = nn.functional.one_hot(x, self.vocab_size).flatten(1)
        return one_hot.to(self.dtype_probe.dtype)


def _vector_input(data: TaskData) -> tuple[nn.Module, int]:
    """A module turning the task's inputs into flat vectors, and their width."""
    if data.input_kind == "sequence":
        assert data.vocab_size is not None
        return OneHot(data.vocab_size), data.input_shape[0] * data.vocab_size
    width = 1
    for n in data.input_shape:
        width *= n
    return nn.Flatten(), width


def build_mlp(cfg: Any, normalization: str, data: TaskData) -> nn.Module:
    reader, d = _vector_input(data)
    layers: list[nn.Module] = [reader]
    for _ in range(cfg.depth):
        layers += [
            nn.Linear(d, cfg.width),
            _norm1d(normalization, cfg.width),
            ACTIVATIONS[cfg.activation](),
        ]
        d = cfg.width
    layers.append(nn.Linear(d, data.n_outputs))
    return nn.Sequential(*layers)


def build_deep_linear(cfg: Any, normalization: str, data: TaskData) -> nn.Module:
    reader, d = _vector_input(data)
    layers: list[nn.Module] = [reader]
    for _ in range(cfg.depth):
        layers.append(nn.Linear(d, cfg.width, bias=False))
        d = cfg.width
    layers.append(nn.Linear(d, data.n_outputs, bias=False))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """x + W2 act(W1 norm(x)) (pre-norm)."""

    def __init__(self, width: int, activation: str, normalization: str) -> None:
        super().__init__()
        self.norm = _norm1d(normalization, width)
        self.fc1 = nn.Linear(width, width)
        self.act = ACTIVATIONS[activation]()
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


def build_resmlp(cfg: Any, normalization: str, data: TaskData) -> nn.Module:
    reader, d = _vector_input(data)
    blocks = [ResidualBlock(cfg.width, cfg.activation, normalization) for _ in range(cfg.depth)]
    return nn.Sequential(
        reader,
        nn.Linear(d, cfg.width),
        *blocks,
        _norm1d(normalization, cfg.width),
        nn.Linear(cfg.width, data.n_outputs),
    )


def build_cnn(cfg: Any, normalization: str, data: TaskData) -> nn.Module:
    c_in = data.input_shape[0]
    layers: list[nn.Module] = []
    for c in cfg.channels:
        layers += [
            nn.Conv2d(c_in, c, 3, padding=1),
            _norm2d(normalization, c),
            ACTIVATIONS[cfg.activation](),
        ]
        c_in = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, data.n_outputs)]
    return nn.Sequential(*layers)


class TransformerBlock(nn.Module):
    """Pre-norm causal self-attention and MLP, each with a residual connection."""

    def __init__(self, d: int, heads: int, ratio: int, normalization: str) -> None:
        super().__init__()
        self.ln1 = _norm1d(normalization, d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln2 = _norm1d(normalization, d)
        self.mlp = nn.Sequential(nn.Linear(d, ratio * d), nn.GELU(), nn.Linear(ratio * d, d))

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=causal, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class TinyTransformer(nn.Module):
    """Token + position embeddings, blocks, final norm; predicts from the last position."""

    def __init__(self, cfg: Any, normalization: str, data: TaskData) -> None:
        super().__init__()
        assert data.vocab_size is not None
        d = cfg.d_model
        self.tok = nn.Embedding(data.vocab_size, d)
        self.pos = nn.Parameter(torch.zeros(data.input_shape[0], d))
        self.blocks = nn.ModuleList(
            TransformerBlock(d, cfg.n_heads, cfg.mlp_ratio, normalization)
            for _ in range(cfg.n_layers)
        )
        self.ln = _norm1d(normalization, d)
        self.head = nn.Linear(d, data.n_outputs)

    def forward(self, x: Tensor) -> Tensor:  # x: (batch, length) token ids
        h = self.tok(x) + self.pos  # (batch, length, d)
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln(h[:, -1]))  # (batch, n_outputs)


ARCHITECTURES: dict[str, Callable[[Any, str, TaskData], nn.Module]] = {
    "mlp": build_mlp,
    "deep_linear": build_deep_linear,
    "resmlp": build_resmlp,
    "cnn": build_cnn,
    "transformer": TinyTransformer,
}
assert set(ARCHITECTURES) | set(architecture_plugins()) == set(ARCH_INPUT_KINDS), "stale"


def create_model(cfg: Any, normalization: str, data: TaskData) -> nn.Module:
    plugins = architecture_plugins()
    if cfg.name in ARCHITECTURES:
        factory = ARCHITECTURES[cfg.name]
    elif cfg.name in plugins:
        factory = load_build(plugins[cfg.name].build)
    else:
        raise UnknownName("architecture", cfg.name, [*ARCHITECTURES, *plugins])
    return factory(cfg, normalization, data)


def activation_of(cfg: Any) -> str:
    """The nonlinearity that init gains are computed for."""
    return "linear" if cfg.name == "deep_linear" else getattr(cfg, "activation", "relu")
