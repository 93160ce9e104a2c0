"""Probing a live training run: the glue between the train loop and workers/probes.

The probe runs on a float64 copy of the model (curvature of a float32 model is too noisy
for eigenvalues near zero, which is where minima, saddles and plateaus differ), over a
fixed probe batch: the first `probes.max_samples` training samples. The model's mode while
probing comes from the spec (`probes.mode`, default eval: BatchNorm uses its running
statistics, so the HVP is deterministic; see pytorch#3076 for why train-mode double
backward through BatchNorm is also 5-25x slower) and is recorded with the result.

The spec maps one to one onto `run_probes`: `measure` (probes not listed cost no HVPs and
leave their columns NULL), `k`, `lanczos_steps` (taken first) and `lanczos_max_steps` (the
cap while the 2k extreme eigenvalues have not converged), `trace_method`,
`hutchinson_vectors` (the trace estimate's products, whatever the method), `slq_vectors`,
`slq_steps`, `slice_points`, `mode`. The table's columns stay the ones below; everything
else (per-eigenvalue convergence, the negative-mass interval, the trace method used, the
HVP counts per probe) goes into `data`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from workers.config import RunConfig
from workers.probes import run_probes
from workers.train import ProbeContext

# Columns of the probe table; everything else run_probes returns goes into `data`.
COLUMNS = (
    "lambda_max",
    "lambda_min",
    "trace",
    "trace_stderr",
    "negative_mass",
    "negative_mass_stderr",
    "grad_norm",
)


def probe_run(config: RunConfig, context: ProbeContext) -> dict[str, Any]:
    """Probe the model at `context.step`; returns a row for db.queue.write_probe."""
    spec = config.probes
    n = min(spec.max_samples, len(context.data.x_train))
    model = copy.deepcopy(context.model).to(torch.float64)

    def f64(t: torch.Tensor) -> torch.Tensor:
        return t[:n].to(torch.float64) if t.is_floating_point() else t[:n]

    out = run_probes(
        model,
        context.loss,
        f64(context.data.x_train),
        f64(context.data.y_train),
        measure=spec.measure,
        k=spec.k,
        lanczos_steps=spec.lanczos_steps,
        lanczos_max_steps=spec.lanczos_max_steps,
        trace_method=spec.trace_method,
        hutchinson_vectors=spec.hutchinson_vectors,
        slq_vectors=spec.slq_vectors,
        slq_steps=spec.slq_steps,
        slice_points=spec.slice_points,
        mode=spec.mode,
        seed=config.seed,
        init_params=context.init_params.to(torch.float64),
    )
    row = {c: out.pop(c, None) for c in COLUMNS}
    out["n_samples"] = n
    return {"step": context.step, "trigger": context.trigger, **row, "data": out}
