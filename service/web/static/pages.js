/* pages.js: what each page draws, from the JSON the API serves (/api/v1/...).
 * Pages.run(id), Pages.sweep(id, status), Pages.compare(ids), Pages.study(id).
 * When a page has drawn everything it sets <body data-plots="ready"> (or "error"). */
"use strict";

const Pages = (() => {
  async function getJSON(url) {
    const response = await fetch(url, { headers: { accept: "application/json" } });
    if (!response.ok) throw new Error(`${url} answered ${response.status}`);
    return response.json();
  }

  function byId(id) { return document.getElementById(id); }

  // A figure (a Vega-Lite spec from service/figures/, served by /api/v1/.../figures) drawn
  // by vega-embed as SVG; its menu offers SVG/PNG downloads, not the online editor.
  async function embed(el, spec) {
    const result = await vegaEmbed(el, spec, {
      renderer: "svg",
      actions: { export: true, source: false, compiled: false, editor: false },
    });
    el.dataset.figure = "ready";
    return result.view;
  }

  function done(promise) {
    return promise.then(
      () => { document.body.dataset.plots = "ready"; },
      (err) => {
        document.body.dataset.plots = "error";
        const note = document.createElement("p");
        note.className = "error";
        note.textContent = `could not draw the plots: ${err.message}`;
        document.querySelector("main").prepend(note);
        throw err;
      },
    );
  }

  const positive = (ys) => ys.some((v) => typeof v === "number" && v > 0)
    && ys.every((v) => v === null || v === undefined || !Number.isFinite(v) || v > 0);

  // ---- a run ---------------------------------------------------------------------------

  function drawTraining(run) {
    const c = run.curves;
    const result = run.result || {};
    const layerNames = [];
    for (const row of c.layer_grad_norms) {
      for (const k of Object.keys(row || {})) if (!layerNames.includes(k)) layerNames.push(k);
    }
    const layers = layerNames.map((name, i) => ({
      name: `layer ${name}`, x: c.step, y: c.layer_grad_norms.map((row) => (row ? row[name] : null)),
      width: 0.9, opacity: 0.75, color: Plot.COLORS[(i + 1) % Plot.COLORS.length],
    }));
    Plot.lines(byId("plot-grad"), {
      series: [...layers, { name: "global", x: c.step, y: c.grad_norm, color: "#111", width: 1.6 }],
      xlabel: "step", ylabel: "gradient norm", logY: positive(c.grad_norm),
      empty: "no gradient norms recorded",
    });

    const clipped = c.step.filter((_, i) => c.clipped[i]);
    const clip = run.config.grad_clip;
    Plot.lines(byId("plot-lr"), {
      series: [{ name: "learning rate", x: c.step, y: c.lr }],
      events: {
        x: clipped,
        label: clip ? `clipped (${clipped.length} of ${c.step.length} logged steps)` : "no clipping",
      },
      xlabel: "step", ylabel: "learning rate", empty: "no learning rate recorded",
    });

    Plot.lines(byId("plot-acc"), {
      series: [{ name: "test accuracy", x: c.step, y: c.eval_accuracy, markers: true }],
      xlabel: "step", ylabel: "accuracy", empty: "no test evaluations recorded",
    });
  }

  const LANDSCAPE = ["plot-eig", "plot-density", "plot-slices", "plot-surface", "plot-interp"];

  function drawProbe(probe) {
    const data = probe.data || {};
    const density = data.density || {};
    const values = density.values || [];
    const top = Math.max(...values.filter((v) => Number.isFinite(v)), 0);
    Plot.lines(byId("plot-density"), {
      series: [{ name: `step ${probe.step}`, x: density.grid || [], y: values }],
      vlines: [{ x: 0 }],
      // Six decades below the peak: the Gaussian broadening's far tails say nothing.
      yDomain: top > 0 ? [top * 1e-6, top * 2] : undefined,
      xlabel: "Hessian eigenvalue", ylabel: "density", logY: top > 0,
      empty: "no spectral density in this probe",
    });
    const slices = data.slices || {};
    const oneD = [
      ["random_1d", "random direction (filter-normalized)"],
      ["top_eigvec_1d", "top eigenvector"],
      ["bottom_eigvec_1d", "bottom eigenvector"],
    ].filter(([k]) => slices[k]).map(([k, name]) => ({
      name, x: slices[k].alphas, y: slices[k].values, markers: true, markerSize: 1.8,
    }));
    Plot.lines(byId("plot-slices"), {
      series: oneD, vlines: [{ x: 0 }], xlabel: "α (step along the direction)", ylabel: "loss",
      empty: "no 1-D slices in this probe",
    });
    const s2 = slices.random_2d;
    if (s2) {
      Plot.contour(byId("plot-surface"), {
        xs: s2.alphas, ys: s2.betas || s2.alphas, z: s2.values,
        marker: { x: 0, y: 0, label: `the run at step ${probe.step}` },
        xlabel: "α (random direction 1)", ylabel: "β (random direction 2)", zlabel: "loss",
      });
    } else {
      Plot.empty(byId("plot-surface"), "no 2-D surface in this probe");
    }
    const interp = slices.interpolation;
    if (interp) {
      const ts = interp.ts || interp.alphas;
      Plot.lines(byId("plot-interp"), {
        series: [{ name: "loss", x: ts, y: interp.values, markers: true }],
        xlabel: "t  (0 = initialization, 1 = parameters at this step)", ylabel: "loss",
        logY: positive(interp.values),
      });
    } else {
      Plot.empty(byId("plot-interp"), "no interpolation in this probe");
    }
  }

  function drawLandscape(run, probes) {
    const select = byId("probe-select");
    if (!probes.length) {
      select.hidden = true;
      const why = run.status === "diverged" ? "not probed: the run diverged before the end"
        : ["queued", "running"].includes(run.status) ? "not probed yet: the run has not finished"
          : "not probed: add probes: {at: [end]} to the spec to see the landscape";
      for (const id of LANDSCAPE) Plot.empty(byId(id), why);
      return;
    }
    const steps = probes.map((p) => p.step);
    Plot.lines(byId("plot-eig"), {
      series: [
        { name: "λmax", x: steps, y: probes.map((p) => p.lambda_max), markers: true },
        { name: "λmin", x: steps, y: probes.map((p) => p.lambda_min), markers: true },
      ],
      hlines: [{ y: 0 }],
      xlabel: "step", ylabel: "Hessian eigenvalue",
      xDomain: steps.length === 1 ? [steps[0] - 1, steps[0] + 1] : undefined,
    });
    select.textContent = "";
    probes.forEach((p, i) => {
      const option = document.createElement("option");
      option.value = String(i);
      option.textContent = `probe at step ${p.step} (${p.trigger})`;
      select.appendChild(option);
    });
    select.value = String(probes.length - 1);
    select.onchange = () => drawProbe(probes[Number(select.value)]);
    drawProbe(probes[probes.length - 1]);
  }

  function run(id) {
    return done((async () => {
      const [detail, probes, figures] = await Promise.all([
        getJSON(`/api/v1/runs/${id}`), getJSON(`/api/v1/runs/${id}/probes`),
        getJSON(`/api/v1/runs/${id}/figures`),
      ]);
      await embed(byId("plot-loss"), figures.figures.loss);
      drawTraining(detail);
      drawLandscape(detail, probes.data);
    })());
  }

  // ---- a sweep: live progress ------------------------------------------------------------

  const FINAL = ["finished", "cancelled"];

  function updateRuns(runs) {
    for (const r of runs) {
      const row = document.querySelector(`tr[data-run-id="${r.id}"]`);
      if (!row) continue;
      const cell = (field) => row.querySelector(`[data-field="${field}"]`);
      cell("status").textContent = r.status;
      cell("status").className = `status s-${r.status}`;
      const finished = ["succeeded", "diverged"].includes(r.status);
      cell("steps_to_target").textContent = r.steps_to_target ?? (finished ? "censored" : "—");
      cell("final_loss").textContent = r.final_loss == null ? "—" : Plot.fmt(r.final_loss);
      cell("test_accuracy").textContent = r.test_accuracy == null ? "—" : r.test_accuracy.toFixed(3);
      cell("verdict").textContent = "";
      if (r.diagnosis) {
        const span = document.createElement("span");
        span.className = `verdict v-${r.diagnosis.verdict}`;
        span.textContent = r.diagnosis.verdict;
        cell("verdict").appendChild(span);
      }
    }
  }

  async function allRuns(id) {
    const runs = [];
    for (;;) { // the API pages by 1,000 at most
      const page = await getJSON(`/api/v1/sweeps/${id}/runs?offset=${runs.length}&limit=1000`);
      runs.push(...page.data);
      if (!page.data.length || runs.length >= page.count) return runs;
    }
  }

  function sweep(id, status, periodMs) {
    const period = periodMs || 2000;
    let last = "";
    async function tick() {
      const s = await getJSON(`/api/v1/sweeps/${id}`);
      const key = JSON.stringify(s.counts);
      if (key !== last) { // the table first, so the status never runs ahead of the rows
        updateRuns(await allRuns(id));
        last = key;
      }
      byId("progress-bar").style.width = `${(100 * s.progress).toFixed(1)}%`;
      const counts = Object.entries(s.counts).sort().map(([k, n]) => `${k} ${n}`).join(", ");
      byId("progress-text").textContent = `${Math.round(100 * s.progress)}% · ${counts}`;
      byId("sweep-status").textContent = s.status;
      byId("sweep-status").className = `status s-${s.status}`;
      document.body.dataset.sweepStatus = s.status;
      if (!FINAL.includes(s.status)) setTimeout(() => tick().catch(retry), period);
    }
    function retry() { setTimeout(() => tick().catch(retry), 5 * period); }
    document.body.dataset.sweepStatus = status;
    document.body.dataset.plots = "ready";
    if (!FINAL.includes(status)) setTimeout(() => tick().catch(retry), period);
  }

  // ---- several runs overlaid -------------------------------------------------------------

  function compare(ids) {
    document.querySelectorAll(".swatch").forEach((s) => {
      s.style.background = Plot.COLORS[Number(s.dataset.index) % Plot.COLORS.length];
    });
    return done((async () => {
      const runs = await Promise.all(ids.map((id) => getJSON(`/api/v1/runs/${id}`)));
      const overlay = (key, markers) => runs.map((r, i) => ({
        name: `run ${r.id}`, x: r.curves.step, y: r.curves[key], markers,
        color: Plot.COLORS[i % Plot.COLORS.length], width: 1.3,
      }));
      const all = (key) => runs.flatMap((r) => r.curves[key]);
      Plot.lines(byId("plot-loss"), {
        series: overlay("loss", false), xlabel: "step", ylabel: "training loss",
        logY: positive(all("loss")),
        hlines: runs.length ? [{ y: runs[0].config.target.loss, label: "target" }] : [],
      });
      Plot.lines(byId("plot-eval"), {
        series: overlay("eval_loss", true), xlabel: "step", ylabel: "test loss",
        logY: positive(all("eval_loss")), empty: "no test evaluations recorded",
      });
      Plot.lines(byId("plot-grad"), {
        series: overlay("grad_norm", false), xlabel: "step", ylabel: "gradient norm",
        logY: positive(all("grad_norm")),
      });
    })());
  }

  // ---- an Optuna study -------------------------------------------------------------------

  function study(id) {
    return done((async () => {
      const s = await getJSON(`/api/v1/studies/${id}`);
      byId("study-objective").textContent = `${(s.objective || []).join(", ")} (minimized)`;
      byId("study-state").textContent = s.state;
      const complete = s.trials.filter((t) => t.state === "complete" && t.values);
      const numbers = complete.map((t) => t.number);
      const first = complete.map((t) => t.values[0]);
      let best = Infinity;
      const bestSoFar = first.map((v) => (best = Math.min(best, v)));
      Plot.lines(byId("plot-history"), {
        series: [
          { name: s.objective ? s.objective[0] : "value", x: numbers, y: first, line: false, markers: true },
          { name: "best so far", x: numbers, y: bestSoFar, color: "#d62728" },
        ],
        xlabel: "trial", ylabel: s.objective ? s.objective[0] : "value",
        empty: "no complete trials yet",
      });
      if (s.pareto_front && complete.length && complete[0].values.length >= 2) {
        byId("pareto-figure").hidden = false;
        const front = s.pareto_front.slice().sort((a, b) => a.values[0] - b.values[0]);
        Plot.lines(byId("plot-pareto"), {
          series: [
            { name: "trials", x: complete.map((t) => t.values[0]), y: complete.map((t) => t.values[1]), line: false, markers: true, color: "#999" },
            { name: "Pareto front", x: front.map((t) => t.values[0]), y: front.map((t) => t.values[1]), markers: true, color: "#d62728" },
          ],
          xlabel: s.objective[0], ylabel: s.objective[1],
        });
      }
      const imp = s.importances || {};
      if (imp.unavailable || !Object.keys(imp).length) {
        Plot.empty(byId("plot-importance"), imp.unavailable || "importances need at least 4 complete trials");
      } else {
        Plot.bars(byId("plot-importance"), {
          items: Object.entries(imp).map(([label, value]) => ({ label, value })),
        });
      }
      const body = document.querySelector("#trials tbody");
      body.textContent = "";
      for (const t of s.trials) {
        const tr = document.createElement("tr");
        const values = t.values ? t.values.map((v) => Plot.fmt(v)).join(", ") : "—";
        const params = Object.entries(t.params || {}).map(([k, v]) => `${k}=${typeof v === "number" ? Plot.fmt(v) : v}`).join(" ");
        for (const text of [t.number, t.state, values, params]) {
          const td = document.createElement("td");
          td.textContent = text;
          tr.appendChild(td);
        }
        const td = document.createElement("td");
        if (t.run_id != null) {
          const a = document.createElement("a");
          a.href = `/runs/${t.run_id}`;
          a.textContent = t.run_id;
          td.appendChild(a);
        }
        tr.appendChild(td);
        body.appendChild(tr);
      }
    })());
  }

  return { run, sweep, compare, study };
})();
