"""The cost estimate the service's limits read (workers/cost.py), checked against the real
models, and the specs that cannot run, refused by their configs: each refusal's boundary is
trained on both sides, so a refused config really fails and the first accepted one trains."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.spec import SweepSpec, load_spec_document
from service.study_spec import StudySpec
from workers.config import ARCH_NORMALIZATIONS, RunConfig, compatibility_problem, train_size
from workers.cost import parameter_count, probe_count, probe_work, run_cost, task_shape
from workers.models import create_model
from workers.tasks import create_task
from workers.train import train

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

TASKS = [
    {"name": "digits"},
    {"name": "digits", "n_train": 100, "test_fraction": 0.5},
    {"name": "teacher_student", "input_dim": 7, "n_train": 64, "n_test": 32},
    {
        "name": "deep_linear",
        "input_dim": 5,
        "output_dim": 3,
        "n_train": 64,
        "n_test": 32,
        "singular_values": [2.0, 1.0],
    },
    {"name": "parity", "n_bits": 6, "n_train": 64, "n_test": 32},
    {"name": "spirals", "n_train": 64, "n_test": 32},
    {"name": "modular_addition", "p": 7, "train_fraction": 0.3},
]
ARCHITECTURES = [
    {"name": "mlp", "depth": 3, "width": 9},
    {"name": "deep_linear", "depth": 3, "width": 6},
    {"name": "resmlp", "depth": 2, "width": 10},
    {"name": "cnn", "channels": [3, 5]},
    {"name": "transformer", "d_model": 8, "n_heads": 2, "n_layers": 2, "mlp_ratio": 3},
]


def cfg(**overrides) -> RunConfig:
    base = {
        "task": {"name": "digits"},
        "architecture": {"name": "mlp", "depth": 1, "width": 8},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "budget": {"steps": 5, "batch_size": 4, "eval_every": 5},
        "device": "cpu",
    }
    return RunConfig.model_validate(base | overrides)


def every_buildable() -> list[tuple[dict, dict, str]]:
    out = []
    for task, arch in itertools.product(TASKS, ARCHITECTURES):
        for norm in sorted(ARCH_NORMALIZATIONS[arch["name"]]):
            if compatibility_problem(task["name"], arch["name"], norm) is None:
                out.append((task, arch, norm))
    return out


@pytest.mark.parametrize(
    "task,arch,norm", every_buildable(), ids=lambda v: v["name"] if isinstance(v, dict) else v
)
def test_parameters_and_data_size_are_those_of_the_built_model(task, arch, norm):
    config = cfg(task=task, architecture=arch, normalization=norm)
    data = create_task(config.task)
    model = create_model(config.architecture, norm, data)
    shape = task_shape(config.task)
    assert shape is not None
    built = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert parameter_count(config.architecture, norm, shape) == built
    tensors = (data.x_train, data.y_train, data.x_test, data.y_test)
    assert shape.elements == sum(t.numel() for t in tensors)
    assert train_size(config.task) == len(data.x_train)


def test_the_cost_adds_training_and_probing():
    plain = run_cost(cfg(budget={"steps": 100, "batch_size": 32}))
    assert plain.parameters == 64 * 8 + 8 + 8 * 10 + 10
    assert plain.probes == 0 and plain.cost == plain.parameters * 100 * 32
    probed = cfg(
        budget={"steps": 100, "batch_size": 32},
        probes={"at": ["end", "plateau"], "every": 10, "max_samples": 512, "max_plateau_probes": 2},
    )
    assert probe_count(probed) == 9 + 2 + 1  # steps 10..90, plateau entries, the end
    hvps, evaluations = probe_work(probed)
    assert hvps == 2 + 300 + 20 + 4 * 30 and evaluations == 4 * 21 + 11 * 11
    per_probe = 512 * (2 * hvps + evaluations / 3)
    assert run_cost(probed).cost == pytest.approx(plain.parameters * (3200 + 12 * per_probe))
    only_eigs = cfg(probes={"at": ["end"], "measure": ["eigenvalues"], "lanczos_max_steps": 50})
    assert probe_work(only_eigs) == (52, 0)


def test_full_batch_costs_the_training_set_per_step():
    config = cfg(task={"name": "digits", "n_train": 300}, budget={"steps": 10, "full_batch": True})
    assert run_cost(config).samples_per_step == 300


def test_a_plugin_is_not_estimated():
    class Unknown:
        name = "rings"

    assert task_shape(Unknown()) is None and train_size(Unknown()) is None
    shape = task_shape(cfg().task)
    assert shape is not None and parameter_count(Unknown(), "none", shape) is None


@pytest.mark.parametrize(
    "path",
    sorted([*EXAMPLES.glob("*.yaml"), *EXAMPLES.glob("validation/*.yaml")]),
    ids=lambda p: p.name,
)
def test_every_example_is_far_inside_the_default_limits(path):
    from service.limits import check_runs, study_runs, sweep_runs
    from service.settings import Settings

    document = load_spec_document(path)
    if "cron" in document:  # a schedule document (examples/nightly.yaml): its spec
        document = document["spec"]
    if "search_space" in document:
        runs = list(study_runs(StudySpec.model_validate(document)))
    else:
        runs = list(sweep_runs(SweepSpec.model_validate(document)))
    check_runs(runs, Settings())
    strict = Settings(max_run_cost=1e11, max_run_parameters=1e6, max_probes_per_run=20)
    check_runs(runs, strict)  # 1,000x under the cost limit, 100x under the parameter limit


# --- specs that cannot run ------------------------------------------------------------

REFUSED = [
    # (the config, a fragment of the message, the nearest config that runs)
    (
        {"task": {"name": "modular_addition", "p": 2, "train_fraction": 0.01}},
        "train_fraction=0.01 of the p^2 = 4 pairs (p=2) leaves no training pair",
        {"task": {"name": "modular_addition", "p": 2, "train_fraction": 0.2}},
    ),
    (
        {"task": {"name": "modular_addition", "p": 3, "train_fraction": 0.05}},
        "needs train_fraction > 0.0556",
        {"task": {"name": "modular_addition", "p": 3, "train_fraction": 0.06}},
    ),
    (
        {"task": {"name": "digits", "test_fraction": 0.9998}},
        "test_fraction=0.9998 leaves no training samples",
        {"task": {"name": "digits", "test_fraction": 0.999}},
    ),
    (
        {"normalization": "batchnorm", "budget": {"steps": 5, "batch_size": 1}},
        "budget.batch_size 1",
        {"normalization": "batchnorm", "budget": {"steps": 5, "batch_size": 2}},
    ),
    (
        {
            "architecture": {"name": "resmlp", "depth": 1, "width": 8},
            "normalization": "batchnorm",
            "budget": {"steps": 5, "batch_size": 1},
        },
        "needs batches of 2 or more samples",
        {
            "architecture": {"name": "resmlp", "depth": 1, "width": 8},
            "normalization": "layernorm",
            "budget": {"steps": 5, "batch_size": 1},
        },
    ),
    (
        {
            "task": {"name": "modular_addition", "p": 3, "train_fraction": 0.1},
            "normalization": "batchnorm",
            "budget": {"steps": 5, "full_batch": True},
        },
        "full_batch over 1 training samples",
        {
            "task": {"name": "modular_addition", "p": 3, "train_fraction": 0.2},
            "normalization": "batchnorm",
            "budget": {"steps": 5, "full_batch": True},
        },
    ),
    (
        {
            "task": {"name": "modular_addition", "p": 3, "train_fraction": 0.1},
            "normalization": "batchnorm",
            "budget": {"steps": 5, "batch_size": 8},
        },
        "budget.batch_size 8 of a task with 1 training samples",
        {
            "task": {"name": "modular_addition", "p": 3, "train_fraction": 0.1},
            "normalization": "layernorm",
            "budget": {"steps": 5, "batch_size": 8},
        },
    ),
    (
        {
            "task": {"name": "deep_linear", "input_dim": 16, "n_train": 16, "n_test": 32},
            "architecture": {"name": "deep_linear", "depth": 2, "width": 8},
        },
        "n_train=16 samples cannot be whitened in input_dim=16 dimensions",
        {
            "task": {"name": "deep_linear", "input_dim": 16, "n_train": 17, "n_test": 32},
            "architecture": {"name": "deep_linear", "depth": 2, "width": 8},
        },
    ),
    (
        {
            "task": {"name": "deep_linear", "input_dim": 20, "n_train": 64, "n_test": 16},
            "architecture": {"name": "deep_linear", "depth": 2, "width": 8},
        },
        "n_test=16 samples cannot be whitened",
        {
            "task": {"name": "deep_linear", "input_dim": 15, "n_train": 64, "n_test": 16},
            "architecture": {"name": "deep_linear", "depth": 2, "width": 8},
        },
    ),
    ({"optimizer": {"name": "sgd", "lr": float("inf")}}, "finite number", None),
    ({"target": {"loss": float("nan")}}, "finite number", None),
]


@pytest.mark.parametrize("bad,message,good", REFUSED, ids=[r[1][:40] for r in REFUSED])
def test_a_config_that_cannot_run_is_refused_and_its_nearest_runnable_one_trains(
    bad, message, good
):
    with pytest.raises(ValidationError, match=re.escape(message)):
        cfg(**bad)
    if good is not None:
        assert train(cfg(**good)).outcome == "succeeded"


def test_what_was_refused_does_fail_in_training():
    """Without the checks the worker would fail: the refused configs built by hand."""
    from workers.config import ModularAdditionTask

    empty = ModularAdditionTask.model_construct(p=2, train_fraction=0.01)
    with pytest.raises(RuntimeError):
        train(cfg().model_copy(update={"task": empty}))
    one = cfg(normalization="batchnorm").model_copy(
        update={"budget": cfg().budget.model_copy(update={"batch_size": 1})}
    )
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        train(one)


def test_the_batchnorm_1d_architectures_are_those_whose_models_have_one():
    from torch import nn

    from workers.config import BATCHNORM_1D_ARCHITECTURES

    built = set()
    for task, arch, norm in every_buildable():
        if norm == "batchnorm":
            config = cfg(task=task, architecture=arch, normalization=norm)
            model = create_model(config.architecture, norm, create_task(config.task))
            if any(isinstance(m, nn.BatchNorm1d) for m in model.modules()):
                built.add(arch["name"])
    assert built == BATCHNORM_1D_ARCHITECTURES


def test_sweep_and_study_specs_refuse_batchnorm_on_single_samples():
    sweep = {
        "name": "x",
        "task": "digits",
        "architectures": [{"name": "mlp"}],
        "optimizers": [{"name": "sgd", "lr": 0.1}],
        "normalization": ["none", "batchnorm"],
        "budget": {"steps": 5, "batch_size": 1},
    }
    with pytest.raises(
        ValidationError, match="architectures\\[0\\] with normalization 'batchnorm'"
    ):
        SweepSpec.model_validate(sweep)
    study = {
        "name": "x",
        "task": "digits",
        "architecture": {"name": "mlp"},
        "fixed": {"optimizer": {"name": "sgd", "lr": 0.1}, "budget": {"steps": 5, "batch_size": 1}},
        "search_space": {"normalization": ["batchnorm"]},
    }
    with pytest.raises(ValidationError, match="search_space.normalization 'batchnorm'"):
        StudySpec.model_validate(study)
