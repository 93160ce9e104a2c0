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
    screenshot(page, "compare.png")
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
    # the cursor: hovering a step in one panel marks it in all three
    page.mouse.move(line["left"] + line["width"] / 3, line["top"] + line["height"] / 2)
    for panel in ("loss", "test", "grad"):
        page.wait_for_selector(f"#plot-curves g.{panel}_cursor_marks > line", state="attached")
    # the legend toggles a run in every panel
    entry = page.locator("#plot-curves g.role-legend-label text", has_text=f"run {ids[0]}")
    box = entry.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function(
        "[...document.querySelectorAll('#plot-curves g.grad_marks path')]"
        ".filter(p => p.__data__.opacity < 0.2).length === 2"
    )


# ---- Issue 12: the run and compare pages' defects, each measured in the browser ----

# A deep linear network (MSE: no accuracy) from a small init: plateaus probed as they begin,
# then the end probe thousands of steps later, so its probes are not consecutive in time.
REGRESSION: dict[str, Any] = {
    "name": "web-regression",
    "owner": "dora",
    "task": {"name": "deep_linear", "n_train": 256, "singular_values": [4.0, 2.0, 1.0]},
    "architectures": [{"name": "deep_linear", "depth": 4, "width": 16}],
    "optimizers": [{"name": "sgd", "lr": 0.02}],
    "inits": [{"name": "orthogonal", "scale": 0.25}],
    "seeds": [0],
    "budget": {"steps": 3000, "batch_size": 256, "log_every": 10, "eval_every": 500},
    "target": {"loss": 0.01},
    "plateau": {"window": 25, "min_length": 50},
    "probes": {**SPEC["probes"], "at": ["plateau", "end"]},
}


@pytest.fixture(scope="module")
def regression(site: dict[str, Any]) -> dict[str, Any]:
    """The REGRESSION run, trained into the site's database: its id, document and probes."""
    sweep = submit(site["url"], REGRESSION)
    assert run_queued(site["url"]) == ["succeeded"]
    api = site["api"]
    (run,) = api.get(f"/api/v1/sweeps/{sweep}/runs").json()["data"]
    probes = api.get(f"/api/v1/runs/{run['id']}/probes").json()["data"]
    return {"id": run["id"], "run": api.get(f"/api/v1/runs/{run['id']}").json(), "probes": probes}


def best_run(site: dict[str, Any]) -> int:
    board = site["api"].get("/api/v1/leaderboard", params={"task": "digits"}).json()
    return board["data"][0]["best_run_id"]


def succeeded(site: dict[str, Any]) -> list[int]:
    runs = site["api"].get(f"/api/v1/sweeps/{site['sweep_id']}/runs").json()["data"]
    return [r["id"] for r in runs if r["status"] == "succeeded"]


def show(tab: Any, site: dict[str, Any], path: str) -> None:
    tab.goto(f"{site['base']}{path}")
    tab.wait_for_selector("body[data-plots=ready]")


def pages(site: dict[str, Any], regression: dict[str, Any]) -> list[str]:
    """A classification run, a regression run, and the compare page over both kinds."""
    ids = ",".join(map(str, [*succeeded(site), regression["id"]]))
    return [f"/runs/{best_run(site)}", f"/runs/{regression['id']}", f"/compare?runs={ids}"]


# Boxes of every legend and of every drawn data mark (lines, points, cells, bands, texts),
# as [figure id, legend box, mark box] for each overlap.
LEGEND_OVERLAPS = """() => [...document.querySelectorAll('.plot svg.marks')].flatMap(svg => {
    const boxes = (sel) => [...svg.querySelectorAll(sel)].map(e => e.getBoundingClientRect())
        .filter(b => b.width > 0 || b.height > 0);
    const legends = boxes('g.role-legend');
    const data = boxes('g.role-mark:not(.mark-rule) > *');
    const hit = (a, b) => a.left < b.right && b.left < a.right
        && a.top < b.bottom && b.top < a.bottom;
    return legends.flatMap(l => data.filter(d => hit(l, d)).map(d => [svg.closest('.plot').id,
        [l.left, l.top, l.right, l.bottom], [d.left, d.top, d.right, d.bottom]]));
})"""


def test_legends_never_cover_the_plotted_data(page, site, regression):
    for path in pages(site, regression):
        show(page, site, path)
        assert page.locator(".plot svg.marks g.role-legend").count() >= 1, path
        assert page.evaluate(LEGEND_OVERLAPS) == [], path


def significant(text: str) -> int:
    """Significant digits of a number as written ("5.86e-7" -> 3, "0.00123" -> 3)."""
    mantissa = text.lower().split("e")[0].lstrip("-−").replace(".", "").replace(",", "")
    return len(mantissa.strip("0")) or 1


