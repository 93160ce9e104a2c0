"""Packed training against the reference, one-by-one `workers.train.train`: the same
per-step losses (float64, to 1e-6), evidence rows, probes, results and verdicts, over every
optimizer, clipping mode and normalization the packer accepts; runs leaving a pack
(diverged, pruned, stopped, failed hooks, shorter budgets) leave the others unchanged; what
cannot pack is refused and runs one by one."""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from workers.config import RunConfig
from workers.diagnose import diagnose
from workers.errors import Stopped, Unpackable
from workers.models import create_model
from workers.packed.grouping import packable
from workers.packed.model import PackedModel
from workers.packed.train import train_many, train_packed
from workers.probing import probe_run
from workers.tasks import batched_loss_fn, create_task, loss_fn
from workers.train import TrainHooks, TrainResult, train

TOL = 1e-6
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def small(**overrides: Any) -> RunConfig:
    """A float64 run small enough to train a few dozen steps in a few milliseconds each."""
    base: dict[str, Any] = {
        "task": {"name": "digits", "n_train": 256},
        "architecture": {"name": "mlp", "depth": 2, "width": 16},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        "budget": {"steps": 25, "batch_size": 32, "log_every": 1, "eval_every": 10},
        "plateau": {"window": 5, "min_length": 8},
        "device": "cpu",
        "dtype": "float64",
    }
    return RunConfig.model_validate(base | overrides)


@dataclass
class Recorded:
    """What a run's hooks received, and how the run ended."""

    config: RunConfig
    rows: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)
    outcome: TrainResult | Exception | None = None

    def hooks(self, **extra: Any) -> TrainHooks:
        def on_probe(context: Any) -> None:
            self.probes.append(probe_run(self.config, context))

        return TrainHooks(on_metrics=self.rows.extend, on_probe=on_probe, **extra)

    @property
    def result(self) -> TrainResult:
        assert isinstance(self.outcome, TrainResult), self.outcome
        return self.outcome

    def verdict(self) -> str:
        end = next((p for p in reversed(self.probes) if p["trigger"] == "end"), None)
        return diagnose(self.result, self.config, end)["verdict"]


def one_by_one(
    configs: list[RunConfig], hook_args: dict[int, dict[str, Any]] | None = None
) -> list[Recorded]:
    """Each run trained alone; `hook_args`: extra TrainHooks arguments by seed."""
    hook_args = hook_args or {}
    out = []
    for config in configs:
        rec = Recorded(config)
        try:
            rec.outcome = train(config, rec.hooks(**hook_args.get(config.seed, {})))
        except Stopped as e:
            rec.outcome = e
        out.append(rec)
    return out


def packed(
    configs: list[RunConfig], hook_args: dict[int, dict[str, Any]] | None = None
) -> list[Recorded]:
    hook_args = hook_args or {}
    recs = [Recorded(c) for c in configs]
    hooks = [r.hooks(**hook_args.get(c.seed, {})) for r, c in zip(recs, configs, strict=True)]
    for rec, outcome in zip(recs, train_packed(configs, hooks), strict=True):
        rec.outcome = outcome
    return recs


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    if not math.isfinite(a):
        return not math.isfinite(b)
    return abs(a - b) <= TOL * max(1.0, abs(a))


def assert_losses_equal(a: list[float], b: list[float]) -> None:
    assert len(a) == len(b)
    worst = max((abs(x - y) / max(1.0, abs(x)) for x, y in zip(a, b, strict=True)), default=0)
    assert worst <= TOL, f"per-step losses differ by {worst:.2e}"


