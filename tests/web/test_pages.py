"""The pages in a real browser: Debian's Chromium driven by Playwright, against a live server
(uvicorn on 127.0.0.1) over a database that holds a real finished sweep, trained in-process
through the queue (claim -> workers.runner.execute) and probed at the end of each run.

Without /usr/bin/chromium (apt-get install chromium) or the `playwright` package these tests
skip; with PLATEAU_REQUIRE_BROWSER=1 (CI) they fail instead. PLATEAU_SCREENSHOTS=DIR saves
every page there at 1440 px (docs/screenshots holds the committed ones). The browser, page and
server fixtures are tests/web/conftest.py's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from db import queue
from db.migrate import upgrade
from db.session import session_scope
from tests.web.conftest import live_server, require_browser, screenshot

pytestmark = pytest.mark.slow

# 3 optimizers x 2 inits x 2 seeds on digits: converged, plateau/saddle and diverged runs,
# with clipping (clip events) and an end-of-run probe (eigenvalues, density, slices).
SPEC: dict[str, Any] = {
    "name": "web-demo",
    "owner": "ana",
    "task": "digits",
    "architectures": [{"name": "mlp", "depth": 2, "width": 32}],
    "optimizers": [
        {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        {"name": "adam", "lr": 0.003},
        {"name": "sgd", "lr": 10000.0},  # diverges at once, so it is never probed
    ],
    "inits": ["default", {"name": "normal", "std": 0.01}],  # the small init sits on a plateau
    "grad_clip": [1.0],
    "seeds": [0, 1],
    "budget": {"steps": 200, "batch_size": 64, "log_every": 2, "eval_every": 20},
    "target": {"loss": 0.3},
    "plateau": {"window": 20, "min_length": 30},
    "probes": {
        "at": ["end"],
        "max_samples": 256,
        "lanczos_steps": 20,
        "hutchinson_vectors": 10,
        "slq_steps": 15,
    },
}


def run_queued(url: str) -> list[str]:
    """Train every queued run in this process, one claim at a time; their outcomes."""
    from workers.runner import execute

    outcomes = []
    while True:
        with session_scope(url) as s:
            claims = queue.claim_runs(session=s, worker_id="web-test", limit=1, lease_seconds=300)
        if not claims:
            return outcomes
        (c,) = claims
        outcomes.append(
            execute(
                db_url=url,
                run_id=c.run_id,
                attempt=c.attempt,
                config=c.config,
                lease_seconds=300,
            )
        )


def submit(url: str, spec: dict[str, Any]) -> int:
    from service.spec import SweepSpec
    from service.sweeps import submit_sweep

    with session_scope(url) as s:
        sweep = submit_sweep(
            session=s, spec=SweepSpec.model_validate(spec), source="api", max_attempts=1
        )
        return sweep.id


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A live server on 127.0.0.1 over a database with one real finished sweep."""
    require_browser()
    url = f"sqlite:///{tmp_path_factory.mktemp('web') / 'plateau.db'}"
    upgrade(url)
    sweep_id = submit(url, SPEC)
    outcomes = run_queued(url)
    assert sorted(outcomes) == ["diverged"] * 4 + ["succeeded"] * 8, outcomes

    with live_server(url) as base:
        yield {"base": base, "url": url, "sweep_id": sweep_id, "api": httpx.Client(base_url=base)}


# Geometry of what a plot drew, measured by the browser's layout engine.
# vega-embed draws each layer of a figure as <g class="... <layer name>_marks"> (the names are
# service/figures/'s); each drawn element carries its scenegraph item (__data__): the row it
# draws (datum), its position in the plot's coordinates (x, y, width) and, for a line or an
# area, its SVG path. Boxes are the browser's layout, in page pixels.
MARKS = """([id, name]) => [...document.querySelectorAll(`#${id} g.${name}_marks > *`)].map(e => {
    const item = e.__data__ || {};
    const box = e.getBoundingClientRect();
    return {series: (item.datum || {}).series, datum: item.datum || {}, x: item.x,
            item_width: item.width, stroke: e.getAttribute('stroke'),
            opacity: Number(e.getAttribute('opacity') ?? 1),
            points: ((e.getAttribute('d') || '').match(/[ML]/g) || []).length,
            left: box.left, top: box.top, width: box.width, height: box.height};
})"""