def test_the_surface_colour_bar_labels_are_the_values_they_mark(page, site, regression):
    show(page, site, f"/runs/{regression['id']}")
    surface = regression["probes"][-1]["data"]["slices"]["random_2d"]["values"]
    lo, hi = min(min(row) for row in surface), max(max(row) for row in surface)
    assert lo < 1e-3  # small losses: where a cut label read 5.8583 for 5.8583e-07
    labels = page.locator("#plot-surface_2d g.role-legend-label text").all_text_contents()
    assert len(labels) >= 2, labels
    for label in labels:
        value = float(label.replace("−", "-"))
        assert lo * 0.999 <= value <= hi * 1.001, (label, lo, hi)
        assert significant(label) <= 3, label
    assert any("e-" in label for label in labels), labels
    # log-scaled colours (every loss is positive), as in the file
    assert view_eval(page, "surface_2d", "view.scale('color').type") == "sequential-log"


def test_the_hessian_chart_joins_no_probes_with_a_line(page, site, regression):
    probes = regression["probes"]
    steps = sorted(p["step"] for p in probes)
    assert len(probes) >= 2 and steps[-1] - steps[-2] > 1000  # the end probe is far away
    show(page, site, f"/runs/{regression['id']}")
    eig = marks(page, "hessian", "eig")
    assert sorted(m["datum"]["step"] for m in eig) == sorted(steps + steps)
    assert page.locator("#plot-hessian g.mark-line, #plot-hessian g.mark-area").count() == 0
    label = page.get_attribute("#plot-hessian [aria-roledescription=visualization]", "aria-label")
    assert "points only" in label  # the rule, in the figure's description


def test_gradient_norms_are_labelled_by_layer(page, site, regression):
    cases = [
        (best_run(site), ["Linear 1 (in→32)", "Linear 2 (32→32)", "Linear 3 (32→out, output)"]),
        (
            regression["id"],
            [f"Linear {i} (16→16)" for i in range(1, 5)] + ["Linear 5 (16→16, output)"],
        ),
    ]
    for run_id, layers in cases:
        show(page, site, f"/runs/{run_id}")
        legend = page.locator("#plot-grad_norm g.role-legend-label text").all_text_contents()
        assert legend == ["global", *layers]
        assert [g["series"] for g in marks(page, "grad_norm", "grad")] == ["global", *layers]


def test_layer_labels_follow_the_models_that_record_them():
    """Every gradient key a Sequential architecture records gets a name, not `module k`."""
    import torch

    from service.figures.run import layer_labels
    from workers.config import RunConfig
    from workers.train import build, layer_names

    archs = [
        {"name": "mlp", "depth": 3, "width": 8},
        {"name": "deep_linear", "depth": 3, "width": 8},
        {"name": "cnn", "channels": [4, 8]},
    ]
    for arch in archs:
        for norm in ("none", "batchnorm", "layernorm"):
            try:
                config = RunConfig.model_validate(
                    {
                        "task": {"name": "digits"},
                        "architecture": arch,
                        "normalization": norm,
                        "optimizer": {"name": "sgd", "lr": 0.1},
                    }
                )
            except ValueError:  # a normalization the architecture does not offer
                continue
            _, model = build(config, torch.device("cpu"))
            keys = list(dict.fromkeys(layer_names(model)))
            labels = layer_labels(config.model_dump(mode="json"), keys)
            assert not [k for k, v in labels.items() if v.startswith("module")], (arch, labels)


def test_test_accuracy_is_on_0_to_1_and_regression_shows_test_loss(page, site, regression):
    show(page, site, f"/runs/{best_run(site)}")
    assert view_eval(page, "test", "view.scale('y').domain()") == [0, 1]
    # the test loss in the loss chart: points, measured only at the evaluations
    assert "mark-symbol" in page.get_attribute("#plot-loss g.test_marks", "class")

    show(page, site, f"/runs/{regression['id']}")
    drawn = page.locator("#plot-test svg.marks").text_content()
    assert "test loss" in drawn and "no test evaluations" not in drawn
    evaluations = [v for v in regression["run"]["curves"]["eval_loss"] if v is not None]
    assert len(marks(page, "test", "test")) == len(evaluations) >= 5
    assert "mark-symbol" in page.get_attribute("#plot-test g.test_marks", "class")


# For each labelled axis of each figure: its title, whether it is vertical, its labels;
# works on the page's SVG and on a file's SVG text alike.
AXES = """(svg) => [...svg.querySelectorAll('g.role-axis')]
    .filter(g => g.querySelector('.role-axis-label'))
    .map(g => {
        const domain = g.querySelector('.role-axis-domain line');
        const texts = (sel) => [...g.querySelectorAll(sel)].map(t => t.textContent);
        return {title: texts('.role-axis-title text').join(' '),
                vertical: !!domain && Number(domain.getAttribute('y2') || 0) !== 0,
                labels: texts('.role-axis-label text')};
    })"""


