/* run.js: a run's page (Pages.run(id)): each figure served by /api/v1/runs/{id}/figures is
 * drawn into its element #plot-<name>; the probe selector redraws the probe figures for the
 * chosen probe (?probe=<index>). Nothing is drawn by hand: the specs are service/figures/run.py. */
"use strict";

(() => {
  const { getJSON, byId, embed, done } = Pages;
  const PROBE_FIGURES = ["density", "slices_1d", "surface_2d", "interpolation"];

  function draw(figures, names) {
    return Promise.all(names.filter((name) => byId(`plot-${name}`))
      .map((name) => embed(byId(`plot-${name}`), figures[name])));
  }

  function chooseProbe(id, probes) {
    const select = byId("probe-select");
    select.hidden = !probes.length;
    select.textContent = "";
    probes.forEach((p, i) => {
      const option = document.createElement("option");
      option.value = String(i);
      option.textContent = `probe at step ${p.step} (${p.trigger})`;
      select.appendChild(option);
    });
    select.value = String(probes.length - 1);
    select.onchange = () => {
      document.body.dataset.plots = "drawing";
      done(getJSON(`/api/v1/runs/${id}/figures?probe=${select.value}`)
        .then((served) => draw(served.figures, PROBE_FIGURES)));
    };
  }

  function run(id) {
    return done((async () => {
      const [probes, served] = await Promise.all([
        getJSON(`/api/v1/runs/${id}/probes`), getJSON(`/api/v1/runs/${id}/figures`),
      ]);
      chooseProbe(id, probes.data);
      await draw(served.figures, Object.keys(served.figures));
    })());
  }

  Pages.run = run;
})();
