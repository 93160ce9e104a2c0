"""Tasks: data generated from a seed or shipped inside a package; nothing is downloaded.

Every factory returns a `TaskData` with a train/test split, the loss, and the input shape
that model builders read. The data is a function of the task config and `data_seed`
only, so runs with different training seeds see the same data.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel
from torch import Tensor

from workers.config import TASK_INPUT_KIND, split_test_size
from workers.errors import UnknownName
from workers.plugins import load_build, task_plugins

DATA_SEED = 1234


@dataclass
class TaskData:
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    loss: str  # "cross_entropy" | "mse"
    input_kind: str  # "vector" | "image" | "sequence"
    input_shape: tuple[int, ...]  # one example's shape (token count for sequences)
    n_outputs: int
    vocab_size: int | None = None  # sequences only
    # deep_linear only: the target map A's singular vectors and values (U, s, V; A = U
    # diag(s) V^T), which the saddle init places a net on.
    modes: tuple[Tensor, Tensor, Tensor] | None = None

    def to(self, device: torch.device, dtype: torch.dtype) -> TaskData:
        def move(t: Tensor) -> Tensor:
            return t.to(device, dtype) if t.is_floating_point() else t.to(device)

        return TaskData(
            move(self.x_train),
            move(self.y_train),
            move(self.x_test),
            move(self.y_test),
            self.loss,
            self.input_kind,
            self.input_shape,
            self.n_outputs,
            self.vocab_size,
            None if self.modes is None else tuple(move(t) for t in self.modes),  # type: ignore[arg-type]
        )


def _split(x: Tensor, y: Tensor, test_fraction: float, gen: torch.Generator):
    perm = torch.randperm(len(x), generator=gen)
    n_test = split_test_size(len(x), test_fraction)
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def make_digits(cfg: Any) -> TaskData:
    """scikit-learn's 8x8 digits, pixels scaled to [0, 1], as 1x8x8 images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float64).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    gen = torch.Generator().manual_seed(DATA_SEED)
    x_train, y_train, x_test, y_test = _split(x, y, cfg.test_fraction, gen)
    if cfg.n_train is not None:  # a subset for landscape studies; the test split is unchanged
        x_train, y_train = x_train[: cfg.n_train], y_train[: cfg.n_train]
    return TaskData(
        x_train,
        y_train,
        x_test,
        y_test,
        loss="cross_entropy",
        input_kind="image",
        input_shape=(1, 8, 8),
        n_outputs=10,
    )


def make_teacher_student(cfg: Any) -> TaskData:
    """Soft committee teacher: y = sum_k erf(w_k . x / sqrt(2 d)), x ~ N(0, I_d).

    Students trained on it sit on a symmetric plateau (all hidden units alike) before they
    specialize (Saad & Solla 1995).
    """
    gen = torch.Generator().manual_seed(DATA_SEED)
    d, k = cfg.input_dim, cfg.teacher_hidden
    w = torch.randn(k, d, generator=gen, dtype=torch.float64)

    def sample(n: int) -> tuple[Tensor, Tensor]:
        x = torch.randn(n, d, generator=gen, dtype=torch.float64)
        y = torch.erf(x @ w.T / math.sqrt(2 * d)).sum(1, keepdim=True)
        return x, y + cfg.noise * torch.randn(n, 1, generator=gen, dtype=torch.float64)

    (xtr, ytr), (xte, yte) = sample(cfg.n_train), sample(cfg.n_test)
    return TaskData(
        xtr, ytr, xte, yte, loss="mse", input_kind="vector", input_shape=(d,), n_outputs=1
    )


