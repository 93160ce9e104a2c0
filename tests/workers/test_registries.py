"""Every registry entry trains: a few steps lower the full training loss."""

from __future__ import annotations

import pytest
import torch

from tests.workers.helpers import SMALL_TASKS, config, trains
from workers.errors import UnknownName
from workers.inits import INITS, apply_init
from workers.models import ARCHITECTURES, create_model
from workers.optim import OPTIMIZERS, create_optimizer
from workers.tasks import TASKS, create_task

TASK_ARCH = {
    "digits": {"name": "mlp", "depth": 2, "width": 32},
    "teacher_student": {"name": "mlp", "depth": 1, "width": 16, "activation": "tanh"},
    "deep_linear": {"name": "deep_linear", "depth": 2, "width": 16},
    "parity": {"name": "mlp", "depth": 2, "width": 64},
    "spirals": {"name": "mlp", "depth": 3, "width": 64, "activation": "tanh"},
    "modular_addition": {"name": "mlp", "depth": 1, "width": 64},
}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_trains(task):
    before, result = trains(config(task=SMALL_TASKS[task], architecture=TASK_ARCH[task]))
    assert result.outcome == "succeeded"
    assert result.final_loss < 0.95 * before, (before, result.final_loss)


ARCHS = {
    "mlp": ("digits", {"name": "mlp", "depth": 2, "width": 32, "activation": "gelu"}),
    "deep_linear": ("deep_linear", {"name": "deep_linear", "depth": 3, "width": 16}),
    "resmlp": ("digits", {"name": "resmlp", "depth": 2, "width": 32}),
    "cnn": ("digits", {"name": "cnn", "channels": [8, 16]}),
    "transformer": ("modular_addition", {"name": "transformer", "d_model": 32, "n_heads": 4}),
}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("norm", ["none", "batchnorm", "layernorm"])
def test_every_architecture_and_normalization_trains(arch, norm):
    task, arch_cfg = ARCHS[arch]
    try:
        # a convnet without normalization needs more than 40 steps to get going
        steps = 150 if arch == "cnn" else 40
        cfg = config(
            task=SMALL_TASKS[task],
            architecture=arch_cfg,
            normalization=norm,
            budget={"steps": steps, "batch_size": 64, "eval_every": 50},
        )
    except ValueError as e:  # combinations refused at submission
        assert "not offered" in str(e)
        assert (arch, norm) in {
            ("deep_linear", "batchnorm"),
            ("deep_linear", "layernorm"),
            ("transformer", "batchnorm"),
        }
        return
    before, result = trains(cfg)
    assert result.final_loss < 0.95 * before, (before, result.final_loss)


INIT_CFGS = {
    "default": {"name": "default"},
    "xavier_uniform": {"name": "xavier_uniform"},
    "xavier_normal": {"name": "xavier_normal", "zeros_bias": True},
    "kaiming_uniform": {"name": "kaiming_uniform", "mode": "fan_out"},
    "kaiming_normal": {"name": "kaiming_normal"},
    "lecun_normal": {"name": "lecun_normal", "scale": 0.5},
    "orthogonal": {"name": "orthogonal"},
    "normal": {"name": "normal", "std": 0.1},
    "uniform": {"name": "uniform", "bound": 0.1},
}


@pytest.mark.parametrize("init", sorted(INITS))
def test_every_init_trains(init):
    before, result = trains(config(init=INIT_CFGS[init]))
    assert result.final_loss < 0.95 * before


OPT_CFGS = {
    "sgd": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
    "adam": {"name": "adam", "lr": 0.01},
    "adamw": {"name": "adamw", "lr": 0.01, "weight_decay": 0.01},
    "rmsprop": {"name": "rmsprop", "lr": 0.003},
    "adagrad": {"name": "adagrad", "lr": 0.05},
}


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize(
    "schedule",
    [{"name": "constant"}, {"name": "cosine"}, {"name": "linear_warmup", "warmup_steps": 10}],
)
def test_every_optimizer_and_schedule_trains(opt, schedule):
    before, result = trains(config(optimizer=OPT_CFGS[opt] | {"schedule": schedule}))
    assert result.final_loss < 0.95 * before


@pytest.mark.parametrize(
    "clip", [{"mode": "norm", "threshold": 0.5}, {"mode": "value", "threshold": 0.01}]
)
def test_clipping_trains_and_records_its_fraction(clip):
    before, result = trains(config(grad_clip=clip, optimizer=OPT_CFGS["sgd"]))
    assert result.final_loss < before
    assert 0 < result.clip_fraction <= 1


def test_no_clipping_records_no_fraction():
    assert trains(config())[1].clip_fraction is None


def test_unknown_names_list_the_valid_ones():
    class Named:
        name = "nope"

    for create in (
        create_task,
        lambda c: create_model(c, "none", None),
        lambda c: apply_init(None, c, "relu"),
        lambda c: create_optimizer([], c),
    ):
        with pytest.raises(UnknownName, match="expected one of: ") as info:
            create(Named())
        assert "'nope'" in str(info.value)


@pytest.mark.parametrize(
    "task,arch,why",
    [
        ("parity", {"name": "cnn"}, "cannot read the vector inputs"),
        ("digits", {"name": "transformer"}, "cannot read the image inputs"),
        ("modular_addition", {"name": "cnn"}, "cannot read the sequence inputs"),
    ],
)
def test_impossible_combinations_are_refused_at_validation(task, arch, why):
    with pytest.raises(ValueError, match=why):
        config(task=SMALL_TASKS[task], architecture=arch)


def test_the_config_schemas_name_exactly_the_registered_entries():
    """The API validates against workers.config's unions; the workers run the registries."""
    from workers.config import ArchConfig, InitConfig, OptimizerConfig, TaskConfig, names_of

    assert set(names_of(TaskConfig)) == set(TASKS)
    assert set(names_of(ArchConfig)) == set(ARCHITECTURES)
    from workers.inits import DATA_INITS

    assert set(names_of(InitConfig)) == set(INITS) | set(DATA_INITS)
    assert set(names_of(OptimizerConfig)) == set(OPTIMIZERS)


def test_a_worker_process_builds_a_task_once_and_keeps_it():
    from workers.config import DigitsTask
    from workers.tasks import TASK_CACHE_SIZE, _build_task

    first = create_task(DigitsTask(n_train=300))
    assert create_task(DigitsTask(n_train=300)) is first  # an equal config: the kept data
    fresh = _build_task(DigitsTask(n_train=300))
    assert torch.equal(first.x_train, fresh.x_train) and torch.equal(first.y_test, fresh.y_test)
    other = create_task(DigitsTask(n_train=200))
    assert other is not first and len(other.x_train) == 200
    for n in range(100, 100 + TASK_CACHE_SIZE):  # the oldest entries make room
        create_task(DigitsTask(n_train=n))
    assert create_task(DigitsTask(n_train=300)) is not first
