"""workers/probing.py: the probe spec reaches run_probes, and the row keeps its columns.

(Here rather than in tests/workers/ so that the probe tests stay in one folder.)
"""

from __future__ import annotations

import json

import torch

from tests.workers.helpers import config
from workers.config import RunConfig
from workers.probing import COLUMNS, probe_run
from workers.tasks import loss_fn
from workers.train import ProbeContext, build


def context(cfg: RunConfig) -> ProbeContext:
    data, model = build(cfg, torch.device("cpu"))
    init = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return ProbeContext(7, "end", model, data, loss_fn(data.loss), init)


def test_the_spec_is_passed_through():
    cfg = config(
        probes={
            "at": ["end"],
            "measure": ["eigenvalues", "trace"],
            "k": 2,
            "lanczos_steps": 10,
            "lanczos_max_steps": 25,
            "trace_method": "hutchpp",
            "hutchinson_vectors": 9,
            "max_samples": 64,
        }
    )
    row = probe_run(cfg, context(cfg))
    data = row["data"]
    assert set(row) == {"step", "trigger", "data", *COLUMNS} and row["step"] == 7
    assert row["negative_mass"] is None and row["negative_mass_stderr"] is None
    assert data["density"] is None and data["slices"] is None
    assert data["measured"] == ["eigenvalues", "trace"] and data["n_samples"] == 64
    assert data["trace_method"] == "hutchpp" and data["trace_matvecs"] == 9
    assert 10 <= data["lanczos_steps"] <= 25 and len(data["top_eigenvalues"]) == 2
    assert data["hvp_counts"] == {
        "check": 2,
        "eigenvalues": data["lanczos_steps"],
        "trace": 9,
        "density": 0,
    }
    assert row["lambda_max"] == data["top_eigenvalues"][0] and row["grad_norm"] > 0
    json.dumps(row, allow_nan=False)


def test_the_default_spec_measures_everything():
    cfg = config(probes={"at": ["end"], "max_samples": 64, "slice_points": 3})
    row = probe_run(cfg, context(cfg))
    data = row["data"]
    assert data["measured"] == ["eigenvalues", "trace", "density", "slices"]
    assert data["trace_method"] == "xtrace" and data["trace_matvecs"] == 20  # auto, 20 >= 16
    assert 40 <= data["lanczos_steps"] <= 300
    assert all(row[c] is not None for c in COLUMNS)
    lo, hi = data["negative_mass_interval"]
    assert lo <= row["negative_mass"] <= hi
    assert set(data["slices"]) == {
        "random_1d",
        "random_2d",
        "top_eigvec_1d",
        "bottom_eigvec_1d",
        "interpolation",
    }