def make_deep_linear(cfg: Any) -> TaskData:
    """y = A x with A = U diag(s) V^T and whitened x (Saxe et al. 2014).

    Gradient descent from a small init learns the singular modes one at a time, strongest
    first, with a plateau before each whose length grows as the init scale shrinks.
    """
    gen = torch.Generator().manual_seed(DATA_SEED)
    d_in, d_out, s = cfg.input_dim, cfg.output_dim, cfg.singular_values
    u, _ = torch.linalg.qr(torch.randn(d_out, d_out, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d_in, d_in, generator=gen, dtype=torch.float64))
    r = len(s)
    a = u[:, :r] @ torch.diag(torch.tensor(s, dtype=torch.float64)) @ v[:, :r].T

    def sample(n: int) -> tuple[Tensor, Tensor]:
        x = torch.randn(n, d_in, generator=gen, dtype=torch.float64)
        # Whiten the sample exactly, so E[x x^T] = I holds on the data we train on.
        x = x - x.mean(0)
        cov = x.T @ x / n
        evals, evecs = torch.linalg.eigh(cov)
        x = x @ evecs @ torch.diag(evals.clamp_min(1e-12).rsqrt()) @ evecs.T
        return x, x @ a.T

    (xtr, ytr), (xte, yte) = sample(cfg.n_train), sample(cfg.n_test)
    modes = (u[:, :r], torch.tensor(s, dtype=torch.float64), v[:, :r])
    return TaskData(
        xtr, ytr, xte, yte, loss="mse", input_kind="vector", input_shape=(d_in,),
        n_outputs=d_out, modes=modes,
    )  # fmt: skip


def make_parity(cfg: Any) -> TaskData:
    """Label = parity of the first k of n random +-1 bits (sparse parity when k < n)."""
    gen = torch.Generator().manual_seed(DATA_SEED)
    k = cfg.k or cfg.n_bits

    def sample(n: int) -> tuple[Tensor, Tensor]:
        x = torch.randint(0, 2, (n, cfg.n_bits), generator=gen).to(torch.float64) * 2 - 1
        y = (x[:, :k].prod(1) < 0).long()
        return x, y

    (xtr, ytr), (xte, yte) = sample(cfg.n_train), sample(cfg.n_test)
    return TaskData(
        xtr,
        ytr,
        xte,
        yte,
        loss="cross_entropy",
        input_kind="vector",
        input_shape=(cfg.n_bits,),
        n_outputs=2,
    )


def make_spirals(cfg: Any) -> TaskData:
    """Two interleaved spirals in the plane, with Gaussian noise."""
    gen = torch.Generator().manual_seed(DATA_SEED)

    def sample(n: int) -> tuple[Tensor, Tensor]:
        y = torch.randint(0, 2, (n,), generator=gen)
        t = torch.rand(n, generator=gen, dtype=torch.float64).sqrt() * cfg.turns * 2 * math.pi
        sign = 1 - 2 * y.to(torch.float64)
        x = torch.stack([sign * t * torch.cos(t), sign * t * torch.sin(t)], 1)
        x = x / (cfg.turns * 2 * math.pi)
        return x + cfg.noise * torch.randn(n, 2, generator=gen, dtype=torch.float64), y

    (xtr, ytr), (xte, yte) = sample(cfg.n_train), sample(cfg.n_test)
    return TaskData(
        xtr, ytr, xte, yte, loss="cross_entropy", input_kind="vector", input_shape=(2,), n_outputs=2
    )


def make_modular_addition(cfg: Any) -> TaskData:
    """All pairs (a, b) with label (a + b) mod p; a random `train_fraction` is trained on."""
    gen = torch.Generator().manual_seed(DATA_SEED)
    p = cfg.p
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    x = torch.stack([a.flatten(), b.flatten()], 1)
    y = (x[:, 0] + x[:, 1]) % p
    xtr, ytr, xte, yte = _split(x, y, 1 - cfg.train_fraction, gen)
    return TaskData(
        xtr,
        ytr,
        xte,
        yte,
        loss="cross_entropy",
        input_kind="sequence",
        input_shape=(2,),
        n_outputs=p,
        vocab_size=p,
    )