def marks(tab: Any, figure: str, layer: str) -> list[dict[str, Any]]:
    """What the layer `layer` of the figure in #plot-<figure> drew."""
    return tab.evaluate(MARKS, [f"plot-{figure}", layer])


def rgb(color: str) -> str:
    """#rrggbb as the browser's computed style writes it."""
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def view_eval(tab: Any, figure: str, expression: str) -> Any:
    """`expression` evaluated on the Vega view of #plot-<figure> (as `view`)."""
    return tab.evaluate(
        f"(id) => {{ const view = document.getElementById(id).view; return {expression}; }}",
        f"plot-{figure}",
    )


def rows_on_page(tab: Any) -> list[str]:
    return tab.eval_on_selector_all(
        "#leaderboard tbody tr", "rows => rows.map(r => r.dataset.configKey)"
    )


def test_the_leaderboard_ranks_the_configurations_and_sorts_by_column(page, site):
    api = site["api"]
    page.goto(f"{site['base']}/?task=digits")
    ranked = api.get("/api/v1/leaderboard", params={"task": "digits"}).json()
    assert ranked["count"] == 6
    assert rows_on_page(page) == [r["config_key"] for r in ranked["data"]]
    first = page.locator("#leaderboard tbody tr").first
    assert first.locator("td").first.inner_text() == "1"
    assert "converged" in first.inner_text() and "2 / 2 seeds" in first.inner_text()
    assert "diverged 2" in page.locator("#leaderboard tbody tr").last.inner_text()

    page.click("th a[data-metric=final_loss]")
    page.wait_for_url("**metric=final_loss**")
    by_loss = api.get("/api/v1/leaderboard", params={"task": "digits", "metric": "final_loss"})
    assert rows_on_page(page) == [r["config_key"] for r in by_loss.json()["data"]]
    page.click("th a[data-metric=final_loss]")  # again: the other direction
    page.wait_for_url("**order=desc**")
    desc = api.get(
        "/api/v1/leaderboard",
        params={"task": "digits", "metric": "final_loss", "order": "desc"},
    ).json()["data"]
    assert rows_on_page(page) == [r["config_key"] for r in desc]

    page.fill("input[name=owner]", "nobody")
    page.click("form#filters button[type=submit]")
    page.wait_for_url("**owner=nobody**")
    assert "No finished runs match" in page.inner_text("main")
    page.fill("input[name=owner]", "ana")
    page.select_option("select[name=device]", "cpu")
    page.click("form#filters button[type=submit]")
    page.wait_for_url("**owner=ana**")
    assert len(rows_on_page(page)) == 6


def test_a_run_reached_from_the_leaderboard_shows_its_evidence_and_plots(page, site):
    page.goto(f"{site['base']}/?task=digits")
    best = site["api"].get("/api/v1/leaderboard", params={"task": "digits"}).json()["data"][0]
    page.locator("#leaderboard tbody tr").first.locator("a.best-run").click()
    page.wait_for_url(f"**/runs/{best['best_run_id']}")
    page.wait_for_selector("body[data-plots=ready]")
    run = site["api"].get(f"/api/v1/runs/{best['best_run_id']}").json()
    assert run["diagnosis"]["verdict"] == "converged"
    assert page.inner_text("#verdict") == "converged"
    # the verdict's sentence names its numbers, the same on the page as in the API
    sentence = run["diagnosis"]["sentence"]
    assert sentence.startswith("smoothed loss reached the target") and "at step" in sentence
    assert page.inner_text("#verdict-sentence") == sentence
    # per-layer activation statistics, at initialization and at the last evaluation
    stats = run["activation_stats"]
    assert stats[0]["step"] == 0 and stats[-1]["step"] == run["curves"]["step"][-1]
    # the curvature table: one row per probe, λ with its residual, nothing unconverged here
    probes = site["api"].get(f"/api/v1/runs/{best['best_run_id']}/probes").json()["data"]
    assert page.locator("#curvature tbody tr").count() == len(probes) >= 1
    assert page.locator("#curvature td.unconverged").count() == 0
    assert "±" in page.locator("#curvature td[data-eig=bottom]").first.inner_text()
    rows = page.locator("#activations tbody tr")
    assert rows.count() == len(stats[0]["layers"]) >= 3
    first_layer = next(iter(stats[0]["layers"]))
    assert rows.first.locator("code").inner_text() == first_layer
    assert "lambda_max" in page.inner_text("#evidence")

    (train,) = marks(page, "loss", "train")  # the smoothed training loss: one line
    n_steps = len(run["curves"]["step"])
    assert train["points"] == n_steps and train["series"] == "train (minibatch)"
    assert train["width"] > 300 and train["height"] > 100  # a falling curve, not a flat line
    evaluations = [v for v in run["curves"]["eval_loss"] if v is not None]
    assert len(marks(page, "loss", "test")) == len(evaluations) >= 10  # test-set evaluations
    grad = marks(page, "grad_norm", "grad")
    assert grad[0]["series"] == "global" and len(grad) >= 3  # global + layers
    assert all(g["points"] == n_steps and g["width"] > 300 for g in grad)
    clipped = sum(1 for c in run["curves"]["clipped"] if c)
    assert clipped > 0 and len(marks(page, "lr_clip", "clip")) == clipped
    assert len(marks(page, "hessian", "eig")) == 2  # λmax and λmin, one probe

    (density,) = marks(page, "density", "density")
    assert density["points"] > 50 and density["width"] > 300
    slices = marks(page, "slices_1d", "slice")
    assert len(slices) == 3 and all(s["points"] == 21 for s in slices)
    assert len(marks(page, "surface_2d", "cell")) == 11 * 11
    (star,) = marks(page, "surface_2d", "run")
    assert star["datum"]["a0"] == 0 and star["datum"]["b0"] == 0  # the run's own parameters
    (interp,) = marks(page, "interpolation", "interp")
    assert interp["points"] == 21 and interp["height"] > 20
    # pixels were painted: the surface's SVG has a non-empty layout box
    box = page.locator("#plot-surface_2d svg.marks").bounding_box()
    assert box["width"] > 300 and box["height"] > 200
    screenshot(page, "run.png")


