/* run.js: a run's page: its training curves and landscape probes (Pages.run(id)). */
"use strict";

(() => {
  const { getJSON, byId, embed, done, positive } = Pages;

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

  Pages.run = run;
})();
