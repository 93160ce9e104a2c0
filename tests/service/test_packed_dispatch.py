"""Sweeps executed as packs through the real dispatcher and a local Ray instance: the same
per-step losses and verdicts as one run per task, one result per run, and each run's record
saying how it ran; how the dispatcher cuts reserved runs into tasks.

The numerical equality of the packed loop with `train` over every optimizer, clipping mode
and normalization it accepts is tests/workers/test_packed.py's; here the question is the
service path: leases, attempts, writes, probes and diagnosis per run inside one task."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import select

from db.migrate import upgrade
from db.models import Run, RunMetric, RunResult
from db.session import session_scope
from service.dispatcher import Dispatcher
from service.settings import Settings
from service.spec import SweepSpec
from service.sweeps import submit_sweep
from tests.service.test_dispatcher import cluster

# Every optimizer, normalization and clipping mode the packer takes, in float64: 27 runs in
# 9 packs of 3 (a pack shares the optimizer's update rule and the normalization).
GRID = {
    "name": "packed-vs-single",
    "task": {"name": "digits", "n_train": 256},
    "architectures": [{"name": "mlp", "depth": 2, "width": 16}],
    "optimizers": [
        {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        {"name": "adam", "lr": 0.003},
        {"name": "adamw", "lr": 0.003, "weight_decay": 0.01},
    ],
    "normalization": ["none", "batchnorm", "layernorm"],
    "grad_clip": [None, {"mode": "norm", "threshold": 1.0}, {"mode": "value", "threshold": 0.02}],
    "seeds": [0],
    "budget": {"steps": 40, "batch_size": 32, "log_every": 1, "eval_every": 20},
    "probes": {"at": ["end"], "measure": ["eigenvalues"], "lanczos_steps": 10},
    "dtype": "float64",
}


def submit(url: str, doc: dict) -> int:
    with session_scope(url) as s:
        spec = SweepSpec.model_validate(doc)
        return submit_sweep(session=s, spec=spec, source="api", max_attempts=1).id


def finished(url: str, sweep_id: int) -> bool:
    with session_scope(url) as s:
        states = s.scalars(select(Run.status).where(Run.sweep_id == sweep_id)).all()
    return not {"queued", "running"} & set(states)


def recorded(url: str, sweep_id: int) -> dict[str, dict]:
    """Per config hash: outcome, verdict, execution, attempts and the per-step losses."""
    with session_scope(url) as s:
        rows = s.execute(
            select(Run, RunResult).join(RunResult).where(Run.sweep_id == sweep_id)
        ).all()
        out = {}
        for run, result in rows:
            losses = s.scalars(
                select(RunMetric.loss).where(RunMetric.run_id == run.id).order_by(RunMetric.step)
            ).all()
            out[run.config_hash] = {
                "outcome": result.outcome,
                "verdict": (result.diagnosis or {}).get("verdict"),
                "execution": (result.environment or {}).get("execution"),
                "attempts": run.attempts,
                "losses": losses,
            }
    return out


@pytest.mark.ray
@pytest.mark.slow
def test_a_packed_sweep_records_what_one_run_per_task_records(sqlite_url, local_ray):
    upgrade(sqlite_url)
    single_id = submit(sqlite_url, GRID)
    Dispatcher(Settings(database_url=sqlite_url, poll_seconds=0.2, pack_size=1)).run(
        until=lambda: finished(sqlite_url, single_id), timeout=300
    )
    packed_id = submit(sqlite_url, GRID)
    Dispatcher(Settings(database_url=sqlite_url, poll_seconds=0.2, pack_size=16)).run(
        until=lambda: finished(sqlite_url, packed_id), timeout=300
    )
    single, packed = recorded(sqlite_url, single_id), recorded(sqlite_url, packed_id)
    assert len(single) == len(packed) == 27 and single.keys() == packed.keys()
    assert {r["execution"] for r in single.values()} == {"single"}
    # 2 CPU slots: each slot's share of a group's 3 runs; every run in a pack of 2 or 3.
    assert {r["execution"] for r in packed.values()} <= {"packed(n=2)", "packed(n=3)"}
    worst = 0.0
    for key, one in single.items():
        other = packed[key]
        assert (other["outcome"], other["verdict"], other["attempts"]) == (
            one["outcome"],
            one["verdict"],
            1,
        ), key
        assert len(other["losses"]) == len(one["losses"]) == 40
        for a, b in zip(one["losses"], other["losses"], strict=True):
            assert math.isfinite(a) and abs(a - b) <= 1e-6 * max(1.0, abs(a)), key
            worst = max(worst, abs(a - b))
    print(f"largest per-step loss difference, packed vs one by one: {worst:.2e}")


# --- how reserved runs become tasks (no Ray: the tasks are recorded, not run) --------------


def planned(
    url: str, *, pack_size: int, free_cpus: int, monkeypatch, settings=None, **gpus: float
) -> tuple[list, Dispatcher]:
    """One tick of a dispatcher whose Ray tasks are recorded: the run ids of each task."""
    tasks: list[list[int]] = []
    d = Dispatcher(
        Settings(database_url=url, lease_seconds=30, pack_size=pack_size, **(settings or {}))
    )
    d._collect = lambda: 0
    d._submit = lambda reservation, gpus: tasks.append([reservation.run_id]) or object()
    d._submit_pack = lambda task, gpus: tasks.append([r.run_id for r in task]) or object()
    cluster(monkeypatch, nodes=1, cpus=free_cpus, free_cpus=free_cpus, **gpus)
    d.tick()
    return tasks, d


def small(name: str, seeds: int, **changes) -> dict:
    return {
        "name": name,
        "task": "digits",
        "architectures": [{"name": "mlp", "depth": 1, "width": 8}],
        "optimizers": [{"name": "sgd", "lr": 0.1}],
        "seeds": list(range(seeds)),
        "budget": {"steps": 5},
        **changes,
    }


def test_packs_fill_the_free_slots_and_the_rest_goes_back(migrated_url, monkeypatch):
    submit(migrated_url, small("a", 10))
    tasks, d = planned(migrated_url, pack_size=4, free_cpus=2, monkeypatch=monkeypatch)
    # 2 slots x at most 4 runs: 8 reserved, two packs of 4; the other 2 wait unreserved.
    assert sorted(len(t) for t in tasks) == [4, 4]
    with session_scope(migrated_url) as s:
        owners = s.execute(select(Run.id, Run.lease_owner).order_by(Run.id)).all()
    handed = {i for t in tasks for i in t}
    assert handed == {run_id for run_id, _ in owners[:8]}  # the oldest runs first
    assert all((owner == d.worker_id) == (run_id in handed) for run_id, owner in owners)


def test_a_few_runs_are_split_so_that_every_slot_works(migrated_url, monkeypatch):
    submit(migrated_url, small("a", 6))
    tasks, _ = planned(migrated_url, pack_size=16, free_cpus=2, monkeypatch=monkeypatch)
    assert sorted(len(t) for t in tasks) == [3, 3]


def test_runs_that_do_not_pack_get_a_task_each(migrated_url, monkeypatch):
    submit(migrated_url, small("cnn", 2, architectures=[{"name": "cnn", "channels": [4]}]))
    submit(migrated_url, small("rmsprop", 2, optimizers=[{"name": "rmsprop", "lr": 0.01}]))
    submit(migrated_url, small("mlp", 4))
    tasks, _ = planned(migrated_url, pack_size=16, free_cpus=5, monkeypatch=monkeypatch)
    # The 4 that do not pack take 4 slots; the 4 MLPs share the fifth.
    assert sorted(len(t) for t in tasks) == [1, 1, 1, 1, 4]


def test_pack_size_one_is_a_task_per_run(migrated_url, monkeypatch):
    submit(migrated_url, small("a", 5))
    tasks, _ = planned(migrated_url, pack_size=1, free_cpus=3, monkeypatch=monkeypatch)
    assert tasks == [[1], [2], [3]]
    with session_scope(migrated_url) as s:
        owners = s.scalars(select(Run.lease_owner).order_by(Run.id)).all()
    assert owners[3:] == [None, None]


# --- GPUs: packs hold a whole GPU, a run alone a share of one -------------------------------


def test_gpu_runs_pack_one_per_free_gpu_and_share_a_device_alone(migrated_url, monkeypatch):
    submit(migrated_url, small("cuda", 10, device="cuda"))
    submit(migrated_url, small("cuda-cnn", 2, device="cuda", architectures=["cnn"]))
    submit(migrated_url, small("cpu", 4, device="cpu"))
    gpus = {"gpus": 2.0, "free_gpus": 2.0}
    tasks, d = planned(migrated_url, pack_size=16, free_cpus=8, monkeypatch=monkeypatch, **gpus)
    # Two GPUs free: the 10 cuda MLPs as two packs of 5; the 2 CNNs alone; the 4 CPU runs
    # split over the 4 slots left.
    assert sorted(len(t) for t in tasks) == [1, 1, 1, 1, 1, 1, 5, 5]
    with session_scope(migrated_url) as s:
        device = dict(s.execute(select(Run.id, Run.config["device"].as_string())).all())
    options = {
        tuple(t): d.options_for([d_reservation(migrated_url, i) for i in t], 2.0) for t in tasks
    }
    for task, asked in options.items():
        if device[task[0]] == "cpu":
            assert asked == {}
        elif len(task) > 1:
            assert asked == {"num_gpus": 1}  # a pack holds a whole GPU
        else:
            assert asked == {"num_gpus": 0.25}  # four runs alone share one


def test_gpu_packs_are_sized_to_fit_the_smallest_gpus_memory(migrated_url, monkeypatch):
    from service.dispatcher import GPU_MEMORY_SHARE
    from workers.config import RunConfig
    from workers.packed.grouping import pack_run_bytes

    wide = [{"name": "mlp", "depth": 3, "width": 1024}]
    submit(migrated_url, small("wide", 10, device="cuda", architectures=wide))
    with session_scope(migrated_url) as s:
        per_run = pack_run_bytes(RunConfig.model_validate(s.scalars(select(Run.config)).first()))
    mib = math.ceil(3.5 * per_run / GPU_MEMORY_SHARE / 2**20)  # room for 3 runs, not 4
    gpu = {"gpus": 1.0, "free_gpus": 1.0, "gpu_memory_mib": mib}
    tasks, d = planned(migrated_url, pack_size=16, free_cpus=1, monkeypatch=monkeypatch, **gpu)
    assert [len(t) for t in tasks] == [3]
    d.release()
    # The same room given by the setting, for clusters whose GPU nodes carry no label.
    settings = {"gpu_memory_gib": mib / 1024}
    gpu = {"gpus": 1.0, "free_gpus": 1.0}
    tasks, d = planned(
        migrated_url, pack_size=16, free_cpus=1, monkeypatch=monkeypatch, settings=settings, **gpu
    )
    assert [len(t) for t in tasks] == [3]
    d.release()
    # Without either, gpu_pack_size alone bounds the pack.
    tasks, _ = planned(migrated_url, pack_size=16, free_cpus=1, monkeypatch=monkeypatch, **gpu)
    assert [len(t) for t in tasks] == [10]


def test_a_worker_node_labels_its_gpu_memory_from_nvidia_smi(tmp_path, monkeypatch):
    from service.raycluster import GPU_MEMORY_LABEL, NODE_POOL_LABEL, node_labels

    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi: no GPU, no memory label
    assert node_labels("cpu-workers") == {NODE_POOL_LABEL: "cpu-workers"}
    tool = tmp_path / "nvidia-smi"  # the tool's answer on a node with two GPUs, in MiB
    tool.write_text("#!/bin/sh\nprintf '143771\\n81559\\n'\n")
    tool.chmod(0o755)
    labels = node_labels("gpu-workers")
    assert labels == {NODE_POOL_LABEL: "gpu-workers", GPU_MEMORY_LABEL: "81559"}


def test_auto_runs_go_to_gpus_only_where_the_cluster_has_them(migrated_url, monkeypatch):
    submit(migrated_url, small("auto", 4))
    tasks, d = planned(migrated_url, pack_size=16, free_cpus=2, monkeypatch=monkeypatch)
    reservation = d_reservation(migrated_url, tasks[0][0])
    assert d.options_for([reservation], 0.0) == {}  # no GPU in the cluster: a CPU task
    assert d.options_for([reservation, reservation], 1.0) == {"num_gpus": 1}


def d_reservation(url: str, run_id: int):
    from db.queue import Reservation

    with session_scope(url) as s:
        run = s.get(Run, run_id)
        return Reservation(run_id=run.id, config=run.config)


# --- the examples run packed by default, with the verdicts they have one by one ------------


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("example", ["quickstart.yaml", "deep_linear_init_scale.yaml"])
def test_the_examples_run_packed_with_the_verdicts_they_have_alone(sqlite_url, local_ray, example):
    from service.spec import load_spec_document
    from tests.conftest import ROOT

    upgrade(sqlite_url)
    doc = load_spec_document(ROOT / "examples" / example)
    ids = {}
    for pack_size in (1, Settings().pack_size):  # a task per run, then the default
        ids[pack_size] = submit(sqlite_url, doc)
        Dispatcher(Settings(database_url=sqlite_url, poll_seconds=0.2, pack_size=pack_size)).run(
            until=lambda sweep=ids[pack_size]: finished(sqlite_url, sweep), timeout=600
        )
    single, packed = recorded(sqlite_url, ids[1]), recorded(sqlite_url, ids[16])
    assert single.keys() == packed.keys() and len(single) == doc_runs(doc)
    assert all(r["execution"].startswith("packed(") for r in packed.values())
    verdicts = {k: (r["outcome"], r["verdict"]) for k, r in single.items()}
    assert {k: (r["outcome"], r["verdict"]) for k, r in packed.items()} == verdicts
    worst = max(
        abs(a - b)
        for k in single
        for a, b in zip(single[k]["losses"], packed[k]["losses"], strict=True)
    )
    print(f"{example}: verdicts {sorted(v for _, v in verdicts.values())}; "
          f"largest per-step loss difference (float32, not bitwise) {worst:.1e}")  # fmt: skip


def doc_runs(doc: dict) -> int:
    return SweepSpec.model_validate(doc).grid_size()


def test_a_run_whose_attempt_cannot_be_set_up_leaves_the_rest_of_its_pack_running(migrated_url):
    """Its config does not load in the worker: it is left to its lease (no heartbeat renews
    it), as a one-run task that raises is; the others of the pack are trained and recorded."""
    import dataclasses

    from db import queue
    from workers.runner import execute_pack

    submit(migrated_url, small("pack", 3))
    with session_scope(migrated_url) as s:
        claims = queue.claim_runs(session=s, worker_id="w", limit=3, lease_seconds=2)
    broken = dataclasses.replace(claims[1], config={**claims[1].config, "task": {"name": "nope"}})
    outcomes = execute_pack(
        db_url=migrated_url, claims=[claims[0], broken, claims[2]], lease_seconds=2
    )
    assert outcomes == ["succeeded", "task_error", "succeeded"]
    with session_scope(migrated_url) as s:
        left = s.get(Run, broken.run_id)
        # running under the lease it was claimed with, which nothing renewed
        assert left.status == "running" and left.lease_expires_at == broken.lease_expires_at
        assert s.scalar(select(RunResult.run_id).where(RunResult.run_id == broken.run_id)) is None