TASKS: dict[str, Callable[[Any], TaskData]] = {
    "digits": make_digits,
    "teacher_student": make_teacher_student,
    "deep_linear": make_deep_linear,
    "parity": make_parity,
    "spirals": make_spirals,
    "modular_addition": make_modular_addition,
}
assert set(TASKS) | set(task_plugins()) == set(TASK_INPUT_KIND), "TASK_INPUT_KIND is stale"


# The task data of the last few task configs this process built. A Ray worker process runs
# run after run (and pack after pack) of one sweep, which nearly always share their task:
# building it again each time costs a digits run ~12 ms and a plugin's task whatever its
# build does. Callers never write into a TaskData's tensors (`TaskData.to` copies, or returns
# the same tensors when nothing changes, which then stay shared).
TASK_CACHE_SIZE = 8
_task_cache: OrderedDict[tuple[str, str], TaskData] = OrderedDict()


def create_task(cfg: Any) -> TaskData:
    """The task's data, from this process's cache when it was built here before."""
    if not isinstance(cfg, BaseModel):  # not a task config: the factory lookup says why
        return _build_task(cfg)
    key = (type(cfg).__qualname__, cfg.model_dump_json())
    data = _task_cache.get(key)
    if data is None:
        data = _build_task(cfg)
        _task_cache[key] = data
        while len(_task_cache) > TASK_CACHE_SIZE:
            _task_cache.popitem(last=False)
    else:
        _task_cache.move_to_end(key)
    return data


def _build_task(cfg: Any) -> TaskData:
    plugins = task_plugins()
    if cfg.name in TASKS:
        factory = TASKS[cfg.name]
    elif cfg.name in plugins:
        factory = load_build(plugins[cfg.name].build)
    else:
        raise UnknownName("task", cfg.name, [*TASKS, *plugins])
    data = factory(cfg)
    assert data.input_kind == TASK_INPUT_KIND[cfg.name]
    return data


def _mse(out: Tensor, y: Tensor) -> Tensor:
    # 1/2 ||f(x) - y||^2 per example, averaged: the convention of the deep linear theory.
    return 0.5 * ((out - y) ** 2).sum(-1).mean()


def _mse_one_hot(out: Tensor, y: Tensor) -> Tensor:
    # MSE on class labels: the target is the one-hot vector of the label (as in landscape
    # papers that train classifiers with the square loss, e.g. Cohen et al. 2021).
    return _mse(out, torch.nn.functional.one_hot(y, out.shape[-1]).to(out.dtype))


def loss_fn(kind: str, task_loss: str | None = None) -> Callable[[Tensor, Tensor], Tensor]:
    """Mean loss over the batch: cross-entropy on logits, or MSE summed over outputs.

    `task_loss` is the loss the task's targets are made for; MSE on a cross-entropy task's
    class labels compares the outputs with one-hot targets.
    """
    if kind == "cross_entropy":
        if task_loss == "mse":
            raise UnknownName("loss for a regression task", kind, ["mse"])
        return torch.nn.functional.cross_entropy
    if kind == "mse":
        return _mse_one_hot if task_loss == "cross_entropy" else _mse
    raise UnknownName("loss", kind, ["cross_entropy", "mse"])


def batched_loss_fn(kind: str, task_loss: str | None = None) -> Callable[[Tensor, Tensor], Tensor]:
    """`loss_fn(kind, task_loss)` over a leading run dimension: outputs (R, B, ...) and
    targets (R, B, ...) to each run's mean loss (R,). The same as
    torch.vmap(loss_fn(kind, task_loss)) (tests/workers/test_packed.py checks it), with
    cross-entropy computed directly: under vmap it runs as a Python decomposition."""
    single = loss_fn(kind, task_loss)
    if single is not torch.nn.functional.cross_entropy:
        return torch.vmap(single)

    def cross_entropy(out: Tensor, y: Tensor) -> Tensor:
        flat = torch.nn.functional.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none")
        return flat.view(y.shape).mean(1)

    return cross_entropy
