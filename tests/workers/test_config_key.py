"""What a configuration is: config_key hashes what changes the training, and measuring a
run (probes, logging, threads) does not change its curve."""

from __future__ import annotations

from typing import Any

import pytest

from workers.config import RunConfig, key_document
from workers.probing import probe_run
from workers.train import TrainHooks, train

BASE: dict[str, Any] = {
    "task": {"name": "digits"},
    "architecture": {"name": "mlp", "depth": 2, "width": 16},
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "budget": {"steps": 60, "batch_size": 32},
}


def key(**changes: Any) -> str:
    doc = {**BASE, **changes}
    return RunConfig.model_validate(doc).config_key()


@pytest.mark.parametrize(
    "measured",
    [
        {"probes": {"at": ["end"], "k": 5}},
        {"budget": {**BASE["budget"], "log_every": 10, "eval_every": 7}},
        {"threads": 2},
        {"device": "cpu"},
        {"plateau": {"window": 40, "min_length": 80}},
        {"seed": 3},
        {"loss": "cross_entropy"},  # digits' own loss, written out
    ],
)
def test_what_is_measured_or_how_leaves_the_key_alone(measured):
    assert key(**measured) == key()


@pytest.mark.parametrize(
    "trained",
    [
        {"loss": "mse"},
        {"budget": {**BASE["budget"], "full_batch": True}},
        {"budget": {**BASE["budget"], "steps": 61}},
        {"budget": {**BASE["budget"], "batch_size": 33}},
        {"divergence": {"factor": 20}},
        {"divergence": {"patience": 5}},
        {"target": {"loss": 0.2}},
        {"dtype": "float64"},
        {"init": {"name": "xavier_normal", "gain": 2.0}},
        {"grad_clip": {"threshold": 1.0}},
        {"normalization": "batchnorm"},
        {"task": {"name": "digits", "n_train": 500}},
    ],
)
def test_what_changes_the_training_changes_the_key(trained):
    assert key(**trained) != key()


def test_full_batch_ignores_the_batch_size_and_inits_carry_their_version():
    full = {**BASE["budget"], "full_batch": True}
    assert key(budget=full) == key(budget={**full, "batch_size": 7})
    doc = RunConfig.model_validate({**BASE, "init": {"name": "xavier_normal"}})
    assert key_document(doc.model_dump(mode="json"))["init"]["version"] == 2
    doc = RunConfig.model_validate({**BASE, "init": {"name": "orthogonal"}})
    assert key_document(doc.model_dump(mode="json"))["init"]["version"] == 1


def test_regression_tasks_refuse_cross_entropy():
    with pytest.raises(ValueError, match="regression task"):
        RunConfig.model_validate({**BASE, "task": {"name": "deep_linear"}, "loss": "cross_entropy"})


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_a_probed_run_has_the_same_curve_as_an_unprobed_one(mode):
    """Probing in train mode runs BatchNorm on batch statistics; it must not touch the
    training model's running statistics, its parameters, or the batches it draws."""
    spec = {
        **BASE,
        "normalization": "batchnorm",
        "budget": {**BASE["budget"], "log_every": 1, "eval_every": 20},
    }
    plain = train(RunConfig.model_validate(spec))
    probed_config = RunConfig.model_validate(
        {
            **spec,
            "probes": {
                "at": ["end"],
                "every": 20,
                "mode": mode,
                "k": 1,
                "lanczos_steps": 5,
                "lanczos_max_steps": 5,
                "hutchinson_vectors": 2,
                "slq_vectors": 2,
                "slq_steps": 3,
                "slice_points": 3,
                "max_samples": 64,
            },
        }
    )
    probes: list[dict] = []
    hooks = TrainHooks(on_probe=lambda c: probes.append(probe_run(probed_config, c)))
    probed = train(probed_config, hooks)
    assert [p["step"] for p in probes] == [20, 40, 60]
    assert probed.losses == plain.losses  # bitwise: same batches, same updates
    assert probed.final_loss == plain.final_loss and probed.test_loss == plain.test_loss
    assert probed_config.config_key() == RunConfig.model_validate(spec).config_key()