def test_a_run_on_a_plateau_has_its_segments_shaded(page, site):
    api = site["api"]
    runs = api.get(f"/api/v1/sweeps/{site['sweep_id']}/runs").json()["data"]
    plateau = next(
        r
        for r in runs
        if (api.get(f"/api/v1/runs/{r['id']}").json()["result"]["plateaus"] or {}).get("segments")
    )
    segments = api.get(f"/api/v1/runs/{plateau['id']}").json()["result"]["plateaus"]["segments"]
    page.goto(f"{site['base']}/runs/{plateau['id']}")
    page.wait_for_selector("body[data-plots=ready]")
    bands = marks(page, "loss", "plateau")
    assert len(bands) == len(segments)
    assert all(b["width"] > 20 for b in bands), bands
    # each band spans its segment's steps on the x axis
    for band, segment in zip(sorted(bands, key=lambda b: b["x"]), segments, strict=True):
        steps = f"[{segment['start']}, {segment['end']}]"
        start, end = view_eval(page, "loss", f"{steps}.map(view.scale('x'))")
        assert abs(band["x"] - start) < 1 and abs(band["x"] + band["item_width"] - end) < 1
    assert page.locator("#segments tbody tr").count() == len(segments)


def test_a_diverged_run_says_it_was_not_probed(page, site):
    runs = site["api"].get(f"/api/v1/sweeps/{site['sweep_id']}/runs").json()["data"]
    diverged = next(r for r in runs if r["status"] == "diverged")
    page.goto(f"{site['base']}/runs/{diverged['id']}")
    page.wait_for_selector("body[data-plots=ready]")
    for figure in ("hessian", "density", "slices_1d", "surface_2d", "interpolation"):
        drawn = page.locator(f"#plot-{figure} svg.marks").text_content()
        assert "not probed: the run diverged" in drawn
    assert "diverged" in page.inner_text("#verdict")
    step = site["api"].get(f"/api/v1/runs/{diverged['id']}").json()["result"]["diverged_step"]
    assert f"step {step}" in page.inner_text("#verdict-sentence")
    assert page.locator("#plot-loss g.mark-symbol path").count() >= 1  # its one logged step