def test_plateau_plot_and_the_page_draw_the_same_figures(page, site, regression, tmp_path):
    import os
    import subprocess
    import sys

    import vl_convert

    from service.figures import VEGA_LITE, static

    run_id = regression["id"]
    env = {**os.environ, "DATABASE_URL": site["url"]}
    cli = [sys.executable, "-m", "service.cli", "plot", str(run_id), "-o", str(tmp_path)]
    out = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0, out.stderr
    files = {
        p.name.removeprefix(f"run{run_id}_").removesuffix(".svg"): p for p in tmp_path.iterdir()
    }

    show(page, site, f"/runs/{run_id}")
    drawn = page.eval_on_selector_all(
        ".plot[data-figure=ready]", "els => els.map(e => e.id.replace('plot-', ''))"
    )
    assert sorted(drawn) == sorted(files)
    specs = site["api"].get(f"/api/v1/runs/{run_id}/figures").json()["figures"]
    for name, path in files.items():
        scales = view_eval(
            page,
            name,
            "Object.fromEntries(Object.entries(view._runtime.scales)"
            ".map(([k, s]) => [k, s.value.type.replace('sequential-', '')]))",
        )
        compiled = vl_convert.vegalite_to_vega(static(specs[name]), vl_version=VEGA_LITE)
        assert scales == {s["name"]: s["type"] for s in compiled.get("scales", [])}, name
        in_page = page.evaluate(f"() => ({AXES})(document.querySelector('#plot-{name} svg.marks'))")
        in_file = page.evaluate(
            f"(text) => ({AXES})(new DOMParser().parseFromString(text, 'image/svg+xml'))",
            path.read_text(),
        )
        assert [a["title"] for a in in_page] == [a["title"] for a in in_file], name
        # the vertical axes have the same height in both: the same range, the same labels
        assert [a for a in in_page if a["vertical"]] == [a for a in in_file if a["vertical"]], name
    density = view_eval(page, "density", "view.scale('y').domain()")
    top = max(regression["probes"][-1]["data"]["density"]["values"])
    assert density == pytest.approx([top * 1e-6, 2 * top])  # not down to 1e-80


def test_every_chart_has_a_title_and_titled_axes(page, site, regression):
    for path in pages(site, regression):
        show(page, site, path)
        for figure in page.locator(".plot svg.marks").all():
            titles = figure.locator("g.role-title-text text").all_text_contents()
            assert titles and all(t.strip() for t in titles), path
            for axis in figure.evaluate(AXES):
                assert axis["title"].strip(), (path, titles, axis)


def test_tables_round_values_for_people_and_tooltips_keep_them_whole(page, site, regression):
    import re

    # a number stands alone: not the digits inside a hash such as the config's "59970947e710"
    number = re.compile(r"(?<![\w.])[-−]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?(?!\w)")
    show(page, site, f"/runs/{regression['id']}")
    # identifiers (<code>) and software versions are not measurements
    cells = page.locator(
        "#evidence td, #curvature td.num, #activations td.num, #segments td.num, dl.facts dd"
    ).evaluate_all(
        """cells => cells.map(cell => {
            const copy = cell.cloneNode(true);
            copy.querySelectorAll('code, .software').forEach(e => e.remove());
            return copy.classList.contains('software') ? '' : copy.textContent;
        })"""
    )
    numbers = [n for cell in cells for n in number.findall(cell) if "." in n or "e" in n]
    assert len(numbers) > 20
    assert [n for n in numbers if significant(n) > 3] == []
    # hovering a point shows its value at full precision
    probe = max(regression["probes"], key=lambda p: p["step"])
    page.locator("#plot-hessian").scroll_into_view_if_needed()
    (point,) = [
        m
        for m in marks(page, "hessian", "eig")
        if m["datum"]["step"] == probe["step"] and m["series"] == "λmax"
    ]
    page.mouse.move(point["left"] + point["width"] / 2, point["top"] + point["height"] / 2)
    tooltip = page.wait_for_selector("#vg-tooltip-element.visible")
    assert repr(probe["lambda_max"]) in tooltip.inner_text()

    show(page, site, f"/compare?runs={','.join(map(str, succeeded(site)))}")
    losses = page.locator("#compare-runs tbody td:nth-child(11)").all_text_contents()
    assert losses and all(significant(v) <= 3 for v in losses), losses


def test_run_and_compare_pages_fit_the_window(page, site, regression):
    for width in (1280, 1440):
        page.set_viewport_size({"width": width, "height": 900})
        for path in pages(site, regression):
            show(page, site, path)
            scroll = page.evaluate("document.documentElement.scrollWidth")
            assert scroll <= width, (path, width, scroll)