def assert_same_rows(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert x["clipped"] == y["clipped"], x["step"]
        for key in ("loss", "lr", "grad_norm", "update_norm", "param_norm", "eval_loss"):
            assert close(x[key], y[key]), (x["step"], key, x[key], y[key])
        assert x["eval_accuracy"] == pytest.approx(y["eval_accuracy"], abs=1e-12)
        assert x["layer_grad_norms"].keys() == y["layer_grad_norms"].keys()
        for layer, norm in x["layer_grad_norms"].items():
            assert close(norm, y["layer_grad_norms"][layer]), (x["step"], layer)
        stats_x, stats_y = x["activation_stats"], y["activation_stats"]
        assert (stats_x is None) == (stats_y is None)
        if stats_x is not None:
            assert list(stats_x) == list(stats_y)
            for layer, s in stats_x.items():
                assert close(s["mean"], stats_y[layer]["mean"])
                assert close(s["std"], stats_y[layer]["std"])


def assert_same(single: Recorded, pack: Recorded, size: int) -> None:
    """The packed run is the single run: losses, evidence, result, probes and verdict."""
    a, b = single.result, pack.result
    assert_losses_equal(a.losses, b.losses)
    for key in ("outcome", "steps_done", "diverged_step", "pruned_step", "steps_to_target"):
        assert getattr(a, key) == getattr(b, key), key
    for key in ("final_loss", "test_loss", "test_accuracy", "clip_fraction", "plateau_fraction"):
        assert close(getattr(a, key), getattr(b, key)), (key, getattr(a, key), getattr(b, key))
    spans = [(s["start"], s["end"]) for s in a.plateaus["segments"]]
    assert spans == [(s["start"], s["end"]) for s in b.plateaus["segments"]]
    assert_same_rows(single.rows, pack.rows)
    assert [(p["step"], p["trigger"]) for p in single.probes] == [
        (p["step"], p["trigger"]) for p in pack.probes
    ]
    for p, q in zip(single.probes, pack.probes, strict=True):
        for key in ("lambda_max", "lambda_min", "grad_norm"):
            assert close(p[key], q[key]), (p["step"], key, p[key], q[key])
    assert single.verdict() == pack.verdict()
    assert a.environment["execution"] == "single"
    assert b.environment["execution"] == f"packed(n={size})"


def assert_pack_matches(configs: list[RunConfig]) -> list[Recorded]:
    singles, packs = one_by_one(configs), packed(configs)
    for single, pack in zip(singles, packs, strict=True):
        assert_same(single, pack, len(configs))
    return singles


OPTIMIZERS = {
    "sgd-momentum": [{"name": "sgd", "lr": lr, "momentum": 0.9} for lr in (0.1, 0.05, 0.02)],
    "sgd-nesterov-wd-cosine": [
        {
            "name": "sgd",
            "lr": lr,
            "momentum": mu,
            "nesterov": True,
            "weight_decay": wd,
            "schedule": {"name": "cosine", "min_factor": 0.1},
        }
        for lr, mu, wd in ((0.1, 0.9, 1e-3), (0.05, 0.5, 0.0), (0.2, 0.8, 1e-2))
    ],
    "adam-wd": [
        {"name": "adam", "lr": lr, "beta1": b1, "weight_decay": wd}
        for lr, b1, wd in ((0.01, 0.9, 0.0), (0.003, 0.8, 1e-3), (0.02, 0.95, 0.0))
    ],
    "adamw-warmup": [
        {"name": "adamw", "lr": lr, "schedule": {"name": "linear_warmup", "warmup_steps": 5}}
        for lr in (0.01, 0.003, 0.03)
    ],
}
CLIPS = [None, {"mode": "norm", "threshold": 0.5}, {"mode": "value", "threshold": 0.01}]
INITS = [{"name": "default"}, {"name": "orthogonal"}, {"name": "normal", "std": 0.1}]


@pytest.mark.parametrize("normalization", ["none", "batchnorm", "layernorm"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_a_pack_trains_as_its_runs_do_one_by_one(optimizer, normalization):
    """Each pack holds the three clipping modes (none, norm, value) with their own seeds,
    inits and hyperparameters."""
    configs = [
        small(seed=i, optimizer=opt, grad_clip=clip, init=init, normalization=normalization)
        for i, (opt, clip, init) in enumerate(zip(OPTIMIZERS[optimizer], CLIPS, INITS, strict=True))
    ]
    singles = assert_pack_matches(configs)
    # The comparison is worth something only if clipping acted.
    assert singles[1].result.clip_fraction > 0 and singles[2].result.clip_fraction > 0


@pytest.mark.parametrize(
    "task, extra",
    [
        ({"name": "teacher_student", "n_train": 64, "n_test": 32}, {"full_batch": True}),
        ({"name": "digits", "n_train": 256}, {"loss": "mse"}),  # one-hot targets
        ({"name": "modular_addition", "p": 7}, {}),  # token inputs, one-hot encoded
    ],
    ids=["full-batch-mse", "digits-mse", "tokens"],
)
def test_packs_over_other_tasks_losses_and_full_batch(task, extra):
    budget = {"steps": 20, "batch_size": 16, "eval_every": 10}
    budget |= {"full_batch": True} if extra.get("full_batch") else {}
    loss = {"loss": extra["loss"]} if "loss" in extra else {}
    configs = [
        small(task=task, seed=s, budget=budget, optimizer={"name": "sgd", "lr": lr}, **loss)
        for s, lr in ((0, 0.05), (1, 0.1))
    ]
    assert_pack_matches(configs)


def test_probes_at_plateaus_every_n_steps_and_the_end_run_in_the_pack():
    """A deep linear net from small inits sits on plateaus: probes at their entries, every
    N steps and at the end, on each run's own model, give what they give one by one."""
    configs = [
        small(
            task={
                "name": "deep_linear",
                "n_train": 64,
                "n_test": 32,
                "input_dim": 8,
                "output_dim": 8,
                "singular_values": [4.0, 1.0],
            },
            architecture={"name": "deep_linear", "depth": 3, "width": 8},
            init={"name": "orthogonal", "scale": scale},
            optimizer={"name": "sgd", "lr": lr},
            seed=seed,
            budget={"steps": 80, "batch_size": 32, "eval_every": 40},
            plateau={"window": 10, "min_length": 15},
            probes={
                "at": ["plateau", "end"],
                "every": every,
                "measure": ["eigenvalues"],
                "k": 1,
                "lanczos_steps": 8,
                "lanczos_max_steps": 8,
                "max_samples": 32,
            },
        )
        for scale, seed, lr, every in (
            (0.2, 0, 0.02, None),
            (0.3, 1, 0.02, None),
            (0.5, 0, 0.05, 30),
        )
    ]
    singles = assert_pack_matches(configs)
    triggers = {p["trigger"] for s in singles for p in s.probes}
    assert triggers == {"plateau", "every", "end"}


def test_a_run_diverging_mid_pack_leaves_the_others_unchanged():
    calm = [small(seed=0), small(seed=2, optimizer={"name": "sgd", "lr": 0.05})]
    wild = small(seed=1, optimizer={"name": "sgd", "lr": 50.0, "momentum": 0.9})
    alone, together = packed(calm), packed([calm[0], wild, calm[1]])
    reference = one_by_one([wild])[0]
    assert_same(reference, together[1], 3)
    diverged = together[1].result
    assert diverged.outcome == "diverged" and 0 < diverged.diverged_step < 20
    for before, after in zip(alone, [together[0], together[2]], strict=True):
        assert after.result.steps_done == 25
        assert after.result.losses == pytest.approx(before.result.losses, rel=1e-12, abs=0)


def test_runs_leave_the_pack_at_their_budget_pruner_stop_or_failing_hook():
    def stop_from(step: int) -> Any:
        calls = iter(range(10**6))
        return lambda: next(calls) >= step

    def failing_metrics(rows: list[dict[str, Any]]) -> None:
        raise RuntimeError("lease lost while writing metrics")

    configs = [
        small(seed=0),
        small(seed=1, budget={"steps": 10, "batch_size": 32, "log_every": 1}),
        small(seed=2),
        small(seed=3),
        small(seed=4),
    ]
    hook_args = {
        2: {"on_report": lambda step, loss, plateau: step >= 10, "report_every": 5},
        3: {"should_stop": stop_from(7), "flush_rows": 4},
        4: {"flush_rows": 3},
    }
    singles = one_by_one(configs[:4], hook_args)
    hook_args[3] = {"should_stop": stop_from(7), "flush_rows": 4}  # a fresh counter
    recs = [Recorded(c) for c in configs]
    hooks = [r.hooks(**hook_args.get(c.seed, {})) for r, c in zip(recs, configs, strict=True)]
    hooks[4].on_metrics = failing_metrics
    asked: list[int] = []  # should_stop is asked once a step, also after others stopped
    hooks[0].should_stop = lambda: asked.append(1) is not None
    outcomes = train_packed(configs, hooks)
    assert len(asked) == 25
    for rec, outcome in zip(recs, outcomes, strict=True):
        rec.outcome = outcome

    assert_same(singles[0], recs[0], 5)
    assert_same(singles[1], recs[1], 5)
    assert recs[1].result.steps_done == 10
    assert_same(singles[2], recs[2], 5)
    assert recs[2].result.pruned_step == 10
    assert isinstance(recs[3].outcome, Stopped) and isinstance(singles[3].outcome, Stopped)
    assert (
        [r["step"] for r in recs[3].rows] == [r["step"] for r in singles[3].rows] == list(range(7))
    )
    assert isinstance(outcomes[4], RuntimeError)


def example(name: str) -> list[RunConfig]:
    """The runs of a sweep spec in examples/ (the service's expansion: skipped where only
    the worker's dependencies are installed, as on a lent GPU machine)."""
    spec = pytest.importorskip("service.spec")
    document = spec.load_spec_document(EXAMPLES / name)
    return spec.SweepSpec.model_validate(document).expand()


def test_the_example_grids_pack_whole():
    quickstart = example("quickstart.yaml")
    packing = packable(quickstart)
    # BatchNorm adds layers, so a pack holds one optimizer and one normalization: 4 x 6.
    assert [len(p) for p in packing.packs] == [6] * 4 and not packing.single
    for pack in packing.packs:  # every init and clipping mode
        assert len({quickstart[i].init for i in pack}) == 3
        assert len({quickstart[i].grad_clip for i in pack}) == 2
    deep_linear = example("deep_linear_init_scale.yaml")
    assert packable(deep_linear).packs == [list(range(10))]


def test_the_quickstart_grid_trains_packed_as_one_by_one():
    """The 24 runs of examples/quickstart.yaml, shortened to 15 steps in float64."""
    configs = [
        c.model_copy(
            update={
                "dtype": "float64",
                "device": "cpu",
                "budget": c.budget.model_copy(update={"steps": 15, "eval_every": 10}),
            }
        )
        for c in example("quickstart.yaml")
    ]
    singles = one_by_one(configs)
    packing = packable(configs)
    for pack in packing.packs:
        packs = packed([configs[i] for i in pack])
        for i, rec in zip(pack, packs, strict=True):
            assert_same(singles[i], rec, len(pack))


def test_grouping_refuses_what_it_cannot_pack_and_those_runs_train_one_by_one():
    configs = [
        small(seed=0),
        small(seed=1, optimizer={"name": "adam", "lr": 0.01}),  # another update rule
        small(seed=2),
        small(seed=3, architecture={"name": "mlp", "depth": 2, "width": 8}),  # other shapes
        small(seed=4, architecture={"name": "mlp", "depth": 2, "width": 8}),
        small(seed=5, optimizer={"name": "rmsprop", "lr": 0.01}),
        small(seed=6, architecture={"name": "cnn", "channels": [4]}),
        small(seed=7, architecture={"name": "resmlp", "depth": 1, "width": 8}),
        small(seed=8, budget={"steps": 25, "batch_size": 16}),  # another batch size
    ]
    packing = packable(configs)
    assert packing.packs == [[0, 2], [3, 4]]
    assert sorted(packing.single) == [1, 5, 6, 7, 8]
    assert "optimizer 'rmsprop' does not pack" in packing.single[5]
    assert "architecture 'cnn' does not pack" in packing.single[6]
    assert "architecture 'resmlp'" in packing.single[7]
    assert "no other run shares" in packing.single[8]

    assert packable([small(seed=s) for s in range(5)], max_size=2).packs == [[1, 2], [3, 4]]
    with pytest.raises(Unpackable, match="different combinations"):
        train_packed([configs[0], configs[3]])
    with pytest.raises(Unpackable, match="rmsprop"):
        train_packed([configs[5], configs[5]])
    with pytest.raises(ValueError, match="max_size"):
        packable(configs, max_size=0)

    picked = [configs[i] for i in (0, 2, 5, 6)]
    outcomes = train_many(picked)
    executions = [o.environment["execution"] for o in outcomes if isinstance(o, TrainResult)]
    assert executions == ["packed(n=2)", "packed(n=2)", "single", "single"]
    for outcome, single in zip(outcomes, one_by_one(picked), strict=True):
        assert isinstance(outcome, TrainResult)
        assert_losses_equal(single.result.losses, outcome.losses)


def test_what_a_ray_task_would_be_handed_pickles():
    """The next step hands a pack to a Ray task: the entry point and its inputs pickle."""
    configs = [small(seed=s) for s in range(2)]
    assert pickle.loads(pickle.dumps(train_packed)) is train_packed
    assert pickle.loads(pickle.dumps(configs)) == configs
    assert pickle.loads(pickle.dumps(packable(configs))) == packable(configs)


def test_the_packed_model_refuses_layers_it_does_not_compute():
    cfg = small(architecture={"name": "resmlp", "depth": 1, "width": 8})
    data = create_task(cfg.task)
    model = create_model(cfg.architecture, "none", data)
    with pytest.raises(Unpackable, match="ResidualBlock"):
        PackedModel.stack([model, model])


@pytest.mark.parametrize(
    "kind, task_loss",
    [("cross_entropy", "cross_entropy"), ("mse", "cross_entropy"), ("mse", "mse")],
)
def test_the_batched_loss_is_each_runs_loss(kind, task_loss):
    gen = torch.Generator().manual_seed(0)
    out = torch.randn(3, 8, 5, generator=gen, dtype=torch.float64)
    if task_loss == "cross_entropy":
        y = torch.randint(0, 5, (3, 8), generator=gen)
    else:
        y = torch.randn(3, 8, 5, generator=gen, dtype=torch.float64)
    single = loss_fn(kind, task_loss)
    expected = torch.stack([single(o, t) for o, t in zip(out, y, strict=True)])
    torch.testing.assert_close(batched_loss_fn(kind, task_loss)(out, y), expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_pack_on_cuda_trains_as_on_the_cpu():
    configs = [small(seed=s, normalization="batchnorm") for s in range(3)]
    on_cpu = packed(configs)
    on_gpu = packed([c.model_copy(update={"device": "cuda"}) for c in configs])
    for a, b in zip(on_cpu, on_gpu, strict=True):
        assert_losses_equal(a.result.losses, b.result.losses)
        assert b.result.environment["device"].startswith("cuda")


def _peak_bytes(configs: list[RunConfig]) -> int:
    """The most memory the pack's operators held at once while it trained (the profiler's
    record of every allocation and free, in order)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        packed(configs)
    held = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        held += event.self_cpu_memory_usage
        peak = max(peak, held)
    return peak


@pytest.mark.parametrize(
    "optimizer,normalization,width,batch",
    [
        ({"name": "sgd", "lr": 0.1, "momentum": 0.9}, "batchnorm", 512, 8),  # parameters
        ({"name": "adam", "lr": 1e-3}, "none", 512, 8),
        ({"name": "sgd", "lr": 0.1, "momentum": 0.9}, "batchnorm", 16, 256),  # activations
    ],
)
def test_the_memory_a_pack_is_sized_by_bounds_what_each_run_holds(
    optimizer, normalization, width, batch
):
    """GPU packs are sized by pack_run_bytes: it must not be below what a run adds to a
    pack's peak (else a pack sized to fit would not), nor far above (else packs shrink)."""
    from workers.packed.grouping import pack_run_bytes

    def pack(n: int) -> list[RunConfig]:
        return [
            small(
                seed=s,
                optimizer=optimizer,
                normalization=normalization,
                architecture={"name": "mlp", "depth": 3, "width": width},
                budget={"steps": 4, "batch_size": batch, "log_every": 1, "eval_every": 100},
            )
            for s in range(n)
        ]

    per_run = (_peak_bytes(pack(16)) - _peak_bytes(pack(4))) / 12
    estimate = pack_run_bytes(pack(1)[0])
    assert per_run < estimate < 2.5 * per_run, (per_run, estimate)
