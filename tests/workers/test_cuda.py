"""The training engine and the probes on CUDA, checked against the CPU. Skipped without a GPU."""

from __future__ import annotations

import pytest
import torch

from tests.workers.helpers import config
from workers.probing import probe_run
from workers.tasks import loss_fn
from workers.train import ProbeContext, TrainHooks, build, train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.mark.parametrize("norm", ["none", "batchnorm"])
def test_training_runs_on_cuda_and_learns(norm):
    cfg = config(
        device="cuda", normalization=norm, budget={"steps": 200, "batch_size": 128, "log_every": 10}
    )
    result = train(cfg)
    assert result.environment["device"].startswith("cuda")
    assert "cuda_device" in result.environment
    assert result.outcome == "succeeded" and result.final_loss < 0.5


def test_cuda_and_cpu_probes_agree_in_float64():
    cfg = config(probes={"at": ["end"], "k": 2, "lanczos_steps": 80}, dtype="float64")
    records = {}
    for device in ("cpu", "cuda"):
        data, model = build(cfg, torch.device(device))
        context = ProbeContext(
            0,
            "end",
            model,
            data,
            loss_fn(data.loss),
            torch.cat([p.detach().reshape(-1) for p in model.parameters()]),
        )
        records[device] = probe_run(cfg, context)
    cpu, gpu = records["cpu"], records["cuda"]
    assert gpu["lambda_max"] == pytest.approx(cpu["lambda_max"], rel=1e-6)
    assert gpu["lambda_min"] == pytest.approx(cpu["lambda_min"], rel=1e-5, abs=1e-8)
    assert gpu["grad_norm"] == pytest.approx(cpu["grad_norm"], rel=1e-8)


def test_probe_hooks_fire_on_cuda():
    seen = []
    cfg = config(device="cuda", probes={"at": ["end"]}, budget={"steps": 50, "batch_size": 64})
    train(cfg, TrainHooks(on_probe=lambda ctx: seen.append(probe_run(cfg, ctx))))
    (probe,) = seen
    assert probe["trigger"] == "end" and probe["lambda_max"] > 0