def test_training_curves_zoom_smooth_and_toggle_like_tensorboard(page, site):
    show(page, site, f"/runs/{best_run(site)}")
    page.locator("#plot-loss").scroll_into_view_if_needed()
    smoothing = "view.signal('smoothing')"
    (train,) = marks(page, "loss", "train")
    assert view_eval(page, "loss", smoothing) == 0.6 and len(marks(page, "loss", "train_raw")) == 1
    page.locator("#plot-loss input[type=radio][value='0']").check()
    page.wait_for_function(
        "document.querySelectorAll('#plot-loss g.train_raw_marks > *').length === 0"
    )
    (raw,) = marks(page, "loss", "train")
    assert view_eval(page, "loss", smoothing) == 0 and raw["height"] > train["height"]  # noisier
    # the legend toggles a series: click "test", the training line fades
    entry = page.locator("#plot-loss g.role-legend-label text", has_text="test").bounding_box()
    page.mouse.click(entry["x"] + entry["width"] / 2, entry["y"] + entry["height"] / 2)
    page.wait_for_function(
        "document.querySelector('#plot-loss g.train_marks path').__data__.opacity < 0.2"
    )
    # wheel zooms the steps in
    domain = view_eval(page, "loss", "view.scale('x').domain()")
    page.mouse.move(raw["left"] + raw["width"] / 2, raw["top"] + raw["height"] / 2)
    page.mouse.wheel(0, -400)
    page.wait_for_function(
        f"document.getElementById('plot-loss').view.scale('x').domain()[1] < {domain[1]}"
    )
    # the gradient norms smooth too
    (rough, *_) = marks(page, "grad_norm", "grad")
    page.locator("#plot-grad_norm input[type=radio][value='0.97']").check()
    page.wait_for_function(
        "document.getElementById('plot-grad_norm').view.signal('smoothing') === 0.97"
    )
    assert marks(page, "grad_norm", "grad")[0]["height"] < rough["height"]  # smoother


def test_the_probe_selector_redraws_the_probe_figures(page, site, regression):
    show(page, site, f"/runs/{regression['id']}")
    first = regression["probes"][0]
    page.select_option("#probe-select", "0")
    page.wait_for_selector("body[data-plots=ready]")
    page.wait_for_function(
        "document.querySelector('#plot-density svg.marks')"
        f".textContent.includes('step {first['step']}')"
    )
    for figure in ("density", "slices_1d", "surface_2d", "interpolation"):
        title = page.locator(f"#plot-{figure} g.role-title-text text").first.text_content()
        assert title.endswith(f"step {first['step']}"), title


def test_the_figure_endpoints_refuse_what_they_cannot_draw(site, regression):
    api = site["api"]
    run_id, n = regression["id"], len(regression["probes"])
    first = api.get(f"/api/v1/runs/{run_id}/figures", params={"probe": 0}).json()["figures"]
    assert first["density"]["title"]["text"].endswith(f"step {regression['probes'][0]['step']}")
    missing = api.get(f"/api/v1/runs/{run_id}/figures", params={"probe": n})
    assert missing.status_code == 404 and f"has {n} probes" in missing.json()["detail"]
    assert api.get("/api/v1/runs/999999/figures").status_code == 404
    both = api.get("/api/v1/figures/compare", params={"runs": f"{run_id},{run_id}"})
    assert both.status_code == 200 and both.json()["vega_lite"].startswith("6")
    gone = api.get("/api/v1/figures/compare", params={"runs": f"{run_id},999999"})
    assert gone.status_code == 404 and "run 999999 not found" in gone.json()["detail"]
    for bad in ("", "1,x", ",".join(["1"] * 21)):
        assert api.get("/api/v1/figures/compare", params={"runs": bad}).status_code == 422, bad


def test_long_curves_keep_each_buckets_extremes():
    """A 50,000-step curve is drawn from at most MAX_POINTS rows that keep its spike; the
    smoothed values still average every step; a short curve keeps every step."""
    from service.figures import ema
    from service.figures.run import MAX_POINTS, ema_field, smoothing_rows

    steps = list(range(50_000))
    values: list[float | None] = [1.0 + (i % 97) / 100 for i in steps]
    values[12_345], values[777] = 50.0, None
    rows = smoothing_rows(steps, {"train": values}, "loss")
    assert len(rows) <= MAX_POINTS
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})
    assert [r["step"] for r in rows if r["loss"] == 50.0] == [12_345]  # the spike
    assert 777 not in {r["step"] for r in rows}
    full = ema(values, 0.9)
    assert all(r[ema_field(0.9)] == pytest.approx(full[r["step"]], rel=1e-5) for r in rows)
    assert len(smoothing_rows(steps[:300], {"train": values[:300]}, "loss")) == 300