def test_the_sweep_page_shows_who_ran_it_and_follows_progress_live(page, site):
    page.goto(f"{site['base']}/sweeps/{site['sweep_id']}")
    facts = page.inner_text("dl.facts")
    assert "ana" in facts and "torch" in facts and "ran on cpu" in facts
    assert "100%" in page.inner_text("#progress-text")
    assert page.locator("#runs tbody tr").count() == 12
    page.locator("#runs tbody tr a").first.click()
    page.wait_for_url("**/runs/*")
    page.wait_for_selector("body[data-plots=ready]")

    # A new sweep, still queued: its page updates while the runs train, without a reload.
    small = SPEC | {
        "name": "live",
        "optimizers": [SPEC["optimizers"][1]],
        "inits": ["default"],
        "probes": {"at": []},
    }
    live = submit(site["url"], small)
    page.goto(f"{site['base']}/sweeps/{live}")
    assert page.inner_text("#sweep-status") == "queued"
    assert run_queued(site["url"]) == ["succeeded", "succeeded"]
    page.wait_for_function(
        "document.getElementById('sweep-status').textContent === 'finished'", timeout=15_000
    )
    assert "succeeded 2" in page.inner_text("#progress-text")
    assert page.locator("#runs [data-field=status]").all_inner_texts() == ["succeeded"] * 2


def test_the_live_sweep_table_follows_runs_past_the_first_thousand(page, site):
    """The API pages runs by 1,000 at most: a sweep of 1,200 queued runs, of which the last is
    recorded while the page is open, shows it without a reload."""
    from workers.config import RunConfig

    base = {
        "task": {"name": "digits"},
        "architecture": {"name": "mlp", "depth": 1, "width": 8},
        "optimizer": {"name": "sgd", "lr": 0.1},
    }
    configs = [RunConfig.model_validate(base | {"seed": seed}) for seed in range(1200)]
    with session_scope(site["url"]) as s:
        big = queue.enqueue_sweep(
            session=s,
            name="big",
            owner="ana",
            spec={},
            runs=[(c.model_dump(mode="json"), c.config_hash(), c.config_key()) for c in configs],
        ).id
    page.goto(f"{site['base']}/sweeps/{big}")
    assert page.locator("#runs tbody tr").count() == 1200
    with session_scope(site["url"]) as s:
        claims = queue.claim_runs(session=s, worker_id="web-test", limit=1200, lease_seconds=300)
    last = max(claims, key=lambda c: c.run_id)
    with session_scope(site["url"]) as s:
        queue.complete_run(
            session=s,
            run_id=last.run_id,
            attempt=last.attempt,
            outcome="succeeded",
            result={"steps_done": 10, "final_loss": 0.5, "reached_target": False},
        )
    status = f"tr[data-run-id='{last.run_id}'] [data-field=status]"
    page.wait_for_function(
        f"document.querySelector(\"{status}\").textContent === 'succeeded'", timeout=15_000
    )
    statuses = page.locator("#runs [data-field=status]").all_inner_texts()
    assert statuses.count("running") == 1199 and statuses[-1] == "succeeded", statuses[-3:]
    with session_scope(site["url"]) as s:  # leave nothing running for the other tests
        queue.cancel_sweep(session=s, sweep_id=big)


def test_compare_overlays_the_loss_curves_of_several_runs(page, site):
    runs = site["api"].get(f"/api/v1/sweeps/{site['sweep_id']}/runs").json()["data"]
    ids = [r["id"] for r in runs if r["status"] == "succeeded"][:3]
    page.goto(f"{site['base']}/compare?runs={','.join(map(str, ids))}")
    page.wait_for_selector("body[data-plots=ready]")
    curves = marks(page, "curves", "loss")
    assert [c["series"] for c in curves] == [f"run {i}" for i in ids]
    assert all(c["points"] > 50 and c["width"] > 300 for c in curves)
    assert len({c["stroke"] for c in curves}) == 3
    # the table's swatches wear the curves' colours
    swatches = page.eval_on_selector_all(
        "#compare-runs .swatch", "ss => ss.map(s => getComputedStyle(s).backgroundColor)"
    )
    assert swatches == [rgb(c["stroke"]) for c in curves]
    # zooming the loss panel zooms the gradient-norm panel with it (one shared step axis)
    before = marks(page, "curves", "grad")[0]["width"]
    domain = view_eval(page, "curves", "view.scale('x').domain()")
    line = curves[0]
    page.mouse.move(line["left"] + line["width"] / 2, line["top"] + line["height"] / 2)
    page.mouse.wheel(0, -400)
    page.wait_for_function(
        f"document.getElementById('plot-curves').view.scale('x').domain()[1] < {domain[1]}"
    )
    assert marks(page, "curves", "grad")[0]["width"] > before * 1.2
    screenshot(page, "compare.png")
