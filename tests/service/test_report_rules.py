"""The report's verdict rules (service/report/rules.py): each answers "not supported" on a
fixture that refutes its claim and "supported" on one that bears it out, so no rule passes
whatever was measured; the statistics they use match scipy's."""

from __future__ import annotations

import random

import pytest

from service.report import rules


def test_the_rank_correlation_and_the_bootstrap_match_independent_references():
    from scipy import stats

    rng = random.Random(1)
    x = [rng.random() for _ in range(30)]
    y = [v + rng.gauss(0, 0.3) for v in x]
    y[3] = y[4]  # a tie
    assert rules.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    values = [rng.gauss(1.0, 0.2) for _ in range(40)]
    low, high = rules.bootstrap_interval(values, lambda v: sum(v) / len(v))
    reference = stats.bootstrap(
        (values,), lambda v: sum(v) / len(v), method="percentile", n_resamples=4000, random_state=0
    ).confidence_interval
    assert low == pytest.approx(reference.low, abs=0.02)
    assert high == pytest.approx(reference.high, abs=0.02)
    assert rules.bootstrap_interval(values, lambda v: sum(v) / len(v)) == (low, high)


def test_where_training_stops():
    decide = rules.WHERE_TRAINING_STOPS.decide
    probes = [(0.01 * i, 0.1 * i) for i in range(10)]  # the index falls with the loss
    supported = decide(
        stop_verdicts=["converged"] * 9 + ["plateau"],
        plateau_negative_mass=[(0.2, 0.02)] * 6 + [(0.01, 0.02)] * 2,
        index_and_loss=probes,
    )
    assert supported == "supported"
    refuted = decide(
        stop_verdicts=["local_minimum"] * 6 + ["converged"] * 4,  # stuck in minima
        plateau_negative_mass=[(0.0, 0.01)] * 8,  # no negative curvature at plateaus
        index_and_loss=[(0.01 * i, 1 - 0.1 * i) for i in range(10)],
    )
    assert refuted == "not supported"


def test_noise_escapes_saddles():
    decide = rules.NOISE_ESCAPES_SADDLES.decide
    never = [None, None, None]
    assert decide(full_batch_steps=never, minibatch_steps={8: [40, 55], 64: [90, 120]}) == (
        "supported"
    )
    full = [100, 110, 90]
    assert decide(full_batch_steps=full, minibatch_steps={8: [95, 120], 64: [100, 98]}) == (
        "not supported"
    )
    assert decide(full_batch_steps=full, minibatch_steps={8: [20, 25], 64: [100, 98]}) == ("mixed")


def test_plateaus_follow_init_scale():
    decide = rules.PLATEAUS_FOLLOW_INIT_SCALE.decide
    predicted = [10, 20, 40, 80, 160]
    assert decide(measured=[12, 19, 45, 75, 170], predicted=predicted) == "supported"
    assert decide(measured=[100, 90, 95, 80, 85], predicted=predicted) == "not supported"


def test_remedies_help():
    decide = rules.REMEDIES_HELP.decide
    faster = {"orthogonal": (0.4, 0.7), "clip": (0.5, 0.9), "batchnorm": (0.3, 0.6),
              "adam": (0.6, 1.1)}  # fmt: skip
    assert decide(effects=faster) == "supported"
    none = {k: (0.9, 1.3) for k in faster}
    assert decide(effects=none) == "not supported"


def test_search_finds_better():
    decide = rules.SEARCH_FINDS_BETTER.decide
    assert decide(best=[100, 120, 90, 110], default=[400, 380, 420, 500]) == "supported"
    assert decide(best=[400, 420, 390, 410], default=[300, 320, 310, 290]) == "not supported"


def test_every_rule_prints_its_text_and_claim():
    for name, rule in rules.RULES.items():
        assert rule.claim.endswith(".") and len(rule.claim) < 160, name
        assert "supported when" in rule.text and "not supported" in rule.text, name


@pytest.mark.slow
def test_section_two_is_computed_from_stored_runs(sqlite_url):
    """examples/saddle_escape.yaml as it is (batch 32) and with full batch, trained here
    through the queue: the section reads each run's steps to leave the saddle from the
    database and its rule answers "supported"; the same runs give the same section."""
    import yaml

    from db.migrate import upgrade
    from db.session import session_scope
    from service.report.sections import noise_escapes_saddles
    from tests.conftest import ROOT
    from tests.web.test_pages import run_queued, submit

    upgrade(sqlite_url)
    spec = yaml.safe_load((ROOT / "examples" / "saddle_escape.yaml").read_text())
    spec["budget"]["steps"] = 250
    minibatch = submit(sqlite_url, spec)
    spec["budget"] = {"steps": 250, "full_batch": True, "log_every": 1, "eval_every": 100}
    full = submit(sqlite_url, spec | {"name": "saddle-full-batch"})
    assert set(run_queued(sqlite_url)) == {"succeeded"}
    with session_scope(sqlite_url) as s:
        section = noise_escapes_saddles(s, full_batch_sweep=full, minibatch_sweeps={32: minibatch})
        again = noise_escapes_saddles(s, full_batch_sweep=full, minibatch_sweeps={32: minibatch})
    assert section.numbers["full batch"]["left"] == 0  # full-batch descent stays
    assert section.numbers["batch 32"]["left"] == 3
    assert section.verdict == "supported"
    assert again.numbers == section.numbers and again.verdict == section.verdict
